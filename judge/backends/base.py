"""What the service hands a backend (a :class:`GradeJob` per rubric item) and what it gets back."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GradeJob:
    """One rubric item to grade: the grader chat messages built by :mod:`judge.prompt`, and where to send it when
    there are several grader replicas (:mod:`judge.backends.routing`): ``route_key`` places the example on the
    hash ring (its prompt, or prompt + completion), ``pin_key`` identifies the example (all its criteria follow
    one replica). None: no affinity. ``deadline``: ``time.monotonic()`` by which its grading must end (the
    request's time budget, services/common/budget.py); past it the backend starts nothing more for this job and
    returns a null Outcome with a ``judge_budget_exceeded`` reason. None: no budget."""

    messages: list[dict]
    route_key: str | None = None
    pin_key: str | None = None
    deadline: float | None = None

    def time_left(self) -> float:
        """Seconds until ``deadline`` (infinity without one; negative once passed)."""
        return math.inf if self.deadline is None else self.deadline - time.monotonic()


@dataclass(frozen=True)
class Outcome:
    """A verdict, or a null verdict with ``error`` = ``"<reason_prefix>: details"``; ``raw`` = grader text."""

    criteria_met: bool | None
    explanation: str = ""
    error: str | None = None
    raw: str | None = None


#: reason kind of a criterion whose grading could not finish within the request's time budget
BUDGET_EXCEEDED = "judge_budget_exceeded"


class Backend(Protocol):
    """A grader. ``grade_batch`` never raises for a single bad item: it returns a null :class:`Outcome`.

    A backend that grades the jobs of a batch independently (HTTP) also has ``grade_each(jobs) ->
    list[Awaitable[Outcome]]``, which the service prefers: the micro-batcher then releases each caller as soon as
    its own job is done, not when the slowest job of its batch is (judge/batcher.py)."""

    model_id: str
    yes_no: bool
    #: batches the micro-batcher may have in flight (None: unbounded, the backend limits concurrency itself)
    max_concurrent_batches: int | None

    async def grade_batch(self, jobs: list[GradeJob]) -> list[Outcome]: ...

    async def ready(self) -> tuple[bool, str]: ...

    async def aclose(self) -> None: ...
