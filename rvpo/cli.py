"""The `rvpo` command line: run the services, score files, evaluate, train, and the demo.

Every command that waits on something longer than a second shows a rich progress bar or status.
"""

from __future__ import annotations

import json
import signal
import time
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="RVPO reward services and trainer (arXiv 2605.05750).", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
console = Console()


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
    from rvpo.stack import bind_address

    default_host, default_port = bind_address(service.value)
    uvicorn.run(HTTP_SERVICES[service.value][0], host=host or default_host, port=port or default_port,
                log_level=log_level)


@app.command()
def worker(concurrency: int = typer.Option(None, help="Prefork worker processes; default RVPO_WORKER_CONCURRENCY."),
           loglevel: str = "INFO") -> None:
    """Run a Celery worker that scores items through the judge and rules services."""
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
    from rvpo.stack import Stack, StackConfig, StackError

    stack = Stack(StackConfig(host=host, gateway_port=gateway_port, judge_port=judge_port, rules_port=rules_port,
                              worker_concurrency=worker_concurrency, log_dir=log_dir))
    try:
        with console.status("starting redis, rules, judge, gateway and a worker ..."):
            stack.start()
    except StackError as exc:
        console.print(f"[red]could not start the stack:[/red] {exc}")
        raise typer.Exit(1) from exc
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
    if not ready:
        console.print(f"[yellow]the judge's LLM backend is not reachable yet ({detail}); rubric items will be NaN "
                      "with a reason until it is (RVPO_JUDGE_BASE_URL)[/yellow]")
    console.print(f"logs in {log_dir}; Ctrl-C stops everything")
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            dead = [n for n, p in stack.procs.items() if p.popen.poll() is not None]
            if dead:
                console.print(f"[red]{', '.join(dead)} exited[/red]; see {log_dir}")
                raise typer.Exit(1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping ..."):
            stack.stop()
    console.print("stopped")


@app.command()
def score(input: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL records with `completion`."),
          output: Path = typer.Option(..., "-o", "--output", help="Where to write one scored line per input."),
          gateway: str = typer.Option(None, help="Gateway base URL; default RVPO_GATEWAY_URL (http://127.0.0.1:8000)."),
          answers: Path = typer.Option(None, help="BFCL possible-answer JSONL to join by id."),
          batch_size: int = typer.Option(64, help="Items per scoring job."),
          job_timeout: float = typer.Option(600.0, help="Seconds to wait for each job.")) -> None:
    """Score HealthBench- or BFCL-format records through the gateway."""
    from rvpo.scoring import score_file

    with _progress() as progress:  # the token is RVPO_API_TOKEN (services.gateway.settings.GatewayClientSettings)
        n, statuses = score_file(input, output, gateway, answers=answers, batch_size=batch_size,
                                 job_timeout_s=job_timeout, progress=progress)
    console.print(f"wrote {n} lines to {output} (jobs: {statuses})")


class Suite(str, Enum):
    healthbench = "healthbench"
    bfcl = "bfcl"


@app.command("eval")
def eval_(suite: Suite, scored: Path = typer.Argument(..., exists=True, dir_okay=False),
          json_out: Path = typer.Option(None, "--json", help="Also write the summary as JSON here.")) -> None:
    """Summarize a scored file: HealthBench score (clipped mean, bootstrap std, per axis / theme) or BFCL accuracy."""
    from rvpo.evaluation import bfcl_summary, healthbench_summary, print_summary
    from rvpo.records import read_jsonl

    rows = list(read_jsonl(scored))
    summary = healthbench_summary(rows) if suite is Suite.healthbench else bfcl_summary(rows)
    print_summary(console, suite.value, summary)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))
    else:
        console.print_json(json.dumps(summary))


@app.command()
def train(config: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML training config.")) -> None:
    """RVPOTrainer with rewards from the gateway (or in-process rules), as the YAML config says."""
    from rvpo.training import run_from_yaml

    report = run_from_yaml(config, console=console)
    console.print(f"run log: {report['log_path']}  curves: {report['plot_path']}")


@app.command()
def demo(out_dir: Path = typer.Option(Path("runs/demo"), help="Where the report and plot go.")) -> None:
    """The main job: start the stack, score real BFCL and HealthBench data, run a short RVPO training."""
    from rvpo.demo.run import run_demo

    ok = run_demo(out_dir, console=console)
    raise typer.Exit(0 if ok else 1)


@app.command()
def settings(markdown: bool = typer.Option(False, help="Print the table as Markdown.")) -> None:
    """List every RVPO_* environment variable with its default and meaning."""
    from rvpo.settings_table import env_rows, markdown_table

    if markdown:
        print(markdown_table())
        return
    table = Table(title="RVPO_* settings")
    for col in ("variable", "part", "default", "meaning"):
        table.add_column(col)
    for row in env_rows():
        table.add_row(*row)
    console.print(table)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


if __name__ == "__main__":
    app()
