"""The `rvpo` command line: run the services, score files, evaluate, train, and the demo.

Every command that waits on something longer than a second shows a rich progress bar or status. Every command
checks what it depends on before it spends time, and a failure prints what went wrong and what fixes it in one
or two lines (``rvpo --debug ...`` shows the full traceback). Exit codes: rvpo/errors.py (0 all scored,
1 error, 2 usage, 3 some unscored, 4 none scored).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rvpo.errors import EXIT_ERROR, EXIT_NONE, STATUS_EXIT, describe

console = Console()
err_console = Console(stderr=True)
_debug = False


class _App(typer.Typer):
    """Typer app whose errors are one or two lines (what went wrong, what fixes it) unless ``--debug``."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:  # click's own errors (usage, --help, exit codes) never get here
            if _debug:
                raise
            what, fix = describe(exc)
            err_console.print(f"[red]error:[/red] {escape(what)}", soft_wrap=True)
            if fix:
                err_console.print(f"  fix: {escape(fix)}", soft_wrap=True)
            sys.exit(getattr(exc, "exit_code", EXIT_ERROR))


app = _App(help="RVPO reward services and trainer (arXiv 2605.05750).", no_args_is_help=True,
           pretty_exceptions_show_locals=False)


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error.")) -> None:
    """RVPO reward services and trainer (arXiv 2605.05750). Exit codes: 0 all scored, 1 error, 2 usage,
    3 some rewards unscored, 4 none scored."""
    global _debug
    _debug = debug


class Service(str, Enum):
    gateway = "gateway"
    judge = "judge"
    rules = "rules"


@app.command()
def serve(service: Service,
          host: str = typer.Option(None, help="Bind address; default RVPO_<SERVICE>_HOST (127.0.0.1)."),
          port: int = typer.Option(None, help="Port; default RVPO_<SERVICE>_PORT (8000 / 8001 / 8002)."),
          log_level: str = "info") -> None:
    """Serve one HTTP service (gateway, judge or rules) with uvicorn."""
    import uvicorn

    from contracts.processes import HTTP_SERVICES
    from rvpo.preflight import check_redis
    from rvpo.stack import bind_address

    if service is Service.gateway:
        check_redis(who="the gateway")
    elif service is Service.judge:
        from judge.settings import JudgeSettings

        if JudgeSettings().judge_cache_enabled:
            check_redis(who="the judge's verdict cache (RVPO_JUDGE_CACHE_ENABLED=false turns it off)")
    default_host, default_port = bind_address(service.value)
    uvicorn.run(HTTP_SERVICES[service.value][0], host=host or default_host, port=port or default_port,
                log_level=log_level)


@app.command()
def worker(concurrency: int = typer.Option(None, help="Prefork worker processes; default RVPO_WORKER_CONCURRENCY."),
           loglevel: str = "INFO") -> None:
    """Run a Celery worker that scores items through the judge and rules services."""
    from rvpo.preflight import check_redis

    check_redis(who="the worker (its broker)")
    from services.worker.celery_app import celery_app

    args = ["worker", f"--loglevel={loglevel}", "--pool=prefork"]
    celery_app.worker_main(args + ([f"--concurrency={concurrency}"] if concurrency else []))


@app.command()
def up(host: str = typer.Option(None, help="Bind address of every service; default each one's RVPO_*_HOST."),
       gateway_port: int = typer.Option(None, help="Default RVPO_GATEWAY_PORT (8000); 0 picks a free port."),
       judge_port: int = typer.Option(None, help="Default RVPO_JUDGE_PORT (8001); 0 picks a free port."),
       rules_port: int = typer.Option(None, help="Default RVPO_RULES_PORT (8002); 0 picks a free port."),
       worker_concurrency: int = typer.Option(None, help="Default RVPO_WORKER_CONCURRENCY."),
       log_dir: Path = Path("runs/stack-logs")) -> None:
    """Run the whole stack as local processes (Redis too when none is reachable) until Ctrl-C."""
    from rvpo.stack import Stack, StackConfig

    stack = Stack(StackConfig(host=host, gateway_port=gateway_port, judge_port=judge_port, rules_port=rules_port,
                              worker_concurrency=worker_concurrency, log_dir=log_dir))
    with console.status("starting redis, rules, judge, gateway and a worker ..."):
        stack.start()  # StackError (what is missing, how to provide it) is printed by _App
    table = Table(title="rvpo stack")
    table.add_column("service")
    table.add_column("url / pid")
    for name, url in stack.urls.items():
        table.add_row(name, url)
    own = " (a private redis-server: none answered at RVPO_REDIS_URL)" if "redis" in stack.procs else ""
    table.add_row("redis", stack.env["RVPO_REDIS_URL"] + own)
    table.add_row("worker", f"pid {stack.procs['worker'].pid}")
    console.print(table)
    ready, detail = stack.judge_ready()
    console.print(f"judge: {detail}" if ready else
                  f"[yellow]judge: {escape(detail)}[/yellow]\n[yellow]  rubric items will be null with a reason until "
                  "that LLM answers; for another one set RVPO_JUDGE_BASE_URL / RVPO_JUDGE_MODEL (or "
                  "RVPO_JUDGE_BACKEND=local with RVPO_JUDGE_LOCAL_MODEL_PATH) and restart `rvpo up`[/yellow]",
                  soft_wrap=True)
    console.print(f"gateway: {stack.urls['gateway']}  (export RVPO_GATEWAY_URL={stack.urls['gateway']} for other "
                  f"shells); logs in {log_dir}; Ctrl-C stops everything", soft_wrap=True)
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    # Ctrl-C (SIGINT) and SIGTERM both stop the stack, also when this process was started with SIGINT ignored
    # (a background job of a script or CI runner inherits SIG_IGN, and Python then never raises KeyboardInterrupt)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping:
            problem = stack.check()
            if problem:
                err_console.print(f"[red]error:[/red] {escape(problem)}; stopping the stack", soft_wrap=True)
                raise typer.Exit(EXIT_ERROR)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping ..."):
            stack.stop()
    console.print("stopped")


