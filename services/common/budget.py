"""The time budget passed down with every scoring request: ``X-RVPO-Budget-S`` (docs/contracts.md, "Time budget").

One budget, nested: job deadline ⊃ worker call ⊃ the service's answer ⊃ its backend attempts. The caller (the
worker) sends the seconds it will still wait for the answer; the service (judge, rules) answers within them,
giving a null with a ``*_budget_exceeded`` reason for what it could not finish. The header holds a duration, not
a point in time, so the clocks of the two hosts need not agree; it counts from when the service starts handling
the request (the caller keeps a margin for the request and the answer to travel).

A request without the header gets the service's default budget (``RVPO_JUDGE_BUDGET_S``, ``RVPO_RULES_BUDGET_S``);
a value above the service's ceiling (``RVPO_*_MAX_BUDGET_S``) is lowered to it, a negative one raised to 0 (an
answer of nulls at once); a value that is not a finite number is a 422 naming the header.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Header, HTTPException, Response, status

BUDGET_HEADER = "X-RVPO-Budget-S"


def parse_budget(value: str | None, default_s: float, max_s: float) -> tuple[float, str]:
    """(seconds granted, how) for a header value: ``how`` is ``default`` (no header), ``clamped`` or ``header``.

    The granted budget is ``min(max(value, 0), max_s)``; no header: ``min(default_s, max_s)``.
    Raises ValueError when ``value`` is not a finite decimal number of seconds.
    """
    if value is None:
        return min(default_s, max_s), "default"
    try:
        seconds = float(value.strip())
    except ValueError:
        raise ValueError(f"not a number of seconds: {value[:40]!r}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite number of seconds: {value[:40]!r}")
    granted = min(max(seconds, 0.0), max_s)
    return granted, ("header" if granted == seconds else "clamped")


@dataclass(frozen=True)
class Budget:
    """``seconds`` granted to one request, ending at ``deadline`` (``time.monotonic()`` seconds)."""

    seconds: float
    deadline: float
    how: str = "default"

    @classmethod
    def starting_now(cls, seconds: float, how: str = "default") -> Budget:
        return cls(seconds, time.monotonic() + seconds, how)

    def left(self) -> float:
        """Seconds until the deadline (negative once it has passed)."""
        return self.deadline - time.monotonic()

    def describe(self) -> str:
        """``"the request's budget of 3.5 s"`` (for reasons), naming the header or the default."""
        where = {"default": "default budget", "clamped": "budget (X-RVPO-Budget-S, clamped)"}.get(
            self.how, f"budget ({BUDGET_HEADER})")
        return f"the request's {where} of {self.seconds:.3g} s"


def budget_dependency(default_s: float, max_s: float) -> Callable:
    """FastAPI dependency giving the route its :class:`Budget` (started when the route runs, i.e. after the body
    was read) and echoing the granted seconds in the answer's ``X-RVPO-Budget-S`` header; 422 with
    ``loc = ["header", "X-RVPO-Budget-S"]`` for a value that is not a finite number."""

    async def budget(response: Response, value: str | None = Header(None, alias=BUDGET_HEADER)) -> Budget:
        try:
            seconds, how = parse_budget(value, default_s, max_s)
        except ValueError as exc:
            raise HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_ENTITY, detail=[
                {"loc": ["header", BUDGET_HEADER], "type": "budget", "msg": str(exc), "input": value[:40]}])
        response.headers[BUDGET_HEADER] = f"{seconds:g}"
        return Budget.starting_now(seconds, how)

    return budget
