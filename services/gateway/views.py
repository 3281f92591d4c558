"""Turn a stored job (services/common/jobs.py) into the job view and the dense ``[N, K]`` matrix
(contracts.gateway.JobView / DenseRewards)."""

from __future__ import annotations

from typing import Any

from contracts.channels import JUDGE, RULE_CHANNELS, RULES, is_rubric_channel, rubric_channels, source_channels
from contracts.results import Tally, source_error, source_state
from services.common.jobs import result_field


def _pending_reason(source: str) -> str:
    return f"pending: no {source} result yet"


def item_results(job: dict[str, Any], detail: bool = False) -> list[dict[str, Any]]:
    """Per item: its own channels (rubric slots of its own criteria, rule channels if it has tools), reasons,
    HealthBench score, BFCL verdict and the state of each source (contracts.results.source_state)."""
    out = []
    for i, p in enumerate(job["plan"]):
        channels: dict[str, float | None] = {}
        reasons: dict[str, str] = {}
        sources: dict[str, dict] = {}
        hb_score, bfcl, rubric_results = None, None, None
        for source in p["sources"]:
            field = result_field(i, source)
            r = job["results"].get(field)
            attempts = job["attempts"].get(field, 0)
            if r is None:
                for name in source_channels(source, p["n_rubrics"]):
                    channels[name] = None
                    reasons[name] = _pending_reason(source)
                sources[source] = {"state": "pending", "attempts": attempts}
                continue
            channels.update(r["channels"])
            reasons.update(r["reasons"])
            sources[source] = {"state": source_state(r), "attempts": attempts, "error": source_error(r)}
            d = r.get("detail") or {}
            if source == JUDGE:
                hb_score = d.get("score")
                rubric_results = d.get("rubric_results") if detail else None
            elif r["ok"]:
                bfcl = {k: d.get(k) for k in ("valid", "error_type", "error", "format", "calls")}
        out.append({"index": i, "id": p["id"], "group_id": p.get("group_id"), "channels": channels,
                    "reasons": reasons, "healthbench_score": hb_score, "bfcl": bfcl, "sources": sources,
                    "rubric_results": rubric_results})
    return out


def job_tally(job: dict[str, Any]) -> Tally:
    """Channel outcomes of the whole job, the channels of missing results counted as pending."""
    t = Tally()
    for i, p in enumerate(job["plan"]):
        for source in p["sources"]:
            r = job["results"].get(result_field(i, source))
            if r is None:
                t.pending += len(source_channels(source, p["n_rubrics"]))
            else:
                t.add(r)
    return t


def job_view(job: dict[str, Any], detail: bool = False) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` answers it (contracts.gateway.JobView)."""
    t = job_tally(job)
    return {"job_id": job["job_id"], "status": job["status"], "created_at": job["created_at"],
            "deadline": job["deadline"], "n_items": len(job["plan"]), "n_expected": job["n_expected"],
            "n_results": len(job["results"]), "counts": t.counts(), "reasons": dict(sorted(t.reasons.items())),
            "items": item_results(job, detail)}


def dense_channel_names(plan: list[dict[str, Any]], rubric_slots: int = 0, rules: bool = False) -> list[str]:
    """``rubric/00 .. rubric/{M-1}`` for M = max(rubric count in the batch, ``rubric_slots``), then the rule
    channels when any item has tools (or ``rules``)."""
    m = max([p["n_rubrics"] for p in plan] + [rubric_slots])
    names = rubric_channels(m)
    if rules or any(RULES in p["sources"] for p in plan):
        names += list(RULE_CHANNELS)
    return names


def dense(job: dict[str, Any], rubric_slots: int = 0, rules: bool = False) -> dict[str, Any]:
    """The job's rewards as ``[N, K]`` (item order × ``channel_names``), ``None`` = NaN with a reason.

    Padding: rubric slot j >= the item's own criterion count is NaN with reason
    ``absent: prompt has only M rubric criteria``; rule channels of an item without tools are NaN with
    ``absent: item has no tools``.
    """
    names = dense_channel_names(job["plan"], rubric_slots, rules)
    items = item_results(job)
    rewards, reasons = [], []
    for p, it in zip(job["plan"], items):
        row, why = [], []
        for name in names:
            if name in it["channels"]:
                row.append(it["channels"][name])
                why.append(it["reasons"].get(name))
            elif is_rubric_channel(name):
                row.append(None)
                why.append(f"absent: prompt has only {p['n_rubrics']} rubric criteria")
            else:
                row.append(None)
                why.append("absent: item has no tools")
        rewards.append(row)
        reasons.append(why)
    return {"job_id": job["job_id"], "status": job["status"], "item_ids": [p["id"] for p in job["plan"]],
            "channel_names": names, "rewards": rewards, "reasons": reasons}