def _positive_seconds(option: str, value: float) -> float:
    """A finite number of seconds > 0 (click's ``min=`` lets NaN through: every comparison with it is false)."""
    if not (0 < value < float("inf")):
        raise typer.BadParameter(f"must be a finite number of seconds > 0, got {value}", param_hint=option)
    return value


@app.command()
def score(input: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL records with `completion`."),
          output: Path = typer.Option(..., "-o", "--output", help="Where to write one scored line per input."),
          gateway: str = typer.Option(None, help="Gateway base URL; default RVPO_GATEWAY_URL (http://127.0.0.1:8000)."),
          answers: Path = typer.Option(None, help="BFCL possible-answer JSONL to join by id."),
          batch_size: int = typer.Option(64, min=1, help="Items per scoring job."),
          job_timeout: float = typer.Option(600.0, help="Seconds to wait for each job (> 0).",
                                            callback=lambda v: _positive_seconds("--job-timeout", v)),
          keep_going: bool = typer.Option(False, help="Score every batch even when a source scored nothing.")) -> None:
    """Score HealthBench- or BFCL-format records through the gateway. Exit code 0 when every reward channel was
    scored, 3 when some are null (the reasons are counted), 4 when none was."""
    from rvpo.preflight import check_gateway
    from rvpo.scoring import load_records, score_file

    load_records(input, answers)  # a malformed file fails here, before anything is sent
    url = check_gateway(gateway)  # the token is RVPO_API_TOKEN (services.gateway.settings.GatewayClientSettings)
    with _progress() as progress:
        n, outcome = score_file(input, output, url, answers=answers, batch_size=batch_size,
                                job_timeout_s=job_timeout, progress=progress, keep_going=keep_going)
    colour = {"done": "green", "partial": "yellow", "failed": "red"}[outcome.status]
    console.print(f"wrote {n} lines to {output}; [{colour}]{escape(outcome.line())}[/{colour}]", soft_wrap=True)
    raise typer.Exit(STATUS_EXIT[outcome.status])


class Suite(str, Enum):
    healthbench = "healthbench"
    bfcl = "bfcl"


@app.command("eval")
def eval_(suite: Suite, scored: Path = typer.Argument(..., exists=True, dir_okay=False),
          json_out: str = typer.Option(None, "--json", help="Write the summary as JSON to this file ('-': stdout, "
                                       "instead of the tables).")) -> None:
    """Summarize a scored file: HealthBench score (clipped mean, bootstrap std, per axis / theme) or BFCL accuracy.
    Exit code 0 when every verdict is there, 3 when some are missing (the reasons are counted), 4 when none is."""
    from rvpo.evaluation import bfcl_summary, healthbench_summary, print_summary, read_scored, summary_outcome
    from rvpo.records import json_safe

    rows = read_scored(scored, suite.value)
    summary = healthbench_summary(rows) if suite is Suite.healthbench else bfcl_summary(rows)
    status, line = summary_outcome(suite.value, summary)
    text = json.dumps(json_safe({"status": status, "variants": summary}), indent=2, allow_nan=False)
    out = err_console if json_out == "-" else console
    if json_out == "-":
        print(text)
    else:
        print_summary(out, suite.value, summary)
        if json_out:
            Path(json_out).write_text(text + "\n")
    colour = {"done": "green", "partial": "yellow", "failed": "red"}[status]
    out.print(f"[{colour}]{escape(line)}[/{colour}]" + (f"; summary in {json_out}" if json_out not in (None, "-")
                                                         else ""), soft_wrap=True)
    raise typer.Exit(STATUS_EXIT[status])


@app.command()
def train(config: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML training config."),
          max_steps: int = typer.Option(None, min=1, help="RL steps (overrides trl.max_steps).")) -> None:
    """RVPOTrainer with rewards from the gateway (or in-process rules), as the YAML config says. Exit code 4 when
    training stopped because its rewards came back unscored."""
    from rvpo.training import run_from_yaml

    report = run_from_yaml(config, console=console, max_steps=max_steps)
    console.print(f"run log: {report['log_path']}  curves: {report['plot_path']}")
    if report["stopped"]:
        hint = ("is the gateway still up (`rvpo up`)? `rvpo/nan_reasons` in the log counts the reasons"
                if "gateway" in report["stopped"] else "the reasons above say which source failed")
        err_console.print(f"  fix: {hint}", soft_wrap=True)
        raise typer.Exit(EXIT_NONE)


@app.command()
def demo(out_dir: Path = typer.Option(Path("runs/demo"), help="Where the report and plot go.")) -> None:
    """The main job: start the stack, score real BFCL and HealthBench data, run a short RVPO training."""
    from rvpo.demo.run import run_demo

    ok = run_demo(out_dir, console=console)
    raise typer.Exit(0 if ok else EXIT_ERROR)


@app.command()
def settings(markdown: bool = typer.Option(False, help="Print the defaults as the README's Markdown table.")) -> None:
    """Every RVPO_* environment variable: the value in effect here, whether it is set or the default, its part
    and meaning."""
    from rvpo.settings_table import effective_rows, markdown_table

    if markdown:
        print(markdown_table())
        return
    rows = list(effective_rows())
    width = max(len(r[0]) for r in rows)
    for env, part, value, is_set, meaning in rows:
        origin = "set" if is_set else "default"
        print(f"{env:<{width}} = {value}  ({origin}; {part})")
        print(f"{'':<4}{meaning}")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


if __name__ == "__main__":
    app()
