"""`rvpo eval`: summaries of a scored file (the output of `rvpo score`).

HealthBench: the simple-evals score (clipped mean, bootstrap std, per axis and per theme) via
``judge.scoring.healthbench_report``. BFCL: accuracy (share of valid calls per the BFCL AST checker) overall
and by category. Rows carrying a ``variant`` field (the demo's "ideal" / "truncated" / mutation names) are also
summarized per variant.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

from contracts.channels import rubric_channel
from contracts.results import NOT_APPLICABLE, reason_kind
from judge.scoring import healthbench_report
from rvpo.records import InputFileError, RecordError, numbered_jsonl, record_kind


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_scored(path: str, suite: str) -> list[dict[str, Any]]:
    """The rows of a scored JSONL file (what ``rvpo score`` writes), checked where `rvpo eval` reads them.

    Rows of the other suite are kept (the summaries skip them). A field of the wrong type is an InputFileError
    naming the line and the field (exit code 2) instead of a traceback or a silently wrong summary: ``rubrics``
    a list of objects with numeric ``points``; ``result`` an object or null; ``result.channels`` an object of
    numbers / nulls; ``rubric_results[].criteria_met`` and ``bfcl.valid`` true / false / null. A NaN or +-inf
    channel value (JSON ``NaN``, never written by ``rvpo score``) is a missing value - null with the reason
    ``not_finite`` - never a met criterion.
    """
    rows = []
    for lineno, row in numbered_jsonl(path):
        where = f"{path}:{lineno}"
        try:
            kind = record_kind(row)
        except RecordError as exc:
            raise InputFileError(f"{where}: {exc}") from None
        if kind == "healthbench":
            rubrics = row["rubrics"]
            if not isinstance(rubrics, list) or not all(isinstance(r, dict) for r in rubrics):
                raise InputFileError(f"{where}: `rubrics` must be a list of objects")
            for j, r in enumerate(rubrics):
                if not (_is_number(r.get("points")) and math.isfinite(r["points"])):
                    raise InputFileError(f"{where}: rubrics[{j}].points must be a finite number, got "
                                         f"{r.get('points')!r}")
                if not isinstance(r.get("tags", []), list):
                    raise InputFileError(f"{where}: rubrics[{j}].tags must be a list")
        result = row.get("result")
        if result is None:
            rows.append(row)
            continue
        if not isinstance(result, dict):
            raise InputFileError(f"{where}: `result` must be an object or null, got {type(result).__name__}")
        channels = result.get("channels")
        if channels is not None:
            if not isinstance(channels, dict):
                raise InputFileError(f"{where}: result.channels must be an object")
            reasons = result.get("reasons")
            if reasons is None:
                reasons = result["reasons"] = {}
            if not isinstance(reasons, dict):
                raise InputFileError(f"{where}: result.reasons must be an object")
            for name, value in channels.items():
                if value is not None and not _is_number(value):
                    raise InputFileError(f"{where}: result.channels[{name!r}] must be a number or null, got "
                                         f"{value!r}")
                if value is not None and not math.isfinite(value):
                    channels[name] = None
                    reasons.setdefault(name, f"not_finite: {value!r} in the scored file")
        details = result.get("rubric_results")
        if details is not None:
            if not isinstance(details, list) or not all(isinstance(d, dict) for d in details):
                raise InputFileError(f"{where}: result.rubric_results must be a list of objects")
            for j, d in enumerate(details):
                if d.get("criteria_met") not in (True, False, None):
                    raise InputFileError(f"{where}: result.rubric_results[{j}].criteria_met must be true, false "
                                         f"or null, got {d.get('criteria_met')!r}")
        verdict = result.get("bfcl")
        if verdict is not None and (not isinstance(verdict, dict) or verdict.get("valid") not in (True, False, None)):
            raise InputFileError(f"{where}: result.bfcl.valid must be true, false or null")
        rows.append(row)
    return rows


def _by_variant(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[str(r.get("variant", "all"))].append(r)
    return dict(groups)


def _verdicts(row: dict) -> list[bool | None]:
    """criteria_met per rubric item (None = null verdict, never 'not met').

    From the judge's rubric results when the job was fetched with details, else from the reward channels:
    ``rubric/jj = points_j * met_j`` (docs/contracts.md), so met_j is ``value != 0`` (points are never 0 in
    HealthBench; a 0-point item reads as not met, which leaves its score unchanged) and null stays null."""
    result = row.get("result") or {}
    details = result.get("rubric_results") or []
    if len(details) == len(row["rubrics"]):
        return [rr.get("criteria_met") for rr in details]
    channels = result.get("channels") or {}
    out: list[bool | None] = []
    for j in range(len(row["rubrics"])):
        value = channels.get(rubric_channel(j))
        out.append(None if value is None else value != 0)
    return out


def _null_reasons(row: dict, prefix: str) -> Counter:
    """Kinds of the reasons of a row's null channels whose name starts with ``prefix`` (not-applicable ones left
    out), counted; a row without a result counts as one ``unscored`` cell."""
    result = row.get("result")
    if not result:
        return Counter({"no_result": 1})
    reasons = result.get("reasons") or {}
    kinds = (reason_kind(reasons.get(name)) for name, value in (result.get("channels") or {}).items()
             if value is None and name.startswith(prefix))
    return Counter(k for k in kinds if k not in NOT_APPLICABLE)


def healthbench_summary(rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """HealthBench report per variant: ``{variant: {score, score_bootstrap_std, n_samples, axes, themes,
    null_verdicts, verdicts, null_reasons}}`` (``null_reasons``: the null verdicts by reason kind). Rows that are
    not HealthBench records are ignored; the score of a variant none of whose rows has a verdict is NaN."""
    rows = [r for r in rows if record_kind(r) == "healthbench"]
    out = {}
    for variant, group in _by_variant(rows).items():
        examples = [{"rubrics": r["rubrics"], "met": _verdicts(r), "example_tags": r.get("example_tags", [])}
                    for r in group]
        report = healthbench_report(examples, rng=seed)
        report.pop("metrics")
        report["null_verdicts"] = sum(m is None for e in examples for m in e["met"])
        report["verdicts"] = sum(len(e["met"]) for e in examples)
        report["null_reasons"] = dict(sum((_null_reasons(r, "rubric/") for r in group), Counter()).most_common())
        out[variant] = report
    return out


def _category(item_id: str) -> str:
    """BFCL category for reporting: the id without its trailing index (``simple_python_12`` -> ``simple_python``)."""
    return re.sub(r"_\d+$", "", item_id.split("#")[0])


def bfcl_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """BFCL accuracy per variant and category, error-type counts, and each rules channel's mean.

    A row whose verdict is missing (the rules source failed) counts as not valid and is reported under
    ``unscored``. Rows that are not BFCL records are ignored."""
    rows = [r for r in rows if record_kind(r) == "bfcl"]
    out = {}
    for variant, group in _by_variant(rows).items():
        by_cat: dict[str, list[bool]] = defaultdict(list)
        errors: Counter = Counter()
        channels: dict[str, list[float]] = defaultdict(list)
        unscored = 0
        for r in group:
            result = r.get("result") or {}
            verdict = result.get("bfcl") or {}
            valid = verdict.get("valid")
            if valid is None:
                unscored += 1
            by_cat[_category(str(r.get("id", "")))].append(bool(valid))
            if valid is False:
                errors[verdict.get("error_type") or "unknown"] += 1
            for name, value in (result.get("channels") or {}).items():
                if name.startswith("rules/") and value is not None:
                    channels[name].append(float(value))
        n = sum(len(v) for v in by_cat.values())
        reasons = sum((_null_reasons(r, "rules/") for r in group if (r.get("result") or {}).get("bfcl") is None),
                      Counter())
        out[variant] = {
            "accuracy": sum(sum(v) for v in by_cat.values()) / n if n else math.nan,
            "n": n,
            "unscored": unscored,
            "unscored_reasons": dict(reasons.most_common()),
            "by_category": {c: {"accuracy": sum(v) / len(v), "n": len(v)} for c, v in sorted(by_cat.items())},
            "error_types": dict(errors.most_common()),
            "channel_means": {k: sum(v) / len(v) for k, v in sorted(channels.items())},
        }
    return out


def summary_outcome(suite: str, summary: dict[str, Any]) -> tuple[str, str]:
    """(status, one line) of a summary: ``done`` when every verdict is there, ``failed`` when none is, else
    ``partial``; the line counts them and the reasons of the missing ones. Raises RecordError for an empty
    summary (no row of that suite in the file)."""
    if not summary:
        other = "bfcl" if suite == "healthbench" else "healthbench"
        raise RecordError(f"no {suite} rows in the file (rows with `rubrics` are HealthBench, with `function` / "
                          f"`tools` BFCL): did you mean `rvpo eval {other}`?")
    reasons: Counter = Counter()
    if suite == "healthbench":
        total = sum(s["verdicts"] for s in summary.values())
        missing = sum(s["null_verdicts"] for s in summary.values())
        what = "rubric verdicts"
        for s in summary.values():
            reasons.update(s["null_reasons"])
    else:
        total = sum(s["n"] for s in summary.values())
        missing = sum(s["unscored"] for s in summary.values())
        what = "BFCL verdicts"
        for s in summary.values():
            reasons.update(s["unscored_reasons"])
    if total == 0:  # HealthBench rows with `rubrics: []`: no score at all (n/a), not "done" with exit 0
        return "failed", f"failed: 0/0 {what} — the rows have no rubric criteria to score"
    status = "done" if missing == 0 else ("failed" if missing >= total else "partial")
    line = f"{status}: {total - missing}/{total} {what}"
    if missing:
        line += " — missing: " + (", ".join(f"{k} x{n}" for k, n in reasons.most_common()) or "no reason given")
    return status, line


def _num(value: Any, std: Any = None) -> str:
    """A score for a table: 4 decimals, ``± std`` when given, ``n/a`` for a missing (NaN / None) value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" + ("" if std is None or (isinstance(std, float) and math.isnan(std)) else f" ± {std:.4f}")


def print_summary(console: Console, suite: str, summary: dict[str, Any]) -> None:
    """Render a summary as rich tables."""
    for variant, s in summary.items():
        table = Table(title=f"{suite} — {variant}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("n", justify="right")
        if suite == "healthbench":
            table.add_row("score (clipped mean)", _num(s["score"], s["score_bootstrap_std"]), str(s["n_samples"]))
            table.add_row("null verdicts", str(s["null_verdicts"]), str(s["verdicts"]))
            for kind in ("axes", "themes"):
                for name, m in s[kind].items():
                    table.add_row(f"{kind[:-1] if kind == 'themes' else 'axis'}: {name}",
                                  _num(m["mean"], m["bootstrap_std"]), str(m["n_samples"]))
        else:
            table.add_row("accuracy", _num(s["accuracy"]), str(s["n"]))
            for cat, m in s["by_category"].items():
                table.add_row(f"category: {cat}", _num(m["accuracy"]), str(m["n"]))
            for err, count in s["error_types"].items():
                table.add_row(f"error: {err}", str(count), "")
            for name, mean in s["channel_means"].items():
                table.add_row(f"channel: {name}", _num(mean), "")
        console.print(table)
