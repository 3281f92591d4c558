"""Chat messages and rubric criteria, as every service reads them, and the judge's rule for a prompt."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.values import FiniteFloat, Json, NonEmptyText, Text

#: Roles a chat message may have (OpenAI's chat format).
Role = Literal["system", "developer", "user", "assistant", "tool"]


class Message(BaseModel):
    """One chat message. ``content`` may be null only for an assistant message that calls tools (and never in
    the prompt of an item the judge grades, see :func:`judge_prompt`); other fields (``name``,
    ``tool_call_id``, ...) are kept as they are, checked like any JSON value."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Json] = Field(init=False)

    role: Role
    content: Text | None = None
    tool_calls: Annotated[list[dict[str, Json]] | None, Field(description="OpenAI tool calls (assistant).")] = None


class AssistantMessage(BaseModel):
    """A completion as an OpenAI assistant message; ``tool_calls[i].function.arguments`` is a JSON string (or an
    object). The shape of each tool call is checked by the rules parser, so a malformed call is scored, not
    rejected."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Json] = Field(init=False)

    role: Literal["assistant"]
    content: Text | None = None
    tool_calls: list[Json] | None = None


class Rubric(BaseModel):
    """One HealthBench rubric criterion; ``points`` may be negative (an undesirable behaviour), never NaN/inf."""

    model_config = ConfigDict(extra="ignore")
    criterion: NonEmptyText
    points: FiniteFloat
    tags: list[Text] = Field(default_factory=list)


def judge_prompt(prompt: list[Message]) -> list[Message]:
    """The judge's rule for the conversation it grades: every message has text ``content`` (``""`` when empty)
    and the last one is a user turn (the completion answers it).

    Returns ``prompt`` unchanged. Raises ValueError naming the message at fault.
    """
    if not prompt:
        raise ValueError("prompt is empty")
    for i, m in enumerate(prompt):
        if m.content is None:
            raise ValueError(f"prompt[{i}].content is null: the judge grades text, give every message a string "
                             "content (\"\" when empty)")
    if prompt[-1].role != "user":
        raise ValueError(f"the last prompt message must have role 'user' (the judge grades the reply to it), "
                         f"got {prompt[-1].role!r}")
    return prompt
