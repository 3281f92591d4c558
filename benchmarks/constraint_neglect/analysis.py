"""Aggregate the runs: per-method tables over seeds, paired significance tests, the curves PNG and RESULTS.md."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rvpo.demo.tooltask import BOTTLENECK, CHANNELS

PANELS = [f"pass/{c}" for c in CHANNELS] + ["pass/all", "mean_reward"]
COMPARISONS = [("rvpo_k1", "gdpo"), ("rvpo_linear", "gdpo"), ("rvpo_k1", "grpo"), ("rvpo_linear", "grpo")]


def curves(runs: list[dict], method: str) -> tuple[list[int], dict[str, np.ndarray], list[int]]:
    """Eval steps, {metric: [n_seeds, n_steps]} and the seeds of `method` (only seeds with every step)."""
    mine = sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])
    if not mine:
        return [], {}, []
    steps = [e["step"] for e in mine[0]["evals"]]
    mine = [r for r in mine if [e["step"] for e in r["evals"]] == steps]
    out = {m: np.array([[e[m] for e in r["evals"]] for r in mine], dtype=float) for m in PANELS}
    return steps, out, [r["seed"] for r in mine]


def per_seed(runs: list[dict], method: str, metric: str = "bottleneck_pass") -> dict[int, dict[str, float]]:
    """{seed: {"start", "final", "best", "best_step", "drop"}} of `metric` on the held-out evals; best is the
    maximum over the evaluations after step 0, drop = best - final (late-stage degradation)."""
    out = {}
    for r in runs:
        if r["method"] != method:
            continue
        ev = r["evals"]
        later = [e for e in ev if e["step"] > 0] or ev
        best = max(later, key=lambda e: e[metric])
        out[r["seed"]] = {"start": ev[0][metric], "final": ev[-1][metric], "best": best[metric],
                          "best_step": best["step"], "drop": best[metric] - ev[-1][metric]}
    return out


def paired_test(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Paired comparison over the seeds both have: mean difference a - b, Wilcoxon signed-rank (two-sided, exact
    for small n; scipy) and paired t-test p-values. NaN p-value when every difference is 0 or n < 2."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    out: dict[str, Any] = {"n": len(seeds), "seeds": seeds, "mean_diff": float(d.mean()) if len(d) else math.nan,
                           "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}
    if len(d) < 2 or np.all(d == 0):
        out.update(wilcoxon_p=math.nan, ttest_p=math.nan)
        return out
    out["wilcoxon_p"] = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue) \
        if np.any(d != 0) and (d != 0).sum() >= 1 else math.nan
    out["ttest_p"] = float(stats.ttest_1samp(d, 0.0).pvalue) if d.std() > 0 else math.nan
    return out


def summarize_runs(runs: list[dict], methods: list[str]) -> dict[str, Any]:
    """Per-method means/stds over seeds at the start, the end and the best step, plus the paired tests."""
    table = {}
    for m in methods:
        steps, cur, seeds = curves(runs, m)
        if not seeds:
            continue
        row = {"seeds": seeds, "steps": steps}
        for metric, arr in cur.items():
            row[metric] = {"start_mean": float(arr[:, 0].mean()), "final_mean": float(arr[:, -1].mean()),
                           "final_std": float(arr[:, -1].std(ddof=1)) if len(seeds) > 1 else 0.0,
                           "curve_mean": arr.mean(axis=0).tolist()}
        ps = per_seed(runs, m)
        row["bottleneck"] = {
            "per_seed": ps,
            "best_mean": float(np.mean([v["best"] for v in ps.values()])),
            "drop_mean": float(np.mean([v["drop"] for v in ps.values()])),
            "final_mean": float(np.mean([v["final"] for v in ps.values()])),
        }
        table[m] = row
    tests = {}
    for a, b in COMPARISONS:
        if a in table and b in table:
            pa, pb = table[a]["bottleneck"]["per_seed"], table[b]["bottleneck"]["per_seed"]
            tests[f"{a}_vs_{b}"] = {
                "final": paired_test({s: v["final"] for s, v in pa.items()}, {s: v["final"] for s, v in pb.items()}),
                "best": paired_test({s: v["best"] for s, v in pa.items()}, {s: v["best"] for s, v in pb.items()}),
            }
    return {"methods": table, "tests": tests}


def plot_curves(runs: list[dict], methods: list[str], path, title: str = "") -> None:
    """One panel per channel pass rate (+ all-channels pass and mean reward), one line per method (mean over
    seeds) with a band from the seed minimum to the seed maximum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = 3
    nrow = math.ceil(len(PANELS) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.1 * nrow), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        steps, cur, seeds = curves(runs, m)
        if not seeds:
            continue
        for ax, metric in zip(axes.flat, PANELS):
            arr = cur[metric]
            ax.plot(steps, arr.mean(axis=0), color=colors[i % len(colors)], label=f"{m} (n={len(seeds)})")
            ax.fill_between(steps, arr.min(axis=0), arr.max(axis=0), color=colors[i % len(colors)], alpha=0.12)
    for ax, metric in zip(axes.flat, PANELS):
        name = metric.split("/", 1)[-1]
        ax.set_title(("BOTTLENECK " if name == BOTTLENECK else "") + metric, fontsize=9)
        ax.set_xlabel("RL step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(PANELS):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _fmt(x: float, std: float | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3f}" if std is None else f"{x:.3f} ± {std:.3f}"


def _p(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3g}"


def results_markdown(summary: dict[str, Any], meta: dict[str, Any], taylor: dict[str, Any] | None,
                     mass: dict[str, Any] | None = None) -> str:
    """RESULTS.md: the design summary, the per-method table, the tests and the numeric study."""
    methods = summary["methods"]
    lines = [
        "# Constraint-neglect benchmark: results",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} "
        f"({meta.get('wall_minutes', meta.get('wall_minutes_training', math.nan)):.1f} min wall, "
        f"{meta['workers']} worker processes, {meta['threads']} torch thread(s) each). Design: see "
        "[README.md](README.md). Held-out set: "
        f"{meta['n_eval_prompts']} prompts x {meta['eval_samples']} fixed-seed samples (temperature 1) = "
        f"{meta['n_eval_prompts'] * meta['eval_samples']} completions per evaluation. Pass = channel value 1.0 "
        "(all arguments right for the fractional channels). By the rules library's definition `arg_values = 1` "
        "implies every other channel is 1, so the all-channels pass rate equals the bottleneck pass rate.",
        "",
        f"Seeds: {meta['seeds']}; RL steps: {meta['steps']}; evaluation every {meta['eval_every']} steps.",
        "",
        "![curves](results/curves.png)",
        "",
        "## Held-out pass rates at the end of training (mean ± std over seeds)",
        "",
        "| method | bottleneck `arg_values` (start -> final) | best step (mean of per-seed max) | best - final |"
        " all channels | mean reward |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m, row in methods.items():
        b = row[f"pass/{BOTTLENECK}"]
        lines.append(
            f"| {m} | {_fmt(b['start_mean'])} -> {_fmt(b['final_mean'], b['final_std'])} | "
            f"{_fmt(row['bottleneck']['best_mean'])} | {_fmt(row['bottleneck']['drop_mean'])} | "
            f"{_fmt(row['pass/all']['final_mean'], row['pass/all']['final_std'])} | "
            f"{_fmt(row['mean_reward']['final_mean'], row['mean_reward']['final_std'])} |")
    lines += ["", "## Every channel's held-out pass rate at the end (mean over seeds; start in parentheses)", ""]
    short = [c.split("/")[1] for c in CHANNELS]
    lines.append("| method | " + " | ".join(short) + " |")
    lines.append("| --- |" + " --- |" * len(short))
    for m, row in methods.items():
        cells = [f"{row[f'pass/{c}']['final_mean']:.3f} ({row[f'pass/{c}']['start_mean']:.2f})" for c in CHANNELS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired tests on the bottleneck pass rate (paired by seed)", "",
              "Wilcoxon signed-rank (two-sided, scipy; zero differences dropped, exact distribution unless there "
              "are ties) and paired t-test. With n = 5 seeds the "
              "smallest two-sided Wilcoxon p-value possible is 0.0625, so no comparison can reach p < 0.05 on that "
              "test; read these as effect sizes with a sign count.", "",
              "| comparison | at | mean difference | wins/losses/ties | Wilcoxon p | paired t p |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, t in summary["tests"].items():
        for at in ("final", "best"):
            x = t[at]
            lines.append(f"| {name.replace('_vs_', ' vs ')} | {at} | {x['mean_diff']:+.3f} | "
                         f"{x['wins']}/{x['losses']}/{x['ties']} | {_p(x['wilcoxon_p'])} | {_p(x['ttest_p'])} |")
    if taylor:
        ks = taylor["ks"]
        t = taylor["taylor"]
        lines += ["", "## Numeric study on the recorded reward matrices", "",
                  f"{taylor['n_rows']} completions from {taylor['n_batches']} training batches "
                  f"(all methods and seeds). ![taylor](results/taylor.png)", "",
                  f"Taylor remainder `|S_k - (mean Z - k/2 var Z)|`: log-log slope {t['slope_small_k']:.2f} for "
                  f"k <= 0.1 (2 expected: the next term is `k^2 k3 / 6`); mean |k3|/6 = "
                  f"{t['predicted_k3_over_6']:.4f}.", "",
                  "| k | mean abs error | max abs error | mean error / k^2 |", "| --- | --- | --- | --- |"]
        for i, k in enumerate(ks):
            lines.append(f"| {k:g} | {t['mean_abs_err'][i]:.3g} | {t['max_abs_err'][i]:.3g} | "
                         f"{t['mean_err_over_k2'][i]:.3g} |")
        lines += ["", "Share of completions in which one channel holds more than half of the SoftMin weight "
                  "(`p_j > 1/2`):", ""]
        pick = [i for i, k in enumerate(ks) if any(abs(k - x) < 1e-9 for x in (0.1, 0.5, 1.0, 2.0, 5.0, 10.0))]
        lines.append("| channel | " + " | ".join(f"k={ks[i]:g}" for i in pick) + " |")
        lines.append("| --- |" + " --- |" * len(pick))
        for c, d in taylor["dominance"].items():
            lines.append(f"| {c} | " + " | ".join(f"{d['majority_share'][i]:.3f}" for i in pick) + " |")
        lines.append("| (no channel) | " + " | ".join(f"{taylor['no_majority_share'][i]:.3f}" for i in pick) + " |")
    if mass:
        c = mass["group_counts"]
        lines += ["", "## Post-hoc diagnostic: where each method puts its advantage (not part of the pre-fixed design)",
                  "", "Added after the full run to explain the ranking (`advantage_mass.py`). The same recorded batches "
                  "are re-aggregated under each method. Groups: "
                  f"{c['value-only']} value-only (only the bottleneck varies), {c['easy']} with a varying easy "
                  f"channel, {c['flat']} flat.", "",
                  "| method | share of total abs advantage on value-only groups | advantage gap best - worst value "
                  "in value-only groups |", "| --- | --- | --- |"]
        for name, v in mass["methods"].items():
            lines.append(f"| {name} | {v['value_only_share']:.3f} | {v['value_gap']:.3f} |")
    lines.append("")
    return "\n".join(lines)
