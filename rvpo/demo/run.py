"""`make demo` / `rvpo demo`: the whole system on real data, end to end, in a few minutes on 2 CPU cores.

1. starts the stack (`rvpo up` as real processes); 2. scores the BFCL sample (ground truth + faulty variants)
and prints BFCL accuracy and per-channel results; 3. grades the HealthBench sample's physician completions and
a truncated variant through the judge; 4. runs a short RVPO training on a tool-calling task whose rewards come
through the gateway; 5. stops everything. Writes ``report.json`` and ``rewards.png`` under ``out_dir``.
"""

from __future__ import annotations

import json
import math
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from rvpo.demo_data import bfcl_demo_records, healthbench_demo_records
from rvpo.evaluation import bfcl_summary, healthbench_summary, print_summary
from rvpo.records import write_jsonl
from rvpo.scoring import score_records
from rvpo.stack import Stack, StackConfig


def _judge_env(out_dir: Path, console: Console) -> tuple[dict[str, str], str]:
    """Judge backend settings: the user's OpenAI-compatible server when RVPO_JUDGE_BASE_URL is set, else a tiny
    local model built here, which is untrained — its verdicts exercise the path but mean nothing."""
    from judge.settings import JudgeSettings

    judge = JudgeSettings()
    if "judge_base_url" in judge.model_fields_set:  # RVPO_JUDGE_BASE_URL is set
        model = judge.judge_model if "judge_model" in judge.model_fields_set else "(RVPO_JUDGE_MODEL unset)"
        console.print(f"judge backend: {judge.judge_base_url} model {model}")
        return {}, f"openai-compatible: {judge.judge_base_url} ({model})"
    from rvpo.demo.tinymodel import build_tiny_qwen2, english_corpus

    path = build_tiny_qwen2(out_dir / "untrained-judge", corpus=english_corpus(), vocab_size=4096)
    console.print(Panel(
        "RVPO_JUDGE_BASE_URL is not set, so the judge uses a TINY UNTRAINED local model built just now.\n"
        "The grading path runs end to end, but its verdicts are meaningless. Point RVPO_JUDGE_BASE_URL /\n"
        "RVPO_JUDGE_MODEL (and RVPO_JUDGE_API_KEY) at any OpenAI-compatible server for real grades.",
        title="judge backend", style="yellow"))
    # Small batches: on a CPU, a batch of long grader prompts materialises B x heads x T x T attention scores.
    return ({"RVPO_JUDGE_BACKEND": "local", "RVPO_JUDGE_LOCAL_MODEL_PATH": str(path),
             "RVPO_JUDGE_MODEL": "untrained-tiny-qwen2", "RVPO_JUDGE_MAX_BATCH_SIZE": "4"}, "local untrained tiny Qwen2 (verdicts meaningless)")


