"""Gateway wire format: ``POST /v1/score``, ``GET /v1/jobs/{id}``, ``GET /v1/jobs/{id}/rewards``
(docs/contracts.md, "Gateway"; job semantics in docs/gateway.md).

:class:`ScoreItem` carries the strictest rule of every service that will see the item: the judge's (for an
item with ``rubrics``: every prompt message with text, the last from the user — :func:`judge_prompt`) and the
rules service's (for an item with ``tools``: readable tool docs, ground-truth functions among them, ``mode``
consistent with the ground truth — :class:`contracts.rules.RulesChecks`), plus finite numbers and valid Unicode
everywhere.
So an item a service would reject is a 422 at submission whose ``loc`` names the field
(``["body", "items", 3, "rubrics", 0, "points"]``), never NaN rewards with a ``*_http_422`` reason later.
Responses carry ``null`` for NaN, with ``reasons[name]``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from contracts.messages import Message, Rubric, judge_prompt
from contracts.results import SourceStateName, Status
from contracts.rules import Completion, Format, GroundTruth, Mode, RulesChecks, RulesOptions, Tools
from contracts.values import Identifier, NonEmptyText, Text

def _prompt_kind(v: Any) -> str | None:
    return "text" if isinstance(v, str) else ("messages" if isinstance(v, list) else None)


#: A prompt: a non-empty string (one user message) or a non-empty list of messages.
Prompt = Annotated[Annotated[NonEmptyText, Tag("text")]
                   | Annotated[list[Message], Field(min_length=1), Tag("messages")],
                   Discriminator(_prompt_kind, custom_error_type="prompt_type",
                                 custom_error_message="expected a string or a list of messages")]


class ScoreItem(RulesChecks):
    """One completion to score: ``rubrics`` go to the judge, ``tools`` (+ ``ground_truth``) to the rules service.

    Without ``ground_truth`` the rules service scores the schema channels only (the others are null with reason
    ``no_ground_truth``); ``ground_truth: []`` means that no call is expected.
    """

    model_config = ConfigDict(extra="forbid")
    id: Annotated[Identifier, Field(max_length=256)]
    group_id: Annotated[Text | None, Field(max_length=256, description="The prompt this completion belongs to.")] = None
    rubrics: list[Rubric] | None = Field(None, description="HealthBench criteria, graded by the judge.")
    prompt: Prompt = Field(description="The conversation (a bare string is one user message).")
    completion: Completion
    tools: Tools | None = Field(None, description="BFCL or OpenAI function docs, checked by the rules service.")
    ground_truth: GroundTruth | None = None
    mode: Mode = "auto"
    format: Format = "auto"
    options: RulesOptions | None = None

    @field_validator("prompt")
    @classmethod
    def _judge_can_grade(cls, prompt, info: ValidationInfo):
        if info.data.get("rubrics"):
            judge_prompt([Message(role="user", content=prompt)] if isinstance(prompt, str) else prompt)
        return prompt

    @model_validator(mode="after")
    def _has_a_source(self) -> "ScoreItem":
        if self.ground_truth is not None and self.tools is None:
            raise PydanticCustomError("missing_field", "tools is required when ground_truth is given")
        if not self.rubrics and self.tools is None:
            raise PydanticCustomError("no_reward_source",
                                      "item needs rubrics (judge) or tools [+ ground_truth] (rules)")
        return self


class ScoreRequest(BaseModel):
    """Body of ``POST /v1/score``: the items of one job (ids unique within it)."""

    model_config = ConfigDict(extra="forbid")
    items: list[ScoreItem] = Field(min_length=1)

    @field_validator("items")
    @classmethod
    def _unique_ids(cls, items: list[ScoreItem]) -> list[ScoreItem]:
        seen: dict[str, int] = {}
        for i, it in enumerate(items):
            if it.id in seen:
                raise PydanticCustomError("duplicate_id", "items[{i}].id {id} repeats items[{j}].id",
                                          {"i": i, "id": repr(it.id), "j": seen[it.id]})
            seen[it.id] = i
        return items


class SourceState(BaseModel):
    """What happened to one source of one item (contracts.results.source_state)."""

    state: SourceStateName
    attempts: int = 0
    error: str | None = None


class BfclVerdict(BaseModel):
    valid: bool | None = None
    error_type: str | None = None
    error: str | None = None
    format: str | None = None
    calls: list[dict[str, Any]] | None = None


class ItemResult(BaseModel):
    index: int
    id: str
    group_id: str | None = None
    channels: dict[str, float | None] = Field(description="This item's channels; null = NaN (see reasons).")
    reasons: dict[str, str] = Field(default_factory=dict)
    healthbench_score: float | None = Field(None, description="Judge's per-example HealthBench score.")
    bfcl: BfclVerdict | None = Field(None, description="Rules service verdict (BFCL checker).")
    sources: dict[str, SourceState]
    rubric_results: list[dict[str, Any]] | None = None


class ChannelCounts(BaseModel):
    """Channels of the whole job by outcome (contracts.results)."""

    scored: int
    unscored: int
    not_applicable: int
    pending: int


class JobView(BaseModel):
    job_id: str
    status: Status
    created_at: float
    deadline: float
    n_items: int
    n_expected: int = Field(description="Number of (item, source) results the job needs.")
    n_results: int
    counts: ChannelCounts
    reasons: dict[str, int] = Field(description="Null channels by reason kind (the text before ':').")
    items: list[ItemResult]


class DenseRewards(BaseModel):
    """Rewards as an ``[N, K]`` matrix in item order; ``null`` = NaN, with ``reasons[i][k]``."""

    job_id: str
    status: Status
    item_ids: list[str]
    channel_names: list[str]
    rewards: list[list[float | None]]
    reasons: list[list[str | None]]
