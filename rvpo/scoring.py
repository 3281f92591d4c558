"""`rvpo score`: send a JSONL file of records through the gateway and write one scored line per record.

The outcome counts every channel as the gateway's job view does (``counts``: scored / unscored / not applicable /
pending, ``reasons`` by kind; contracts.results) and gives the run one status: ``done`` (nothing unscored),
``partial`` or ``failed`` (nothing scored). A run stops at the first job in which a source scored nothing at
all (every judge verdict null, say, because its LLM is unreachable): the rest would fail the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.results import NOT_APPLICABLE, reason_kind
from rvpo.errors import EXIT_NONE, EXIT_PARTIAL, CLIError, field_path, rejected_fields
from rvpo.records import RecordError, join_answers, numbered_jsonl, to_item, write_jsonl
from services.gateway.client import GatewayClient, GatewayError

#: What to change when a source scored nothing, by the kind of its reasons.
SOURCE_HINTS = {
    "judge": "the judge's LLM backend: set RVPO_JUDGE_BASE_URL / RVPO_JUDGE_MODEL / RVPO_JUDGE_API_KEY (or "
             "RVPO_JUDGE_BACKEND=local with RVPO_JUDGE_LOCAL_MODEL_PATH) where the judge runs, then restart it; "
             "`curl $JUDGE/readyz` shows what it sees",
    "rules": "the rules service: is it running, and RVPO_RULES_SERVICE_URL of the worker right?",
}


@dataclass
class ScoreOutcome:
    """Channel outcomes of a run, summed over its jobs, and the run's status."""

    statuses: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)   # scored / unscored / not_applicable / pending
    reasons: Counter = field(default_factory=Counter)  # unscored channels by reason kind

    def add(self, job: dict[str, Any]) -> None:
        self.statuses.append(job["status"])
        self.counts.update(job.get("counts") or {})
        for item in job["items"]:
            for name, value in item["channels"].items():
                kind = reason_kind(item["reasons"].get(name))
                if value is None and kind not in NOT_APPLICABLE:
                    self.reasons[kind] += 1

    @property
    def status(self) -> str:
        """``done`` (no channel unscored), ``failed`` (none scored) or ``partial``."""
        if not self.counts["unscored"] and not self.counts["pending"]:
            return "done"
        return "partial" if self.counts["scored"] else "failed"

    def line(self) -> str:
        """One line: the status, channels scored of those expected, and the reasons of the unscored, counted."""
        expected = self.counts["scored"] + self.counts["unscored"] + self.counts["pending"]
        text = f"{self.status}: {self.counts['scored']}/{expected} reward channels scored"
        if self.reasons:
            text += " — unscored: " + ", ".join(f"{k} x{n}" for k, n in self.reasons.most_common())
        return text


class SourceDown(CLIError):
    """A source scored nothing in a job, so the run stopped; ``scored`` holds the records scored so far and
    ``outcome`` their counts (exit code 4 when nothing at all was scored, else 3)."""

    def __init__(self, message: str, hint: str, scored: list[dict], outcome: "ScoreOutcome"):
        super().__init__(message, hint, EXIT_NONE if not outcome.counts["scored"] else EXIT_PARTIAL)
        self.scored, self.outcome = scored, outcome


def _dead_sources(job: dict[str, Any]) -> dict[str, Counter]:
    """Sources that scored no channel at all in ``job`` (every item's state ``error``), with their reasons."""
    states: dict[str, list[str]] = {}
    reasons: dict[str, Counter] = {}
    for item in job["items"]:
        for source, state in item["sources"].items():
            states.setdefault(source, []).append(state["state"])
            for name, value in item["channels"].items():
                belongs = name.startswith("rubric/") if source == "judge" else name.startswith("rules/")
                if belongs and value is None:
                    reasons.setdefault(source, Counter())[reason_kind(item["reasons"].get(name))] += 1
    return {s: reasons.get(s, Counter()) for s, st in states.items() if st and all(x == "error" for x in st)}


def _rejected(exc: GatewayError, labels: list[str]) -> CLIError:
    """A 4xx for one batch as a CLIError naming the input line and the field of each rejected item."""
    lines = []
    for loc, msg in rejected_fields(exc.body):
        if len(loc) >= 3 and loc[:2] == ["body", "items"] and isinstance(loc[2], int) and loc[2] < len(labels):
            lines.append(f"{labels[loc[2]]}: {field_path(loc[3:]) if loc[3:] else 'the item'}: {msg}")
        else:
            lines.append(f"{field_path(loc)}: {msg}" if loc else msg)
    more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
    return CLIError(f"the gateway refused the input ({exc.status_code}): " + "; ".join(lines[:3]) + more,
                    "fix that field (input formats: README, `rvpo score`; wire format: docs/contracts.md)")