def run_demo(out_dir: Path, console: Console | None = None) -> bool:
    """Run every stage; returns True when all succeeded. Each stage's outcome and timing goes to report.json."""
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"stages": {}, "started": time.time()}
    ok = True

    def stage(name: str, fn) -> Any:
        nonlocal ok
        if not ok:
            report["stages"][name] = {"status": "skipped"}
            return None
        t0 = time.monotonic()
        console.rule(f"[bold]{name}")
        try:
            result = fn()
            report["stages"][name] = {"status": "ok", "seconds": round(time.monotonic() - t0, 1), "result": result}
            return result
        except Exception as exc:  # noqa: BLE001 - a failed stage is reported, then the demo exits non-zero
            ok = False
            report["stages"][name] = {"status": "failed", "seconds": round(time.monotonic() - t0, 1),
                                      "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            console.print(f"[red]stage {name} failed:[/red] {exc}")
            return None

    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so `finally` stops the stack on SIGTERM too
    env, judge_label = _judge_env(out_dir, console)
    report["judge_backend"] = judge_label
    stack = Stack(StackConfig(gateway_port=0, judge_port=0, rules_port=0, log_dir=out_dir / "logs", env=env))
    try:
        stage("1 start the stack", lambda: _start(stack, console))
        gateway = stack.urls.get("gateway", "")
        stage("2 score BFCL", lambda: _score_bfcl(gateway, out_dir, console))
        stage("3 grade HealthBench", lambda: _grade_healthbench(gateway, out_dir, console, judge_label))
        stage("4 RVPO training", lambda: _train(gateway, out_dir, console))
    finally:
        with console.status("5 stopping every process the demo started ..."):
            stack.stop()
        report["stages"]["5 stop"] = {"status": "ok"}
        report["seconds"] = round(time.time() - report.pop("started"), 1)
        (out_dir / "report.json").write_text(json.dumps(_strict(report), indent=2, default=str, allow_nan=False))
    console.print(f"report: {out_dir / 'report.json'}  ({'all stages ok' if ok else 'FAILED'}, "
                  f"{report['seconds']} s)")
    return ok


def _strict(obj: Any) -> Any:
    """The report with every NaN / inf float as null (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _start(stack: Stack, console: Console) -> dict:
    with console.status("starting redis, rules, judge, gateway and a Celery worker ..."):
        stack.start()
    console.print(stack.urls)
    ready, detail = stack.judge_ready()
    if not ready:
        console.print(f"[yellow]the judge's LLM backend does not answer ({detail}): its verdicts will be null "
                      "and the HealthBench stage will fail[/yellow]")
    return {"urls": stack.urls, "redis": stack.env["RVPO_REDIS_URL"], "judge_backend_ready": ready}


def _score(records: list[dict], gateway: str, console: Console, label: str,
           accept: tuple[str, ...] = ("done",)) -> list[dict]:
    """Score through the gateway (token: RVPO_API_TOKEN); raises unless every job ended with a status in ``accept``."""
    from rich.progress import Progress

    with Progress(console=console) as progress:
        scored, statuses = score_records(records, gateway, batch_size=64, progress=progress)
    bad = [s for s in statuses if s not in accept]
    if bad:
        raise RuntimeError(f"{label}: {len(bad)} job(s) ended {bad}")
    return scored


def _score_bfcl(gateway: str, out_dir: Path, console: Console) -> dict:
    scored = _score(bfcl_demo_records(), gateway, console, "BFCL")
    write_jsonl(out_dir / "bfcl_scored.jsonl", scored)
    summary = bfcl_summary(scored)
    print_summary(console, "bfcl", summary)
    gt = summary["ground_truth"]
    if gt["accuracy"] != 1.0:
        raise RuntimeError(f"ground-truth calls should all be valid, accuracy {gt['accuracy']:.3f}")
    faulty = [s for v, s in summary.items() if v.startswith("faulty:")]
    if any(s["accuracy"] != 0.0 for s in faulty):
        raise RuntimeError("a faulty variant was judged valid")
    return summary


def _grade_healthbench(gateway: str, out_dir: Path, console: Console, judge_label: str) -> dict:
    # a job with some null verdicts is "partial"; the share of null verdicts is checked below
    scored = _score(healthbench_demo_records(), gateway, console, "HealthBench", accept=("done", "partial"))
    write_jsonl(out_dir / "healthbench_scored.jsonl", scored)
    summary = healthbench_summary(scored)
    print_summary(console, "healthbench", summary)
    console.print(f"(judge backend: {judge_label})")
    nulls = sum(s["null_verdicts"] for s in summary.values())
    total = sum(s["verdicts"] for s in summary.values())
    if nulls * 2 > total:  # a null verdict is never "not met": with most of them null there is no score
        reasons = sorted({reason.split(":")[0] for row in scored for reason in row["result"]["reasons"].values()})
        raise RuntimeError(f"{nulls} of {total} verdicts are null ({', '.join(reasons)}): the judge could not "
                           "grade; check RVPO_JUDGE_BASE_URL / RVPO_JUDGE_MODEL / RVPO_JUDGE_API_KEY")
    return {variant: {k: s[k] for k in ("score", "score_bootstrap_std", "n_samples", "null_verdicts", "verdicts")}
            for variant, s in summary.items()}


def _train(gateway: str, out_dir: Path, console: Console) -> dict:
    from rvpo.training import demo_training

    return demo_training(gateway, out_dir, console=console)
