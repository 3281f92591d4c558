"""Aggregate the runs: per-method tables per arm, paired tests with Holm, power, the advantage-credit diagnostic,
the curves PNG, results.json, reward_matrices.npz and RESULTS.md."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.rubric_neglect import stats

TABLE_METRICS = ("true_score", "bottleneck_pass", "fragile_pass", "mention_pass", "pitfall_rate", "gap",
                 "hack_rate", "proxy_score")
TESTED = ("true_score", "bottleneck_pass", "fragile_pass", "pitfall_rate", "gap", "true_best", "true_drop")
PRIMARY_METRICS = ("true_score", "bottleneck_pass")
PRIMARY = (("rvpo", "gdpo_mean"), ("rvpo", "gdpo"), ("rvpo", "grpo"))
SECONDARY = (("rvpo_k5", "gdpo_mean"), ("rvpo_k5", "rvpo"), ("rvpo_dropconst", "rvpo"), ("gdpo_mean", "gdpo"),
             ("gdpo_mean", "grpo"))
PANELS = (("true_score", "true score (strict judge, HealthBench)"), ("bottleneck_pass", "BOTTLENECK: rare word"),
          ("fragile_pass", "fragile essential: starts with topic"), ("gap", "proxy - true (lenient - strict)"))
ALPHA = 0.05


def run_values(run: dict) -> dict[str, float]:
    """Per-run numbers: every metric at the last evaluation, `true_best` (max true score over the evaluations
    after step 0) and `true_drop` = true_best - final true score (late degradation)."""
    ev = run["evals"]
    later = [e for e in ev if e["step"] > 0] or ev
    out = {m: ev[-1][m] for m in TABLE_METRICS}
    out["true_best"] = max(e["true_score"] for e in later)
    out["true_drop"] = out["true_best"] - ev[-1]["true_score"]
    out["bottleneck_best"] = max(e["bottleneck_pass"] for e in later)
    return out


def _by(runs: list[dict], arm: str, method: str) -> dict[int, dict]:
    return {r["seed"]: r for r in runs if r["arm"] == arm and r["method"] == method}


def summarize(runs: list[dict], arms: list[str], methods: list[str]) -> dict[str, Any]:
    """{arm: {method: {"n", "seeds", "steps", metric: {"start", "final_mean", "final_std", "curve_mean",
    "curve_se"}, "true_best_mean", "true_drop_mean", "bottleneck_best_mean"}}}."""
    out: dict[str, Any] = {}
    for arm in arms:
        out[arm] = {}
        for m in methods:
            mine = _by(runs, arm, m)
            if not mine:
                continue
            steps = [e["step"] for e in next(iter(mine.values()))["evals"]]
            mine = {s: r for s, r in mine.items() if [e["step"] for e in r["evals"]] == steps}
            row: dict[str, Any] = {"n": len(mine), "seeds": sorted(mine), "steps": steps}
            for metric in TABLE_METRICS:
                arr = np.array([[e[metric] for e in r["evals"]] for r in mine.values()], dtype=float)
                row[metric] = {"start": float(np.nanmean(arr[:, 0])), "final_mean": float(np.nanmean(arr[:, -1])),
                               "final_std": float(np.nanstd(arr[:, -1], ddof=1)) if len(mine) > 1 else 0.0,
                               "curve_mean": np.nanmean(arr, axis=0).tolist(),
                               "curve_se": (np.nanstd(arr, axis=0, ddof=1) / math.sqrt(len(mine))).tolist()
                               if len(mine) > 1 else [0.0] * len(steps)}
            vals = [run_values(r) for r in mine.values()]
            for k in ("true_best", "true_drop", "bottleneck_best"):
                row[f"{k}_mean"] = float(np.mean([v[k] for v in vals]))
            out[arm][m] = row
    return out


def contrasts(runs: list[dict], arms: list[str]) -> dict[str, Any]:
    """{arm: {"a_vs_b": {metric: paired_summary (+ "holm_wilcoxon_p", "holm_ttest_p" for primary)}}}; Holm is
    applied within each (arm, metric) over the three primary contrasts."""
    out: dict[str, Any] = {}
    for arm in arms:
        out[arm] = {}
        for a, b in PRIMARY + SECONDARY:
            ra, rb = _by(runs, arm, a), _by(runs, arm, b)
            if not ra or not rb:
                continue
            va = {s: run_values(r) for s, r in ra.items()}
            vb = {s: run_values(r) for s, r in rb.items()}
            out[arm][f"{a}_vs_{b}"] = {m: stats.paired_summary({s: v[m] for s, v in va.items()},
                                                               {s: v[m] for s, v in vb.items()}) for m in TESTED}
        for metric in TESTED:
            names = [f"{a}_vs_{b}" for a, b in PRIMARY if f"{a}_vs_{b}" in out[arm]]
            for test in ("wilcoxon_p", "ttest_p"):
                adj = stats.holm({n: out[arm][n][metric][test] for n in names})
                for n in names:
                    out[arm][n][metric][f"holm_{test}"] = adj[n]
    return out


def decisions(tests: dict[str, Any]) -> dict[str, Any]:
    """The pre-registered reading of each primary contrast and primary metric: "win" / "loss" when the
    Holm-adjusted exact Wilcoxon p < ALPHA (sign of the mean difference), else "tie" (no detectable difference)."""
    out: dict[str, Any] = {}
    for arm, by_contrast in tests.items():
        out[arm] = {}
        for a, b in PRIMARY:
            name = f"{a}_vs_{b}"
            if name not in by_contrast:
                continue
            out[arm][name] = {}
            for metric in PRIMARY_METRICS:
                t = by_contrast[name][metric]
                p = t.get("holm_wilcoxon_p", math.nan)
                verdict = "tie" if not p < ALPHA else ("win" if t["mean_diff"] > 0 else "loss")
                out[arm][name][metric] = {"verdict": verdict, "mean_diff": t["mean_diff"], "holm_wilcoxon_p": p,
                                          "holm_ttest_p": t.get("holm_ttest_p", math.nan), "ci95": t["ci95"],
                                          "wins": t["wins"], "losses": t["losses"]}
    return out


def power(tests: dict[str, Any]) -> dict[str, Any]:
    """Per arm and primary metric: n seeds, the median observed SD of the paired differences over the primary
    contrasts, and the smallest true mean difference the paired t-test detects with 80 % power at the Holm
    first-step level ALPHA / 3 (in the metric's units); plus the exact Wilcoxon p floor and its Holm bound."""
    out: dict[str, Any] = {}
    for arm, by_contrast in tests.items():
        out[arm] = {}
        for metric in PRIMARY_METRICS:
            rows = [by_contrast[f"{a}_vs_{b}"][metric] for a, b in PRIMARY if f"{a}_vs_{b}" in by_contrast]
            if not rows:
                continue
            n = min(r["n"] for r in rows)
            sd = float(np.nanmedian([r["sd_diff"] for r in rows]))
            k = len(rows)
            out[arm][metric] = {"n": n, "sd_diff_median": sd, "mde_80": stats.t_mde(n, ALPHA / k) * sd,
                                "mde_80_sd_units": stats.t_mde(n, ALPHA / k), "wilcoxon_floor": stats.wilcoxon_floor(n),
                                "wilcoxon_floor_holm": min(1.0, k * stats.wilcoxon_floor(n))}
    return out


def advantage_configs(total_steps: int) -> dict[str, Any]:
    """compute_advantages keyword arguments of each method as a function of the RL step (k schedule followed)."""
    def linear(step: int) -> float:
        return 0.5 + 1.5 * min(1.0, step / max(1, total_steps))

    return {
        "grpo": lambda s: {"method": "grpo"},
        "gdpo": lambda s: {"method": "gdpo"},
        "gdpo_mean": lambda s: {"method": "gdpo_mean"},
        "rvpo": lambda s: {"method": "rvpo", "risk": linear(s)},
        "rvpo_k5": lambda s: {"method": "rvpo", "risk": 5.0},
        "rvpo_dropconst": lambda s: {"method": "rvpo", "risk": linear(s), "drop_constant_channels": True},
    }


def diagnostic(runs: list[dict], arms: list[str], num_generations: int, total_steps: int, every: int = 2
               ) -> dict[str, Any]:
    """Per arm, the advantage credit (benchmarks/constraint_neglect/advantage_mass.py `credit`) that each method
    would give, on the same recorded training batches (every `every`-th batch of every run of the arm), to
    meeting the bottleneck, meeting the fragile essential and using the template hack."""
    from benchmarks.constraint_neglect.advantage_mass import credit

    out: dict[str, Any] = {}
    for arm in arms:
        batches, steps, ind = [], [], {"bottleneck met": [], "fragile met": [], "hack": []}
        for r in runs:
            if r["arm"] != arm:
                continue
            for b in r["batches"][::every]:
                m = np.array(b["rewards"], dtype=float)
                slot = np.array(b["bottleneck_slot"])
                batches.append(m)
                steps.append(b["step"])
                ind["bottleneck met"].append(m[np.arange(len(m)), slot] > 0)
                ind["fragile met"].append(m[:, 0] > 0)
                ind["hack"].append(np.array(b["hack"], dtype=bool))
        if batches:
            out[arm] = {"n_batches": len(batches),
                        "credit": credit(batches, num_generations, ind, advantage_configs(total_steps), steps)}
    return out


def lone_outlier_table(num_generations: int = 16) -> list[dict[str, Any]]:
    """How far one completion's pre-whitening score moves when it alone succeeds (or alone fails) on one channel
    of M, every other channel constant in the group: from `compute_advantages(..., whiten=False)` on constructed
    groups. This is the mechanism behind the two arms (rare success in `learn`, rare failure in `protect`)."""
    import torch

    from trainer.aggregation import compute_advantages

    rows = []
    for m in (5, 11, 17):
        for kind, value in (("lone success", 1.0), ("lone failure", 0.0)):
            r = torch.full((num_generations, m), 1.0 - value, dtype=torch.float64)
            r[0, 0] = value
            row = {"M": m, "case": kind}
            for name, kw in (("gdpo_mean", {"method": "gdpo_mean"}), ("rvpo k=0.5", {"method": "rvpo", "risk": 0.5}),
                             ("rvpo k=1", {"method": "rvpo", "risk": 1.0}),
                             ("rvpo k=2", {"method": "rvpo", "risk": 2.0}), ("rvpo k=5", {"method": "rvpo", "risk": 5.0}),
                             ("rvpo k=2 drop-constant", {"method": "rvpo", "risk": 2.0,
                                                          "drop_constant_channels": True})):
                s = compute_advantages(r, num_generations, whiten=False, **kw)
                row[name] = float(abs(s[0] - s[1]))
            rows.append(row)
    return rows


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Rows = arms, columns = PANELS; one line per method (mean over seeds) with a +-1 SE band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary)
    fig, axes = plt.subplots(len(arms), len(PANELS), figsize=(4.3 * len(PANELS), 3.3 * len(arms)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, arm in enumerate(arms):
        for j, (metric, title) in enumerate(PANELS):
            ax = axes[i][j]
            for c, (m, row) in enumerate(summary[arm].items()):
                mean, se = np.array(row[metric]["curve_mean"]), np.array(row[metric]["curve_se"])
                ax.plot(row["steps"], mean, color=colors[c % len(colors)], label=f"{m} (n={row['n']})")
                ax.fill_between(row["steps"], mean - se, mean + se, color=colors[c % len(colors)], alpha=0.15)
            ax.set_title(f"{arm}: {title}", fontsize=9)
            ax.set_xlabel("RL step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[i][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_outputs(runs: list[dict], meta: dict[str, Any], out_dir: Path, markdown: Path | None,
                  t_start: float | None) -> dict[str, Any]:
    """Write results.json, reward_matrices.npz, curves.png (and RESULTS.md); returns the headline dict."""
    from benchmarks.rubric_neglect.report import results_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = meta["config"]
    arms = [a for a in cfg["arms"] if any(r["arm"] == a for r in runs)]
    methods = [m for m in cfg["methods"] if any(r["method"] == m for r in runs)]
    summary = summarize(runs, arms, methods)
    tests = contrasts(runs, arms)
    verdicts = decisions(tests)
    pw = power(tests)
    t0 = time.perf_counter()
    diag = diagnostic(runs, arms, cfg["num_generations"], cfg["rl_steps"])
    diag_seconds = time.perf_counter() - t0
    lone = lone_outlier_table(cfg["num_generations"])
    plot_curves(summary, out_dir / "curves.png")
    arrays = {}
    for r in runs:
        if r.get("batches"):
            key = f"{r['arm']}_{r['method']}_seed{r['seed']}"
            arrays[f"{key}/rewards"] = np.array([b["rewards"] for b in r["batches"]], dtype=np.float16)
            arrays[f"{key}/bottleneck_slot"] = np.array([b["bottleneck_slot"] for b in r["batches"]], dtype=np.int8)
            arrays[f"{key}/hack"] = np.array([b["hack"] for b in r["batches"]], dtype=bool)
            arrays[f"{key}/step"] = np.array([b["step"] for b in r["batches"]], dtype=np.int16)
    if arrays:
        np.savez_compressed(out_dir / "reward_matrices.npz", **arrays)
    if t_start is not None:
        meta["minutes"]["total"] = (time.perf_counter() - t_start) / 60
    meta["diagnostic_seconds"] = diag_seconds
    compact = [{k: v for k, v in r.items() if k != "batches"} for r in runs]
    result = {"meta": meta, "summary": summary, "tests": tests, "decisions": verdicts, "power": pw,
              "diagnostic": diag, "lone_outlier": lone, "runs": compact}
    (out_dir / "results.json").write_text(json.dumps(_round(result), default=float))
    if markdown is not None:
        markdown.write_text(results_markdown(result))
    return {"minutes": meta["minutes"], "load_avg_start": meta.get("load_avg_start"),
            "load_avg_end": meta.get("load_avg_end"), "excluded_warm_starts": meta.get("excluded_warm_starts"),
            "final_true_score": {a: {m: round(r["true_score"]["final_mean"], 4) for m, r in s.items()}
                                 for a, s in summary.items()},
            "final_bottleneck_pass": {a: {m: round(r["bottleneck_pass"]["final_mean"], 4) for m, r in s.items()}
                                      for a, s in summary.items()},
            "decisions": {a: {c: {m: v["verdict"] for m, v in d.items()} for c, d in dd.items()}
                          for a, dd in verdicts.items()}}


def _round(obj, digits: int = 5):
    if isinstance(obj, float):
        return obj if not math.isfinite(obj) else float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, digits) for v in obj]
    if isinstance(obj, np.generic):
        return _round(obj.item(), digits)
    return obj
