"""Judge service wire format: ``POST /v1/judge`` (docs/contracts.md, "Judge service")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.messages import Message, Rubric, judge_prompt
from contracts.values import Text


class JudgeItem(BaseModel):
    """One example: the conversation (every message with text, the last from the user, see
    :func:`contracts.messages.judge_prompt`), the completion to grade and its rubric."""

    model_config = ConfigDict(extra="ignore")
    id: Text
    prompt: list[Message] = Field(min_length=1)
    completion: Text
    rubrics: list[Rubric] = Field(min_length=1)

    @field_validator("prompt")
    @classmethod
    def _gradable(cls, prompt: list[Message]) -> list[Message]:
        return judge_prompt(prompt)


class JudgeRequest(BaseModel):
    """Body of ``POST /v1/judge``."""

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
    """Body of the answer to ``POST /v1/judge``, items in request order."""

    items: list[JudgeResult]
