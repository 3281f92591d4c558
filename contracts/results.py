"""Result records, job statuses and how they are derived (docs/gateway.md, "Job status").

A *result record* is what one (item, source) task stores in the job (JSON in Redis)::

    {"ok": bool, "source": "judge" | "rules", "channels": {name: float | null}, "reasons": {name: str},
     "detail": {...} | null, "error": str | null, "worker": str, "attempt": int, "elapsed_s": float,
     "finished_at": float}

``ok`` says that the service answered; a channel can still be ``null`` then (a null verdict). Every ``null`` has
``reasons[name]``, whose *kind* (:func:`reason_kind`, the text before the first ``:``) is machine-readable.

Channel outcomes: *scored* (a number), *not applicable* (null because the item itself asks for no such check:
:data:`NOT_APPLICABLE` kinds, e.g. ``no_ground_truth``), *unscored* (null for any other reason: a service
error, a null verdict, the deadline) and *pending* (no result yet).

Source state (``sources.<s>.state`` of an item): ``pending`` (no result yet); ``ok`` (no channel unscored);
``partial`` (some channels scored, some unscored); ``error`` (the service failed, or no channel scored).

Job status: ``queued`` (no task started), ``running``; once every result is in or the deadline passed (the
missing ones become unscored ``deadline_exceeded``), ``done`` = no channel unscored, ``failed`` = none scored,
``partial`` = some scored and some unscored. :data:`FINAL_STATUSES` never change again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from contracts.channels import source_channels
from contracts.values import wire_value

Status = Literal["queued", "running", "done", "partial", "failed"]
#: Statuses a job never leaves.
FINAL_STATUSES: tuple[str, ...] = ("done", "partial", "failed")
SourceStateName = Literal["pending", "ok", "partial", "error"]

#: Reason kinds of a null channel that the item itself asked for (not a failure).
NOT_APPLICABLE: frozenset[str] = frozenset({"no_ground_truth", "no_calls"})


def reason_kind(reason: str | None) -> str:
    """The machine-readable kind of a reason: the text before the first ``:`` (``"judge_timeout"``)."""
    return (reason or "unknown").split(":", 1)[0].strip() or "unknown"


def result_record(source: str, channels: Mapping[str, float | None], reasons: Mapping[str, str],
                  detail: dict[str, Any] | None) -> dict[str, Any]:
    """The record of a service answer (``ok`` True); channel values as on the wire (:func:`wire_value`)."""
    return {"ok": True, "source": source, "channels": {k: wire_value(v) for k, v in channels.items()},
            "reasons": dict(reasons), "detail": detail, "error": None}


def null_result(source: str, n_rubrics: int, reason: str, **extra: Any) -> dict[str, Any]:
    """A record in which every channel of ``source`` is null with ``reason``; ``ok`` is False."""
    names = source_channels(source, n_rubrics)
    return {"ok": False, "source": source, "channels": dict.fromkeys(names), "reasons": dict.fromkeys(names, reason),
            "detail": None, "error": reason, **extra}


@dataclass
class Tally:
    """Channel outcomes counted over result records, and the kinds of the reasons of their null channels."""

    scored: int = 0
    unscored: int = 0
    not_applicable: int = 0
    pending: int = 0
    reasons: Counter = field(default_factory=Counter)

    def add(self, record: Mapping[str, Any]) -> "Tally":
        reasons = record.get("reasons") or {}
        for name, value in (record.get("channels") or {}).items():
            if value is not None:
                self.scored += 1
                continue
            kind = reason_kind(reasons.get(name))
            self.reasons[kind] += 1
            if kind in NOT_APPLICABLE:
                self.not_applicable += 1
            else:
                self.unscored += 1
        return self

    def counts(self) -> dict[str, int]:
        return {"scored": self.scored, "unscored": self.unscored, "not_applicable": self.not_applicable,
                "pending": self.pending}


def tally(records: Iterable[Mapping[str, Any]]) -> Tally:
    t = Tally()
    for r in records:
        t.add(r)
    return t


def source_state(record: Mapping[str, Any] | None) -> str:
    """``pending`` | ``ok`` | ``partial`` | ``error`` for one (item, source) record (see the module docstring)."""
    if record is None:
        return "pending"
    if not record.get("ok"):
        return "error"
    t = Tally().add(record)
    if t.unscored == 0:
        return "ok"
    return "partial" if t.scored else "error"


def source_error(record: Mapping[str, Any] | None) -> str | None:
    """What went wrong for one record: its error, or a count of its unscored channels by reason kind."""
    if record is None:
        return None
    if record.get("error"):
        return record["error"]
    t = Tally().add(record)
    if not t.unscored:
        return None
    kinds = ", ".join(f"{k} x{n}" for k, n in sorted(t.reasons.items()) if k not in NOT_APPLICABLE)
    return f"{t.unscored} of {len(record.get('channels') or {})} channels unscored: {kinds}"


def job_status(n_expected: int, results: Mapping[str, Mapping[str, Any]], started: bool, expired: bool) -> str:
    """Status of a job from its result records (see the module docstring).

    ``n_expected``: number of (item, source) results the job needs; ``results``: the records in so far;
    ``started``: a task has begun; ``expired``: the deadline has passed.
    """
    missing = max(0, n_expected - len(results))
    if missing and not expired:
        return "running" if started or results else "queued"
    t = tally(results.values())
    if t.unscored == 0 and not missing:
        return "done"
    return "partial" if t.scored else "failed"
