"""Wire format of `POST /v1/judge` (see docs/contracts.md, "Judge service")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Message(BaseModel):
    """One chat turn of the conversation being graded."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str


class Rubric(BaseModel):
    """One HealthBench rubric item; ``points`` may be negative (an undesirable behaviour)."""

    model_config = ConfigDict(extra="ignore")
    criterion: str = Field(min_length=1)
    points: float = Field(allow_inf_nan=False)
    tags: list[str] = Field(default_factory=list)


class JudgeItem(BaseModel):
    """One example: conversation (last turn from the user), the completion to grade and its rubric."""

    model_config = ConfigDict(extra="ignore")
    id: str
    prompt: list[Message] = Field(min_length=1)
    completion: str
    rubrics: list[Rubric] = Field(min_length=1)

    @field_validator("prompt")
    @classmethod
    def _last_turn_is_user(cls, prompt: list[Message]) -> list[Message]:
        if prompt[-1].role != "user":
            raise ValueError(f"the last prompt message must have role 'user', got {prompt[-1].role!r}")
        return prompt


class JudgeRequest(BaseModel):
    """Body of `POST /v1/judge`."""

    items: list[JudgeItem] = Field(min_length=1)


class RubricResult(BaseModel):
    """The verdict on one rubric item. ``criteria_met`` is null when no valid verdict was obtained."""

    criterion: str
    points: float
    tags: list[str]
    criteria_met: bool | None
    explanation: str
    error: str | None = None
    raw: str | None = None
    template_version: str
    model: str
    cached: bool = False


class JudgeResult(BaseModel):
    """Result for one example; ``channels[f"rubric/{j:02d}"] = points_j * met_j`` (null if the verdict is null)."""

    id: str
    rubric_results: list[RubricResult]
    score: float | None
    channels: dict[str, float | None]
    reasons: dict[str, str]
    n_errors: int


class JudgeResponse(BaseModel):
    """Body of the answer to `POST /v1/judge`, items in request order."""

    items: list[JudgeResult]
