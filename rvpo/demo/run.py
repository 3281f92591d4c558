"""`make demo` / `rvpo demo`: the whole system on real data, end to end, in a few minutes on 2 CPU cores.

1. starts the stack (`rvpo up` as real processes); 2. scores the BFCL sample (ground truth + faulty variants);
3. grades the HealthBench sample's physician answers and a truncated variant of each through the judge;
4. warm-starts a tiny policy and trains it with RVPO on a tool-calling task whose rewards come through the
gateway, evaluated on held-out prompts before and after; 5. stops everything. Each stage ends with a one-line
verdict (rvpo/demo/verdicts.py); the details go to ``report.json`` (and the scored files), the curves to
``rewards.png``, under ``out_dir``.

The judge's grader: the user's OpenAI-compatible LLM when ``RVPO_JUDGE_BASE_URL`` is set. Otherwise the
keyword stand-in of the test suite (tests/fake_llm.py: a criterion is met iff its longest word occurs in the
answer), served over the same OpenAI API, so every part of the grading path runs in seconds and its scores are
reproducible — but they are no medical judgement, and the demo says so. (Before, an untrained local model
graded for 4 minutes and gave every answer 0.) Without tests/ (an installed wheel) the demo falls back to
that untrained model on 4 conversations, labelled meaningless.
"""

from __future__ import annotations

import json
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from rvpo.demo.verdicts import TOOLRL_SCALES, bfcl_rows, bfcl_verdict, healthbench_verdict, training_verdict
from rvpo.demo_data import bfcl_demo_records, healthbench_demo_records
from rvpo.evaluation import bfcl_summary, healthbench_summary
from rvpo.records import json_safe, write_jsonl
from rvpo.scoring import score_records
from rvpo.stack import Proc, Stack, StackConfig, free_port, start_process, uvicorn_args, wait_http

REPO = Path(__file__).resolve().parents[2]
FAKE_GRADER_APP = "tests.fake_llm:app"


@dataclass
class Grader:
    """The judge's backend for the demo: settings for the stack, a label for every verdict, a process to stop."""

    env: dict[str, str]
    label: str
    meaningful: bool
    proc: Proc | None = None
    max_conversations: int | None = None


def _grader(out_dir: Path, console: Console) -> Grader:
    """The user's LLM (RVPO_JUDGE_BASE_URL set), else the keyword stand-in, else an untrained tiny model."""
    from judge.settings import JudgeSettings

    judge = JudgeSettings()
    if "judge_base_url" in judge.model_fields_set:  # RVPO_JUDGE_BASE_URL is set
        return Grader({}, f"your LLM {judge.judge_model} at {judge.judge_base_url}", True)
    if (REPO / "tests" / "fake_llm.py").exists():
        port = free_port()
        proc = start_process(uvicorn_args(FAKE_GRADER_APP, "127.0.0.1", port), out_dir / "logs" / "grader.log",
                             cwd=REPO)
        wait_http(f"http://127.0.0.1:{port}/livez", proc, 60)
        console.print(Panel(
            "RVPO_JUDGE_BASE_URL is not set, so the judge grades with a KEYWORD STAND-IN (tests/fake_llm.py): a "
            "rubric criterion counts as met when its longest word occurs in the answer. It runs the whole "
            "grading path (judge service, OpenAI API, verdict parsing, cache, HealthBench scoring) in seconds, "
            "but it is no medical judgement. For real grades point RVPO_JUDGE_BASE_URL / RVPO_JUDGE_MODEL "
            "(and RVPO_JUDGE_API_KEY) at an OpenAI-compatible server.", title="judge grader", style="yellow"))
        return Grader({"RVPO_JUDGE_BASE_URL": f"http://127.0.0.1:{port}/v1", "RVPO_JUDGE_MODEL": "fake-judge"},
                      "keyword stand-in, not a medical judgement", False, proc)
    from rvpo.demo.tinymodel import build_tiny_qwen2, english_corpus

    path = build_tiny_qwen2(out_dir / "untrained-judge", corpus=english_corpus(), vocab_size=4096)
    console.print(Panel("RVPO_JUDGE_BASE_URL is not set and tests/ is absent: the judge uses a TINY UNTRAINED "
                        "local model on 4 conversations. The path runs, the verdicts mean nothing.",
                        title="judge grader", style="yellow"))
    # Small batches: on a CPU, a batch of long grader prompts materialises B x heads x T x T attention scores.
    return Grader({"RVPO_JUDGE_BACKEND": "local", "RVPO_JUDGE_LOCAL_MODEL_PATH": str(path),
                   "RVPO_JUDGE_MODEL": "untrained-tiny-qwen2", "RVPO_JUDGE_MAX_BATCH_SIZE": "4"},
                  "untrained tiny local model, verdicts meaningless", False, max_conversations=4)