def score_records(records: list[dict[str, Any]], gateway_url: str | None = None, *, token: str | None = None,
                  batch_size: int = 64, job_timeout_s: float = 600.0, progress=None, labels: list[str] | None = None,
                  first_batch: int = 8, keep_going: bool = False) -> tuple[list[dict], ScoreOutcome]:
    """Score records in jobs of ``batch_size`` (the first job has at most ``first_batch`` records, so that a
    dead source shows within seconds); returns (records with a ``result`` field, outcome).

    Each output record is the input record plus ``result``: the gateway's per-item result (reward vector with
    names, values and reasons, HealthBench score, BFCL verdict). ``gateway_url`` / ``token``: None reads
    ``RVPO_GATEWAY_URL`` / ``RVPO_API_TOKEN``. ``labels[i]`` names record i in error messages (``file:line``).
    Raises RecordError for a malformed record, CLIError when the gateway rejects a batch (naming the line and
    the field) and, unless ``keep_going``, SourceDown when a source scored nothing in a job.
    """
    labels = labels or [f"record {i}" for i in range(len(records))]
    items = [to_item(r, i, labels[i]) for i, r in enumerate(records)]
    client = GatewayClient(gateway_url, token=token)
    task = progress.add_task("scoring", total=len(items)) if progress else None
    out, outcome = [], ScoreOutcome()
    bounds = [0] + list(range(min(first_batch, batch_size), len(items), batch_size)) + [len(items)]
    try:
        for start, end in zip(bounds, bounds[1:]):
            if start == end:
                continue
            try:
                job = client.score(items[start:end], job_timeout_s=job_timeout_s)
            except GatewayError as exc:
                raise _rejected(exc, labels[start:end]) from exc
            outcome.add(job)
            for record, result in zip(records[start:end], job["items"], strict=True):
                out.append({**record, "result": result})
            if progress:
                progress.advance(task, end - start)
            dead = {} if keep_going else _dead_sources(job)
            if dead:
                source, why = next(iter(dead.items()))
                kinds = ", ".join(f"{k} x{n}" for k, n in why.most_common())
                left = f"; stopped before sending the other {len(items) - end}" if end < len(items) else ""
                raise SourceDown(f"the {source} scored nothing in job {job['job_id']} ({end - start} records: "
                                 f"{kinds}){left}",
                                 f"check {SOURCE_HINTS.get(source, source)}; `--keep-going` scores everything anyway",
                                 out, outcome)
    finally:
        client.close()
    return out, outcome


def load_records(input_path: Path, answers: Path | None = None) -> tuple[list[dict], list[str]]:
    """Records of a JSONL file and a ``file:line`` label for each (BFCL ``answers`` joined by id). Raises
    RecordError naming the line of the first record that is not JSON or cannot be scored (no ``completion``...)."""
    numbered = list(numbered_jsonl(input_path))
    records = [r for _, r in numbered]
    labels = [f"{input_path}:{n}" for n, _ in numbered]
    if answers is not None:
        numbered_answers = list(numbered_jsonl(answers))
        records = join_answers(records, [a for _, a in numbered_answers], question_labels=labels,
                               answer_labels=[f"{answers}:{n}" for n, _ in numbered_answers])
    if not records:
        raise RecordError(f"{input_path}: no records (an empty file)")
    for i, (record, label) in enumerate(zip(records, labels)):
        to_item(record, i, label)  # a record that cannot be scored fails here, naming its line
    return records, labels


def score_file(input_path: Path, output_path: Path, gateway_url: str | None = None, *, token: str | None = None,
               answers: Path | None = None, batch_size: int = 64, job_timeout_s: float = 600.0,
               progress=None, keep_going: bool = False) -> tuple[int, ScoreOutcome]:
    """Read, score and write; returns (lines written, outcome). Raises as :func:`score_records`."""
    records, labels = load_records(input_path, answers)
    try:
        scored, outcome = score_records(records, gateway_url, token=token, batch_size=batch_size,
                                        job_timeout_s=job_timeout_s, progress=progress, labels=labels,
                                        keep_going=keep_going)
    except SourceDown as exc:  # keep what was scored
        exc.message += f"; the {write_jsonl(output_path, exc.scored)} records scored so far are in {output_path}"
        raise
    return write_jsonl(output_path, scored), outcome
