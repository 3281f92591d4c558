"""What the service hands a backend (a :class:`GradeJob` per rubric item) and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GradeJob:
    """One rubric item to grade: the grader chat messages built by :mod:`judge.prompt`, and where to send it when
    there are several grader replicas (:mod:`judge.backends.routing`): ``route_key`` places the example on the
    hash ring (its prompt, or prompt + completion), ``pin_key`` identifies the example (all its criteria follow
    one replica). None: no affinity."""

    messages: list[dict]
    route_key: str | None = None
    pin_key: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A verdict, or a null verdict with ``error`` = ``"<reason_prefix>: details"``; ``raw`` = grader text."""

    criteria_met: bool | None
    explanation: str = ""
    error: str | None = None
    raw: str | None = None


class Backend(Protocol):
    """A grader. ``grade_batch`` never raises for a single bad item: it returns a null :class:`Outcome`."""

    model_id: str
    yes_no: bool
    #: batches the micro-batcher may have in flight (None: unbounded, the backend limits concurrency itself)
    max_concurrent_batches: int | None

    async def grade_batch(self, jobs: list[GradeJob]) -> list[Outcome]: ...

    async def ready(self) -> tuple[bool, str]: ...

    async def aclose(self) -> None: ...
