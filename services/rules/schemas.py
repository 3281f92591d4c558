"""Request / response models of the rules service (``POST /v1/rules/score``), as fixed in docs/contracts.md.

Validation errors name the field at fault (FastAPI turns them into a 422 with ``loc`` =
``["body", "items", i, field]``). A completion that cannot be parsed is *not* a validation error.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.rules.bfcl import FuncDoc, normalize_tools

Mode = Literal["auto", "simple", "multiple", "parallel", "parallel_multiple"]
Format = Literal["auto", "openai", "hermes", "toolrl", "python"]

CHANNELS: tuple[str, ...] = (
    "rules/format",
    "rules/function_name",
    "rules/required_args",
    "rules/no_unexpected_args",
    "rules/arg_types",
    "rules/arg_values",
    "rules/call_count",
    "rules/toolrl_format",
    "rules/toolrl_correctness",
)


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


class AssistantMessage(BaseModel):
    """An OpenAI assistant message; ``tool_calls[i].function.arguments`` is a JSON string (or an object).
    The shape of each tool call is checked by the parser, so a malformed call is scored, not rejected."""

    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"]
    content: str | None = None
    tool_calls: list[Any] | None = None


class ToolList(list):
    """The validated ``tools`` list, carrying its normalized docs (``docs``) so they are read only once."""

    docs: dict[str, FuncDoc] | None = None


class RulesItem(BaseModel):
    """One completion to check. ``ground_truth``: BFCL possible answers ``[{fname: {param: [allowed, ...]}}]``
    (``""`` in a list = the parameter may be omitted); ``None`` = not given (value checks are NaN), ``[]`` = no
    call expected. ``tools``: BFCL or OpenAI function docs; every ground-truth function must be among them."""

    model_config = ConfigDict(extra="forbid")

    id: str
    completion: str | AssistantMessage
    tools: list[dict[str, Any]] = Field(default_factory=list)
    ground_truth: list[dict[str, dict[str, list[Any]]]] | None = None
    mode: Mode = "auto"
    format: Format = "auto"
    options: RulesOptions = Field(default_factory=RulesOptions)

    @field_validator("tools")
    @classmethod
    def _tools_readable(cls, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = ToolList(tools)
        out.docs = normalize_tools(tools)  # raises ToolSchemaError (a ValueError) naming tools[i]...
        return out

    @field_validator("ground_truth")
    @classmethod
    def _gt_names_known(cls, gt: list[dict[str, dict[str, list[Any]]]] | None, info: ValidationInfo):
        if gt is None:
            return gt
        tools = info.data.get("tools")
        names = {(t.get("function") if isinstance(t.get("function"), dict) else t).get("name") for t in tools or []}
        for i, call in enumerate(gt):
            if len(call) != 1:
                raise ValueError(f"ground_truth[{i}]: expected exactly one {{function_name: {{param: [allowed]}}}}")
            (fname,) = call
            if tools is not None and fname not in names:
                raise ValueError(f"ground_truth[{i}]: function {fname!r} is not among the tools {sorted(names)}")
        return gt

    @field_validator("mode")
    @classmethod
    def _mode_matches_gt(cls, mode: str, info: ValidationInfo) -> str:
        gt = info.data.get("ground_truth")
        if mode in ("simple", "multiple") and gt and len(gt) != 1:
            raise ValueError(f"mode {mode!r} needs exactly one ground-truth call, got {len(gt)}")
        return mode


class ToolRLValues(BaseModel):
    """ToolRL rewards: ``format`` in {0, 1}, ``correctness`` in [-3, 3]; NaN (null on the wire) = not computed."""

    format: float
    correctness: float

    @field_validator("format", "correctness", mode="before")
    @classmethod
    def _null_is_nan(cls, v: Any) -> Any:
        return math.nan if v is None else v


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
    channels: dict[str, float]
    reasons: dict[str, str]
    toolrl: ToolRLValues

    @field_validator("channels", mode="before")
    @classmethod
    def _null_is_nan(cls, v: Any) -> Any:
        return {k: (math.nan if x is None else x) for k, x in v.items()} if isinstance(v, dict) else v



def construct(cls: type[BaseModel], **fields: Any) -> Any:
    """Build ``cls`` from already-correct ``fields`` (every field given) without validation; several times
    faster than ``model_construct``, which matters at tens of thousands of items per second."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", fields)
    object.__setattr__(obj, "__pydantic_fields_set__", set(fields))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


class ScoreRequest(BaseModel):
    """``POST /v1/rules/score`` body."""

    model_config = ConfigDict(extra="forbid")

    items: list[RulesItem]


class ScoreResponse(BaseModel):
    """``POST /v1/rules/score`` answer: one result per item, in request order."""

    model_config = ConfigDict(ser_json_bytes="base64")  # governs the nested results when serialized from here

    items: list[RulesResult]
