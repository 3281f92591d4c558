"""Run the rubric-regime constraint-neglect benchmark end to end (one command):

    .venv/bin/python -m benchmarks.rubric_neglect.run            # full run (2 arms x 6 methods x 8 seeds)
    .venv/bin/python -m benchmarks.rubric_neglect.run --quick    # smoke run (< 1 min)

Phases: the task (prompts, rubrics); stage-1 base per seed; stage-2 warm start per (seed, arm), evaluated and
checked against the pre-registered targets (a warm start off target is left out of every comparison, with all its
methods); one RL run per (arm, seed, method) with `RVPOTrainer`; the analysis (analysis.py). Jobs run in
`--workers` spawned processes with one torch thread each (each run is deterministic whatever the load). Prints
the headline JSON on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/rubric_neglect/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import typer

from benchmarks.procpool import make_pool, setup_worker
from benchmarks.rubric_neglect.train import METHOD_SPECS

HERE = Path(__file__).resolve().parent
ALL_METHODS = list(METHOD_SPECS)
ALL_ARMS = ["protect", "learn"]


@dataclass(frozen=True)
class Config:
    """Every knob of the experiment (the full-run defaults are the fixed design; see README.md)."""

    seeds: tuple[int, ...] = tuple(range(12))  # candidates, drawn in order (see n_usable)
    n_usable: int = 8  # warm starts on target per arm that enter the comparison (0: every seed)
    arms: tuple[str, ...] = tuple(ALL_ARMS)
    methods: tuple[str, ...] = tuple(ALL_METHODS)
    n_sft_rows: int = 20_000
    n_rl_rows: int = 2_048
    n_eval_rows: int = 128
    data_seed: int = 0
    hidden_size: int = 128
    num_layers: int = 2
    base_steps: int = 300
    base_lr: float = 3e-3
    warm_steps: int = 200
    warm_lr: float = 1e-3
    warm_batch_size: int = 32
    sft_batch_size: int = 64
    rl_steps: int = 120
    prompts_per_step: int = 2
    num_generations: int = 16
    rl_lr: float = 5e-4
    max_completion_length: int = 16
    eval_every: int = 20
    eval_samples: int = 4
    eval_seed: int = 1234
    enforce_targets: bool = True
    workers: int = 2
    threads: int = 1


QUICK = Config(seeds=(0,), n_usable=1, methods=("grpo", "gdpo_mean", "rvpo", "rvpo_dropconst"), n_sft_rows=256, n_rl_rows=32,
               n_eval_rows=8, hidden_size=32, base_steps=20, warm_steps=5, sft_batch_size=16, warm_batch_size=16, rl_steps=2,
               prompts_per_step=1, eval_every=1, eval_samples=2, enforce_targets=False, workers=1)


def splits(cfg: Config) -> tuple[list[dict], list[dict], list[dict]]:
    """(SFT rows, RL rows, held-out eval rows): distinct prompts, the same for every seed, arm and method."""
    from benchmarks.rubric_neglect.task import make_rows

    rows = make_rows(cfg.n_sft_rows + cfg.n_rl_rows + cfg.n_eval_rows, cfg.data_seed)
    a, b = cfg.n_sft_rows, cfg.n_sft_rows + cfg.n_rl_rows
    return rows[:a], rows[a:b], rows[b:]


def _base_job(cfg: Config, seed: int, work: str) -> dict:
    setup_worker(cfg.threads)
    from benchmarks.rubric_neglect.policy import build_base

    sft, _, _ = splits(cfg)
    info = build_base(Path(work) / f"base_seed{seed}", sft, seed=seed, hidden_size=cfg.hidden_size,
                      num_layers=cfg.num_layers, steps=cfg.base_steps, batch_size=cfg.sft_batch_size, lr=cfg.base_lr)
    return {"seed": seed, "load_avg": os.getloadavg()[0], **info}


def _warm_job(cfg: Config, seed: int, arm: str, base_dir: str, work: str) -> dict:
    setup_worker(cfg.threads)
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from benchmarks.rubric_neglect.evaluate import evaluate
    from benchmarks.rubric_neglect.policy import check_targets, warm_start

    sft, _, evaluation = splits(cfg)
    info = warm_start(base_dir, Path(work) / f"warm_{arm}_seed{seed}", sft, arm, seed=seed, steps=cfg.warm_steps,
                      batch_size=cfg.warm_batch_size, lr=cfg.warm_lr)
    held_out = evaluate(Qwen2ForCausalLM.from_pretrained(info["path"]), AutoTokenizer.from_pretrained(info["path"]),
                        evaluation, samples_per_prompt=cfg.eval_samples, max_new_tokens=cfg.max_completion_length,
                        seed=cfg.eval_seed)
    return {"seed": seed, "arm": arm, **info, "held_out": held_out, "check": check_targets(arm, held_out),
            "load_avg": os.getloadavg()[0]}


def _rl_job(cfg: Config, arm: str, method: str, seed: int, warm_dir: str, work: str) -> dict:
    setup_worker(cfg.threads)
    from benchmarks.rubric_neglect.train import rl_run

    _, rl_rows, evaluation = splits(cfg)
    name = f"{arm}_{method}_seed{seed}"
    res = rl_run(method, seed, warm_dir, rl_rows, evaluation, out_dir=Path(work) / "trl" / name,
                 steps=cfg.rl_steps, prompts_per_step=cfg.prompts_per_step, num_generations=cfg.num_generations,
                 learning_rate=cfg.rl_lr, max_completion_length=cfg.max_completion_length,
                 eval_every=cfg.eval_every, eval_samples=cfg.eval_samples, eval_seed=cfg.eval_seed)
    res.update(arm=arm, load_avg=os.getloadavg()[0])
    (Path(work) / "runs" / f"{name}.json").write_text(json.dumps(res))
    return res


def run(cfg: Config, out_dir: Path, markdown: Path | None, work_dir: Path | None = None,
        command: str = "python -m benchmarks.rubric_neglect.run", log=print) -> dict[str, Any]:
    """Run the whole benchmark with `cfg`; outputs into `out_dir` (and RESULTS.md at `markdown` when given).
    Returns the headline dict."""
    from benchmarks.rubric_neglect import analysis

    t0 = time.perf_counter()
    load0 = os.getloadavg()
    work = Path(work_dir or tempfile.mkdtemp(prefix="rubric_neglect_"))
    (work / "runs").mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}; load average {load0[0]:.2f}")
    n_usable = cfg.n_usable or len(cfg.seeds)
    bases: dict[int, dict] = {}
    warm: dict[tuple[str, int], dict] = {}
    usable: dict[str, list[int]] = {a: [] for a in cfg.arms}
    seconds = {"bases": 0.0, "warm_starts": 0.0}
    with make_pool(cfg.workers) as pool:
        # Seeds are drawn in order until every arm has n_usable warm starts on target (or the candidates run out):
        # the rule looks at the warm-start checks only, never at an RL outcome.
        taken = 0
        while taken < len(cfg.seeds) and any(len(u) < n_usable for u in usable.values()):
            need = max(n_usable - len(u) for u in usable.values())
            batch = list(cfg.seeds[taken:taken + need])
            taken += len(batch)
            t = time.perf_counter()
            futures = {s: pool.submit(_base_job, cfg, s, str(work)) for s in batch}
            for s, f in futures.items():
                bases[s] = f.result()
                log(f"base seed {s}: {bases[s]['seconds']:.0f}s, loss {bases[s]['final_loss']:.3f}")
            seconds["bases"] += time.perf_counter() - t
            t = time.perf_counter()
            arms = [a for a in cfg.arms if len(usable[a]) < n_usable]
            futures = {(a, s): pool.submit(_warm_job, cfg, s, a, bases[s]["path"], str(work))
                       for s in batch for a in arms}
            for (a, s), f in futures.items():
                w = warm[(a, s)] = f.result()
                checks = ", ".join(f"{m} {c['measured']:.3f} (target {c['target']:.2f})"
                                   for m, c in w["check"]["checks"].items())
                log(f"warm {a} seed {s}: {w['seconds']:.0f}s, {'ON' if w['check']['ok'] else 'OFF'} target: "
                    f"{checks}")
                if (w["check"]["ok"] or not cfg.enforce_targets) and len(usable[a]) < n_usable:
                    usable[a].append(s)
            seconds["warm_starts"] += time.perf_counter() - t
        t_warm = time.perf_counter()
        log(f"seeds used: {usable}")
        usable = [(a, s) for a in cfg.arms for s in usable[a]]
        jobs = [(a, m, s) for a, s in usable for m in cfg.methods]
        futures = {j: pool.submit(_rl_job, cfg, *j, warm[(j[0], j[2])]["path"], str(work)) for j in jobs}
        runs = []
        for (a, m, s), f in futures.items():
            r = f.result()
            e0, e1 = r["evals"][0], r["evals"][-1]
            log(f"{a:>7} {m:>14} seed {s}: {r['seconds']:.0f}s, true {e0['true_score']:.3f} -> "
                f"{e1['true_score']:.3f}, bottleneck {e0['bottleneck_pass']:.3f} -> {e1['bottleneck_pass']:.3f}")
            runs.append(r)
    t_rl = time.perf_counter()
    meta = {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "config": asdict(cfg), "load_avg_start": list(load0), "load_avg_end": list(os.getloadavg()),
            "minutes": {"bases": seconds["bases"] / 60, "warm_starts": seconds["warm_starts"] / 60,
                        "rl": (t_rl - t_warm) / 60},
            "bases": bases, "warm_starts": [dict(w) for w in warm.values()],
            "seeds_used": {a: [s for b, s in usable if b == a] for a in cfg.arms},
            "excluded_warm_starts": [[a, s] for (a, s), w in warm.items() if not w["check"]["ok"]]}
    (work / "meta.json").write_text(json.dumps(meta, default=float))
    result = analysis.write_outputs(runs, meta, out_dir, markdown, t_start=t0)
    (work / "meta.json").write_text(json.dumps(meta, default=float))  # now with the total wall time
    result["out"] = str(out_dir)
    result["work_dir"] = str(work)
    return result


def reanalyze(work_dir: Path, out_dir: Path, markdown: Path | None) -> dict[str, Any]:
    """Rebuild every output from a finished run's `work_dir` (meta.json and runs/*.json), no training."""
    from benchmarks.rubric_neglect import analysis

    meta = json.loads((work_dir / "meta.json").read_text())
    runs = [json.loads(p.read_text()) for p in sorted((work_dir / "runs").glob("*.json"))]
    return analysis.write_outputs(runs, meta, out_dir, markdown, t_start=None)


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 1 seed, 4 methods, 2 RL steps, tiny model."),
    out: Path | None = typer.Option(None, help="Results folder (default: results/ here; a temp dir with --quick)."),
    markdown: Path | None = typer.Option(None, help="RESULTS.md path (default: RESULTS.md here; none with --quick)."),
    work_dir: Path | None = typer.Option(None, help="Scratch folder for models and per-run JSON (default: temp)."),
    workers: int | None = typer.Option(None, help="Worker processes (default 2; 1 with --quick)."),
    seeds: str | None = typer.Option(None, help="Comma-separated candidate seeds, e.g. 0,1,2 (default: all of "
                                     "them must be on target, unless --n-usable)."),
    n_usable: int | None = typer.Option(None, "--n-usable", help="On-target warm starts per arm to use; seeds "
                                         "are drawn in order until each arm has them."),
    arms: str | None = typer.Option(None, help=f"Comma-separated subset of {','.join(ALL_ARMS)}."),
    methods: str | None = typer.Option(None, help=f"Comma-separated subset of {','.join(ALL_METHODS)}."),
    steps: int | None = typer.Option(None, help="RL steps per run (overrides the preset)."),
    reanalyze_dir: Path | None = typer.Option(None, "--reanalyze", help="Only rebuild the outputs from the "
                                               "per-run files of a finished run's --work-dir (no training)."),
) -> None:
    """Run the benchmark and print the headline JSON."""
    cfg = QUICK if quick else Config()
    for name, value, allowed in (("methods", methods, ALL_METHODS), ("arms", arms, ALL_ARMS)):
        if value:
            bad = [v for v in value.split(",") if v not in allowed]
            if bad:
                raise typer.BadParameter(f"unknown {name} {bad}; choose from {allowed}", param_hint=f"--{name}")
            cfg = replace(cfg, **{name: tuple(value.split(","))})
    if seeds:
        cfg = replace(cfg, seeds=tuple(int(s) for s in seeds.split(",")), n_usable=0)
    if n_usable is not None:
        cfg = replace(cfg, n_usable=n_usable)
    if workers is not None:
        cfg = replace(cfg, workers=workers)
    if steps is not None:
        cfg = replace(cfg, rl_steps=steps)
    if quick:
        out = out or Path(tempfile.mkdtemp(prefix="rubric_neglect_quick_"))
    else:
        out = out or HERE / "results"
        markdown = markdown or HERE / "RESULTS.md"
    if reanalyze_dir is not None:
        result = reanalyze(reanalyze_dir, out, markdown)
    else:
        command = "python -m benchmarks.rubric_neglect.run" + (" --quick" if quick else "")
        result = run(cfg, out, markdown, work_dir, command=command,
                     log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    app()