def run_demo(out_dir: Path, console: Console | None = None) -> bool:
    """Run every stage; returns True when all succeeded. Each stage's verdict, outcome and timing go to
    report.json; the verdicts are printed again at the end."""
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"stages": {}, "started": time.time()}
    verdicts: list[tuple[bool, str]] = []
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
            passed, line = result.pop("verdict", (True, ""))
            seconds = round(time.monotonic() - t0, 1)
            report["stages"][name] = {"status": "ok" if passed else "failed", "seconds": seconds,
                                      "verdict": line, "result": result}
            if line:
                verdicts.append((passed, line))
                mark = "[green]✓[/green]" if passed else "[red]✗[/red]"
                console.print(f"{mark} {escape(line)}  ({seconds:.0f} s)", soft_wrap=True)
            ok = ok and passed
            return result
        except Exception as exc:  # noqa: BLE001 - a failed stage is reported, then the demo exits non-zero
            ok = False
            from rvpo.errors import describe

            what, fix = describe(exc)
            report["stages"][name] = {"status": "failed", "seconds": round(time.monotonic() - t0, 1),
                                      "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            verdicts.append((False, f"{name}: {what}"))
            console.print(f"[red]✗ stage {name} failed:[/red] {escape(what)}" + (f"\n  fix: {escape(fix)}" if fix
                                                                                else ""), soft_wrap=True)
            return None

    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so `finally` stops the stack on SIGTERM too
    grader = _grader(out_dir, console)
    report["judge_grader"] = grader.label
    stack = Stack(StackConfig(gateway_port=0, judge_port=0, rules_port=0, log_dir=out_dir / "logs",
                              env=grader.env))
    try:
        stage("1 start the stack", lambda: _start(stack, console))
        gateway = stack.urls.get("gateway", "")
        stage("2 score BFCL", lambda: _score_bfcl(gateway, out_dir, console))
        stage("3 grade HealthBench", lambda: _grade_healthbench(gateway, out_dir, console, grader))
        stage("4 RVPO training", lambda: _train(gateway, out_dir, console))
    finally:
        with console.status("5 stopping every process the demo started ..."):
            stack.stop()
            if grader.proc is not None:
                grader.proc.stop()
        report["stages"]["5 stop"] = {"status": "ok"}
        report["seconds"] = round(time.time() - report.pop("started"), 1)
        (out_dir / "report.json").write_text(json.dumps(json_safe(report), indent=2, default=str, allow_nan=False))
    console.rule("[bold]what the demo showed")
    for passed, line in verdicts:
        console.print(f"{'[green]✓[/green]' if passed else '[red]✗[/red]'} {escape(line)}", soft_wrap=True)
    console.print(f"report: {out_dir / 'report.json'}, curves: {out_dir / 'rewards.png'}  "
                  f"({'all stages ok' if ok else 'FAILED'}, {report['seconds']:.0f} s)", soft_wrap=True)
    return ok


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _start(stack: Stack, console: Console) -> dict:
    with console.status("starting redis, rules, judge, gateway and a Celery worker ..."):
        stack.start()
    ready, detail = stack.judge_ready()
    line = (f"stack up: gateway {stack.urls['gateway']}, judge {stack.urls['judge']}, rules {stack.urls['rules']}, "
            f"worker pid {stack.procs['worker'].pid}, redis {stack.env['RVPO_REDIS_URL']}"
            + ("" if ready else f"; the judge's grader does not answer ({detail})"))
    return {"urls": stack.urls, "redis": stack.env["RVPO_REDIS_URL"], "judge_ready": detail,
            "verdict": (ready, line)}


def _score(records: list[dict], gateway: str, console: Console) -> list[dict]:
    """Score through the gateway (token: RVPO_API_TOKEN); raises CLIError when a source scored nothing."""
    from rich.progress import Progress

    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        scored, _ = score_records(records, gateway, batch_size=64, progress=progress)
    return scored


def _score_bfcl(gateway: str, out_dir: Path, console: Console) -> dict:
    records = bfcl_demo_records()
    scored = _score(records, gateway, console)
    write_jsonl(out_dir / "bfcl_scored.jsonl", scored)
    summary = bfcl_summary(scored)
    table = Table(title=f"BFCL sample: {len(records)} completions through REST -> Celery -> rules "
                        f"(per item: {out_dir / 'bfcl_scored.jsonl'})")
    for col in ("completions (fault)", "valid", "BFCL error types", "rules channels < 1 (mean)"):
        table.add_column(col, overflow="fold")  # 80 columns in a pipe: wrap, never cut
    for row in bfcl_rows(summary):
        table.add_row(*row)
    console.print(table)
    console.print(f"[dim]{TOOLRL_SCALES}[/dim]", soft_wrap=True)
    return {"summary": summary, "verdict": bfcl_verdict(summary)}


def _grade_healthbench(gateway: str, out_dir: Path, console: Console, grader: Grader) -> dict:
    records = healthbench_demo_records()
    if grader.max_conversations:
        records = records[:2 * grader.max_conversations]  # ideal + truncated per conversation
    scored = _score(records, gateway, console)
    write_jsonl(out_dir / "healthbench_scored.jsonl", scored)
    summary = healthbench_summary(scored)
    table = Table(title=f"HealthBench sample, grader: {grader.label} (per item: "
                        f"{out_dir / 'healthbench_scored.jsonl'})")
    for col in ("answers", "score (clipped mean ± bootstrap std)", "conversations", "null verdicts"):
        table.add_column(col, overflow="fold")  # 80 columns in a pipe: wrap, never cut
    for variant, s in summary.items():
        table.add_row(variant, f"{s['score']:.3f} ± {s['score_bootstrap_std']:.3f}", str(s["n_samples"]),
                      f"{s['null_verdicts']}/{s['verdicts']}")
    console.print(table)
    keep = ("score", "score_bootstrap_std", "n_samples", "null_verdicts", "verdicts", "null_reasons", "axes")
    return {"grader": grader.label, "summary": {v: {k: s[k] for k in keep} for v, s in summary.items()},
            "verdict": healthbench_verdict(summary, grader.label)}


def _train(gateway: str, out_dir: Path, console: Console) -> dict:
    from rvpo.training import demo_training

    summary = demo_training(gateway, out_dir, console=console)
    return {**summary, "verdict": training_verdict(summary)}
