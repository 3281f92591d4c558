"""Wire formats of the gateway (docs/contracts.md, "Gateway").

Requests are validated here; a malformed item gets 422 with ``loc`` naming the field (e.g.
``["body", "items", 3, "rubrics", 0, "points"]``). Responses carry ``null`` for NaN, with ``reasons[name]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

Mode = Literal["auto", "simple", "multiple", "parallel", "parallel_multiple"]
Format = Literal["auto", "openai", "hermes", "toolrl", "python"]
Status = Literal["queued", "running", "done", "partial", "failed"]


class Message(BaseModel):
    """One chat message (``content`` may be null for an assistant message that only calls tools)."""

    model_config = ConfigDict(extra="allow")
    role: str = Field(min_length=1)
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Rubric(BaseModel):
    """One HealthBench rubric criterion; ``points`` may be negative (an undesirable behaviour)."""

    criterion: str = Field(min_length=1)
    points: float
    tags: list[str] = Field(default_factory=list)


class RulesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nested_int_to_float: bool = False
    fill_defaults: bool = False
    unicode_nfc: bool = False


class ScoreItem(BaseModel):
    """One completion to score: ``rubrics`` go to the judge, ``tools`` (+ ``ground_truth``) to the rules service.

    Without ``ground_truth`` the rules service scores the schema channels only (the others are NaN with reason
    ``no_ground_truth``); ``ground_truth: []`` means that no call is expected.
    """

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=256)
    group_id: str | None = Field(None, max_length=256, description="The prompt this completion belongs to.")
    prompt: list[Message] | str = Field(description="The conversation (a bare string is one user message).")
    completion: str | Message
    rubrics: list[Rubric] | None = None
    tools: list[dict[str, Any]] | None = None
    ground_truth: list[dict[str, Any]] | None = None
    mode: Mode = "auto"
    format: Format = "auto"
    options: RulesOptions | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_nonempty(cls, v):
        if not v:
            raise ValueError("prompt is empty")
        return v

    @model_validator(mode="after")
    def _has_a_source(self) -> "ScoreItem":
        if self.ground_truth is not None and self.tools is None:
            raise PydanticCustomError("missing_field", "tools is required when ground_truth is given")
        if not self.rubrics and self.tools is None:
            raise PydanticCustomError("no_reward_source",
                                      "item needs rubrics (judge) or tools [+ ground_truth] (rules)")
        return self


class ScoreRequest(BaseModel):
    items: list[ScoreItem] = Field(min_length=1)

    @field_validator("items")
    @classmethod
    def _unique_ids(cls, items: list[ScoreItem]) -> list[ScoreItem]:
        seen: dict[str, int] = {}
        for i, it in enumerate(items):
            if it.id in seen:
                raise PydanticCustomError("duplicate_id", "items[{i}].id {id!r} repeats items[{j}].id",
                                          {"i": i, "id": it.id, "j": seen[it.id]})
            seen[it.id] = i
        return items


class SourceState(BaseModel):
    state: Literal["pending", "ok", "error"]
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


class JobView(BaseModel):
    job_id: str
    status: Status
    created_at: float
    deadline: float
    n_items: int
    n_expected: int = Field(description="Number of (item, source) results the job needs.")
    n_results: int
    items: list[ItemResult]


class DenseRewards(BaseModel):
    """Rewards as an ``[N, K]`` matrix in item order; ``null`` = NaN, with ``reasons[i][k]``."""

    job_id: str
    status: Status
    item_ids: list[str]
    channel_names: list[str]
    rewards: list[list[float | None]]
    reasons: list[list[str | None]]
