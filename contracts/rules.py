"""Rules service wire format: ``POST /v1/rules/score`` (docs/contracts.md, "Rules service").

Validation errors name the field at fault (a 422 with ``loc`` = ``["body", "items", i, field]``); a completion
that cannot be parsed is *not* a validation error, it is scored. The gateway's item
(:class:`contracts.gateway.ScoreItem`) inherits the same field rules (:class:`RulesChecks`), so whatever this
service would reject is rejected at submission.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator

from contracts.messages import AssistantMessage
from contracts.tools import FuncDoc, normalize_tools
from contracts.values import Text, json_field

Mode = Literal["auto", "simple", "multiple", "parallel", "parallel_multiple"]
Format = Literal["auto", "openai", "hermes", "toolrl", "python"]

#: Tool docs: BFCL or OpenAI function docs (read by :func:`contracts.tools.normalize_tools`).
Tools = json_field(list[dict[str, Any]], "tools")
#: BFCL possible answers ``[{fname: {param: [allowed, ...]}}]``; ``""`` in a list = the parameter may be omitted.
GroundTruth = json_field(list[dict[str, dict[str, list[Any]]]], "ground_truth")


def _completion_kind(v: Any) -> str | None:
    if isinstance(v, str):
        return "text"
    return "message" if isinstance(v, (dict, AssistantMessage)) else None


#: A completion: text (Python calls, Hermes ``<tool_call>``, ToolRL, ...) or an OpenAI assistant message.
Completion = Annotated[Annotated[Text, Tag("text")] | Annotated[AssistantMessage, Tag("message")],
                       Discriminator(_completion_kind, custom_error_type="completion_type",
                                     custom_error_message="expected a string or an assistant message object")]


class RulesOptions(BaseModel):
    """Lenient checking flags (all off = BFCL) and the ToolRL layout.

    ``toolrl_response``: whether the ToolRL answer is expected to carry a ``<response>`` block (it selects the
    ToolRL format regex); ``None`` = only when the ground truth has no call.
    """

    model_config = ConfigDict(extra="forbid")

    nested_int_to_float: bool = Field(False, description="Accept ints inside float arrays (off in BFCL).")
    fill_defaults: bool = Field(False, description="Fill omitted possible-answer params from the schema default.")
    unicode_nfc: bool = Field(False, description="NFC-normalize strings of both sides before comparing.")
    toolrl_response: bool | None = Field(None, description="ToolRL answer has <response>; null = only when no call.")


class ToolList(list):
    """The validated ``tools`` list, carrying its normalized docs (``docs``) so they are read only once."""

    docs: dict[str, FuncDoc] | None = None


def read_tools(tools: list[dict[str, Any]]) -> ToolList:
    """``tools`` with their :class:`FuncDoc` attached. Raises ToolSchemaError (a ValueError) naming ``tools[i]...``."""
    out = ToolList(tools)
    out.docs = normalize_tools(tools)
    return out


def check_ground_truth(gt: list[dict] | None, tools: list[dict] | None) -> list[dict] | None:
    """``gt`` unchanged when each entry names exactly one function and, when ``tools`` are known, one of them.

    Raises ValueError naming ``ground_truth[i]``.
    """
    if gt is None:
        return gt
    docs = getattr(tools, "docs", None)
    names = set(docs) if docs is not None else {
        (t.get("function") if isinstance(t.get("function"), dict) else t).get("name") for t in tools or []}
    for i, call in enumerate(gt):
        if len(call) != 1:
            raise ValueError(f"ground_truth[{i}]: expected exactly one {{function_name: {{param: [allowed]}}}}")
        (fname,) = call
        if tools is not None and fname not in names:
            raise ValueError(f"ground_truth[{i}]: function {fname!r} is not among the tools {sorted(names)}")
    return gt


def check_mode(mode: str, gt: list | None) -> str:
    """``mode`` unchanged unless it is ``simple`` / ``multiple`` with other than one ground-truth call (ValueError)."""
    if mode in ("simple", "multiple") and gt and len(gt) != 1:
        raise ValueError(f"mode {mode!r} needs exactly one ground-truth call, got {len(gt)}")
    return mode


class RulesChecks(BaseModel):
    """The rules service's field rules, for every model with ``tools`` / ``ground_truth`` / ``mode`` fields (this
    service's :class:`RulesItem` and the gateway's item): readable tool docs, ground-truth functions among them,
    ``mode`` consistent with the ground truth."""

    @field_validator("tools", check_fields=False)
    @classmethod
    def _tools_readable(cls, tools: list[dict[str, Any]] | None) -> ToolList | None:
        return None if tools is None else read_tools(tools)

    @field_validator("ground_truth", check_fields=False)
    @classmethod
    def _gt_names_known(cls, gt, info: ValidationInfo):
        return check_ground_truth(gt, info.data.get("tools"))

    @field_validator("mode", check_fields=False)
    @classmethod
    def _mode_matches_gt(cls, mode: str, info: ValidationInfo) -> str:
        return check_mode(mode, info.data.get("ground_truth"))


class RulesItem(RulesChecks):
    """One completion to check. ``ground_truth``: BFCL possible answers; ``None`` = not given (value checks are
    NaN), ``[]`` = no call expected. ``tools``: BFCL or OpenAI function docs; every ground-truth function must
    be among them."""

    model_config = ConfigDict(extra="forbid")

    id: Text
    completion: Completion
    tools: Tools = Field(default_factory=list)
    ground_truth: GroundTruth | None = None
    mode: Mode = "auto"
    format: Format = "auto"
    options: RulesOptions = Field(default_factory=RulesOptions)


class RulesRequest(BaseModel):
    """``POST /v1/rules/score`` body."""

    model_config = ConfigDict(extra="forbid")

    items: list[RulesItem]


def _null_is_nan(v: Any) -> Any:
    return math.nan if v is None else v


class ToolRLValues(BaseModel):
    """ToolRL rewards: ``format`` in {0, 1}, ``correctness`` in [-3, 3]; NaN in process, ``null`` on the wire."""

    format: Annotated[float | None, Field(description="null = not computed")]
    correctness: Annotated[float | None, Field(description="null = not computed")]

    @field_validator("format", "correctness", mode="before")
    @classmethod
    def _null_to_nan(cls, v: Any) -> Any:
        return _null_is_nan(v)


class RulesResult(BaseModel):
    """Result for one item. ``valid``/``error_type``/``error``: the BFCL verdict. ``channels``: reward channels
    by name (NaN in process, ``null`` on the wire, with ``reasons[name]``); ``reasons`` also explains every
    channel below its maximum. ``calls``: the normalized calls ``[{"name", "arguments"}]``; a Python ``bytes``
    literal in them goes on the wire as base64 (``b'\\xff'`` is not UTF-8, and one item must not fail the answer)."""

    model_config = ConfigDict(ser_json_bytes="base64")

    id: str
    valid: bool
    error_type: str | None
    error: str | None
    format: str | None
    calls: list[dict[str, Any]]
    channels: dict[str, float | None] = Field(description="null = NaN, with reasons[name]")
    reasons: dict[str, str]
    toolrl: ToolRLValues

    @field_validator("channels", mode="before")
    @classmethod
    def _null_to_nan(cls, v: Any) -> Any:
        return {k: _null_is_nan(x) for k, x in v.items()} if isinstance(v, dict) else v


class RulesResponse(BaseModel):
    """``POST /v1/rules/score`` answer: one result per item, in request order."""

    model_config = ConfigDict(ser_json_bytes="base64")  # governs the nested results when serialized from here

    items: list[RulesResult]


def construct(cls: type[BaseModel], **fields: Any) -> Any:
    """Build ``cls`` from already-correct ``fields`` (every field given) without validation; several times
    faster than ``model_construct``, which matters at tens of thousands of items per second."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", fields)
    object.__setattr__(obj, "__pydantic_fields_set__", set(fields))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj
