"""Run the constraint-neglect benchmark end to end (one command):

    .venv/bin/python -m benchmarks.constraint_neglect.run            # full run (5 seeds x 6 methods)
    .venv/bin/python -m benchmarks.constraint_neglect.run --quick    # smoke run (1 seed, 2 methods, 2 steps)

Steps: build the task from the BFCL docs; one warm start per seed (shared by every method); one RL run per
(method, seed) with `RVPOTrainer`; aggregate (tables, paired tests, curves PNG, RESULTS.md); the numeric study on
the recorded reward matrices. Prints the summary JSON on stdout. Runs are spread over `--workers` processes with
one torch thread each (deterministic per run whatever the load).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/constraint_neglect/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import typer

from benchmarks.procpool import make_pool, setup_worker

HERE = Path(__file__).resolve().parent
ALL_METHODS = ["grpo", "gdpo", "rvpo_k1", "rvpo_linear", "variance_penalty", "min"]
BOTTLENECK_NAME = "rules/arg_values"


@dataclass(frozen=True)
class Config:
    """Every knob of the experiment (the full-run defaults are the fixed design; see README.md)."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    methods: tuple[str, ...] = tuple(ALL_METHODS)
    n_functions: int = 8
    n_train_per_fn: int = 32
    n_eval_per_fn: int = 8
    value_low: int = 10
    value_high: int = 99
    data_seed: int = 0
    base_seed: int = 0
    base_steps: int = 400
    p_wrong_value: float = 0.5
    hidden_size: int = 128
    num_layers: int = 2
    sft_steps: int = 100
    sft_batch_size: int = 32
    sft_lr: float = 3e-3
    rl_steps: int = 80
    prompts_per_step: int = 4
    num_generations: int = 8
    rl_lr: float = 5e-4
    max_completion_length: int = 48
    eval_every: int = 10
    eval_samples: int = 4
    eval_seed: int = 1234
    record_rewards: bool = True
    workers: int = 2
    threads: int = 1


QUICK = Config(seeds=(0,), methods=("gdpo", "rvpo_k1"), n_train_per_fn=4, n_eval_per_fn=1, hidden_size=32,
               base_steps=120, sft_steps=10, sft_batch_size=16, sft_lr=1e-2, rl_steps=2, prompts_per_step=2, num_generations=4,
               max_completion_length=40, eval_every=1, eval_samples=2, workers=1)


def _task(cfg: Config):
    from rvpo.demo import tooltask as task

    functions = task.load_functions(cfg.n_functions)
    train, evaluation = task.make_splits(functions, cfg.n_train_per_fn, cfg.n_eval_per_fn, low=cfg.value_low,
                                         high=cfg.value_high, seed=cfg.data_seed)
    return functions, train, evaluation


def _base_job(cfg: Config, work: str) -> dict:
    setup_worker(cfg.threads)
    from rvpo.demo import tooltask as task
    from rvpo.demo.warmstart import build_base

    functions, train, evaluation = _task(cfg)
    pairs = task.sft_pairs(train, functions, cfg.base_steps * cfg.sft_batch_size, seed=cfg.base_seed,
                           p_wrong_value=0.0, low=cfg.value_low, high=cfg.value_high)
    info = build_base(Path(work) / "base", task.tokenizer_corpus(functions, train + evaluation), pairs,
                      seed=cfg.base_seed, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                      steps=cfg.base_steps, batch_size=cfg.sft_batch_size, lr=cfg.sft_lr)
    return {"path": info["path"], "seconds": info["seconds"], "final_loss": info["losses"][-1],
            "held_out": _held_out(info["path"], cfg, evaluation)}


def _warm_job(cfg: Config, seed: int, base_dir: str, work: str) -> dict:
    setup_worker(cfg.threads)
    from rvpo.demo import tooltask as task
    from rvpo.demo.warmstart import finetune

    functions, train, evaluation = _task(cfg)
    pairs = task.sft_pairs(train, functions, cfg.sft_steps * cfg.sft_batch_size, seed=seed,
                           p_wrong_value=cfg.p_wrong_value, low=cfg.value_low, high=cfg.value_high)
    info = finetune(base_dir, Path(work) / f"warm_seed{seed}", pairs, seed=seed, steps=cfg.sft_steps,
                    batch_size=cfg.sft_batch_size, lr=cfg.sft_lr)
    # what the demonstrations themselves score (the warm start imitates this mixture)
    demo_scores = _score_demos(pairs[:256], train, functions)
    return {"seed": seed, "path": info["path"], "seconds": info["seconds"], "final_loss": info["losses"][-1],
            "demo_pass": demo_scores}


def _held_out(path: str, cfg: Config, evaluation: list[dict]) -> dict:
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from benchmarks.constraint_neglect.evaluate import evaluate

    res = evaluate(Qwen2ForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), evaluation,
                   samples_per_prompt=cfg.eval_samples, max_new_tokens=cfg.max_completion_length, seed=cfg.eval_seed)
    return {k: v for k, v in res.items() if k.startswith("pass/")}


def _score_demos(pairs, train, functions) -> dict:
    from benchmarks.constraint_neglect.evaluate import score_rows, summarize

    by_prompt = {r["prompt"][0]["content"]: r for r in train}
    rows = [by_prompt[p] for p, _ in pairs]
    s = summarize(score_rows(rows, [[c] for _, c in pairs]))
    return {k: v for k, v in s.items() if k.startswith("pass/")}


def _rl_job(cfg: Config, method: str, seed: int, warm_dir: str, work: str) -> dict:
    setup_worker(cfg.threads)
    from benchmarks.constraint_neglect.train import rl_run

    _, train, evaluation = _task(cfg)
    out = Path(work) / "runs" / f"{method}_seed{seed}"
    res = rl_run(method, seed, warm_dir, train, evaluation, out_dir=out, steps=cfg.rl_steps,
                 prompts_per_step=cfg.prompts_per_step, num_generations=cfg.num_generations,
                 learning_rate=cfg.rl_lr, max_completion_length=cfg.max_completion_length,
                 eval_every=cfg.eval_every, eval_samples=cfg.eval_samples, eval_seed=cfg.eval_seed,
                 record_rewards=cfg.record_rewards)
    (out.parent / f"{method}_seed{seed}.json").write_text(json.dumps(res))
    return res


def run(cfg: Config, out_dir: Path, markdown: Path | None, work_dir: Path | None = None,
        command: str = "python -m benchmarks.constraint_neglect.run", log=print) -> dict[str, Any]:
    """Run the whole benchmark with `cfg`; write results.json, curves.png, taylor.json/png, reward_matrices.npz
    into `out_dir` and RESULTS.md to `markdown` (when given). Returns the summary dict."""
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir or tempfile.mkdtemp(prefix="constraint_neglect_"))
    (work / "runs").mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}")
    _, train, evaluation = _task(cfg)
    with make_pool(cfg.workers) as pool:
        base = pool.submit(_base_job, cfg, str(work)).result()
        log(f"stage-1 base: {base['seconds']:.0f}s, loss {base['final_loss']:.3f}, held-out pass "
            f"{ {k.split('/')[-1]: round(v, 2) for k, v in base['held_out'].items()} }")
        warm = {s: pool.submit(_warm_job, cfg, s, base["path"], str(work)) for s in cfg.seeds}
        warm = {s: f.result() for s, f in warm.items()}
        for s, w in warm.items():
            log(f"warm start seed {s}: {w['seconds']:.0f}s, loss {w['final_loss']:.3f}, demo pass "
                f"{ {k.split('/')[-1]: round(v, 2) for k, v in w['demo_pass'].items()} }")
        jobs = [(m, s) for s in cfg.seeds for m in cfg.methods]
        futures = {(m, s): pool.submit(_rl_job, cfg, m, s, warm[s]["path"], str(work)) for m, s in jobs}
        runs = []
        for (m, s), f in futures.items():
            r = f.result()
            last = r["evals"][-1]
            log(f"{m:>16} seed {s}: {r['seconds']:.0f}s, bottleneck {r['evals'][0]['bottleneck_pass']:.3f} -> "
                f"{last['bottleneck_pass']:.3f}, all {last['pass/all']:.3f}")
            runs.append(r)
    meta = {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_minutes_training": (time.perf_counter() - t0) / 60, "workers": cfg.workers,
            "threads": cfg.threads, "seeds": list(cfg.seeds), "methods": list(cfg.methods), "steps": cfg.rl_steps,
            "eval_every": cfg.eval_every, "n_eval_prompts": len(evaluation), "n_train_prompts": len(train),
            "eval_samples": cfg.eval_samples, "num_generations": cfg.num_generations, "config": asdict(cfg),
            "base": base, "warm_starts": warm}
    (work / "meta.json").write_text(json.dumps(meta))
    result = write_outputs(runs, meta, out_dir, markdown)
    meta["wall_minutes"] = (time.perf_counter() - t0) / 60
    _rewrite_meta(out_dir, markdown, meta, result)
    return {"meta": {k: v for k, v in meta.items() if k != "config"}, "summary": _headline(result["summary"])}


def write_outputs(runs: list[dict], meta: dict, out_dir: Path, markdown: Path | None) -> dict[str, Any]:
    """Analysis of finished runs: results.json (compact), curves.png, reward_matrices.npz, taylor.json/png and
    RESULTS.md. Returns {"summary", "taylor", "mass"}."""
    import numpy as np

    from benchmarks.constraint_neglect import advantage_mass, analysis, taylor

    out_dir.mkdir(parents=True, exist_ok=True)
    methods = [m for m in meta["methods"] if any(r["method"] == m for r in runs)]
    summary = analysis.summarize_runs(runs, methods)
    analysis.plot_curves(runs, methods, out_dir / "curves.png",
                         title="held-out pass rate per channel (mean over seeds, band = min..max)")
    batches, names = [], []
    for r in runs:
        if r.get("reward_batches"):
            batches.append(np.array([b["rewards"] for b in r["reward_batches"]], dtype=np.float32))
            names.append(f"{r['method']}_seed{r['seed']}")
    study = mass = None
    if batches:
        np.savez_compressed(out_dir / "reward_matrices.npz", **dict(zip(names, batches)))
        flat = [b for arr in batches for b in arr]
        ks = sorted({float(k) for k in np.round(np.logspace(-3, 1, 13), 6)} | {0.1, 0.5, 1.0, 2.0, 5.0})
        study = taylor.study(flat, meta["num_generations"], runs[0]["channels"], ks)
        (out_dir / "taylor.json").write_text(json.dumps(study, indent=1))
        taylor.plot(study, out_dir / "taylor.png")
        mass = advantage_mass.study(flat, meta["num_generations"], runs[0]["channels"].index(BOTTLENECK_NAME))
        (out_dir / "advantage_mass.json").write_text(json.dumps(mass, indent=1))
    result = {"summary": summary, "taylor": study, "mass": mass}
    _rewrite_meta(out_dir, markdown, meta, result, runs)
    return result


def _rewrite_meta(out_dir: Path, markdown: Path | None, meta: dict, result: dict, runs: list[dict] | None = None):
    from benchmarks.constraint_neglect import analysis

    path = out_dir / "results.json"
    if runs is None:
        runs = json.loads(path.read_text())["runs"]
    else:
        runs = [_compact(r) for r in runs]
    path.write_text(json.dumps(_round({"meta": meta, "summary": result["summary"], "runs": runs})))
    if markdown is not None:
        markdown.write_text(analysis.results_markdown(result["summary"], meta, result["taylor"], result["mass"]))


def _compact(run: dict) -> dict:
    """A run without its reward matrices (saved in the npz: every per-channel training reward is there), its TRL
    log as columns of the scalars the matrices do not give."""
    log = run["train_log"]
    keys = [k for k in ("step", "loss", "entropy", "completions/mean_length", "rvpo/risk", "rvpo/advantage_std",
                        "rvpo/bottleneck_reward", "rvpo/disagreement") if any(k in row for row in log)]
    columns = {k: [row.get(k) for row in log] for k in keys}
    return {**{k: v for k, v in run.items() if k not in ("reward_batches", "train_log")}, "train_log": columns}


def _round(obj, digits: int = 5):
    if isinstance(obj, float):
        return obj if not math.isfinite(obj) else float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v, digits) for v in obj]
    return obj


def reanalyze(work_dir: Path, out_dir: Path, markdown: Path | None) -> dict[str, Any]:
    """Rebuild every output from the per-run JSON files a finished run left in `work_dir` (no training); the meta
    (configuration, warm-start scores, wall time) comes from `work_dir/meta.json`, else from the existing
    `out_dir/results.json`. Raises FileNotFoundError when neither exists."""
    meta_path = work_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else \
        json.loads((out_dir / "results.json").read_text())["meta"]
    meta.setdefault("methods", meta.get("config", {}).get("methods", ALL_METHODS))
    meta.setdefault("num_generations", meta.get("config", {}).get("num_generations", 8))
    order = {m: i for i, m in enumerate(meta["methods"])}
    runs = [json.loads(p.read_text()) for p in sorted((work_dir / "runs").glob("*_seed*.json"))]
    runs.sort(key=lambda r: (r["seed"], order.get(r["method"], 99)))
    result = write_outputs(runs, meta, out_dir, markdown)
    return {"meta": {k: v for k, v in meta.items() if k != "config"}, "summary": _headline(result["summary"])}


def _headline(summary: dict) -> dict:
    out = {"bottleneck_final": {}, "bottleneck_best": {}, "tests": {}}
    for m, row in summary["methods"].items():
        out["bottleneck_final"][m] = round(row["bottleneck"]["final_mean"], 4)
        out["bottleneck_best"][m] = round(row["bottleneck"]["best_mean"], 4)
    for name, t in summary["tests"].items():
        out["tests"][name] = {at: {"mean_diff": round(t[at]["mean_diff"], 4), "wilcoxon_p": t[at]["wilcoxon_p"],
                                   "ttest_p": t[at]["ttest_p"]} for at in ("final", "best")}
    return out


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 1 seed, 2 methods, 2 RL steps, tiny model."),
    out: Path | None = typer.Option(None, help="Results folder (default: results/ here; a temp dir with --quick)."),
    markdown: Path | None = typer.Option(None, help="RESULTS.md path (default: RESULTS.md here; none with --quick)."),
    work_dir: Path | None = typer.Option(None, help="Scratch folder for models and per-run JSON (default: temp)."),
    workers: int | None = typer.Option(None, help="Worker processes (default 2; 1 with --quick)."),
    seeds: str | None = typer.Option(None, help="Comma-separated seeds, e.g. 0,1,2."),
    methods: str | None = typer.Option(None, help=f"Comma-separated subset of {','.join(ALL_METHODS)}."),
    steps: int | None = typer.Option(None, help="RL steps per run (overrides the preset)."),
    reanalyze_dir: Path | None = typer.Option(None, "--reanalyze", help="Only rebuild the outputs from the "
                                               "per-run files of a finished run's --work-dir (no training)."),
) -> None:
    """Run the benchmark and print the headline JSON."""
    cfg = QUICK if quick else Config()
    if workers is not None:
        cfg = replace(cfg, workers=workers)
    if seeds:
        cfg = replace(cfg, seeds=tuple(int(s) for s in seeds.split(",")))
    if methods:
        bad = [m for m in methods.split(",") if m not in ALL_METHODS]
        if bad:
            raise typer.BadParameter(f"unknown method(s) {bad}; choose from {ALL_METHODS}", param_hint="--methods")
        cfg = replace(cfg, methods=tuple(methods.split(",")))
    if steps is not None:
        cfg = replace(cfg, rl_steps=steps)
    if quick:
        out = out or Path(tempfile.mkdtemp(prefix="constraint_neglect_quick_"))
    else:
        out = out or HERE / "results"
        markdown = markdown or HERE / "RESULTS.md"
    command = "python -m benchmarks.constraint_neglect.run" + (" --quick" if quick else "")
    if reanalyze_dir is not None:
        result = reanalyze(reanalyze_dir, out, markdown)
        result["out"] = str(out)
        print(json.dumps(result, indent=1, default=float))
        return
    result = run(cfg, out, markdown, work_dir, command=command, log=lambda s: print(s, file=sys.stderr, flush=True))
    result["out"] = str(out)
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    app()
