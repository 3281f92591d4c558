"""Post-hoc diagnostic (added after the full run, to explain its ranking; not part of the pre-fixed design):
where does each advantage method put its signal on the reward matrices the runs actually trained on?

Every recorded batch `[N, K]` (G completions per prompt, contiguous) is re-aggregated with
`trainer.aggregation.compute_advantages` under each method. Groups are classified by which channels vary inside
them: "value-only" (only the bottleneck varies: the easy channels are constant), "easy" (some easy channel
varies), "flat" (nothing varies). Reported per method:
- `value_only_share`: share of the batch's total |advantage| that falls on value-only groups (mean over batches
  that contain both value-only and easy groups);
- `value_gap`: in value-only groups, mean advantage of the completions with the group's highest bottleneck value
  minus that of the completions with the lowest one (how hard the method pushes toward the right values; the
  advantages are in the units each method feeds the loss).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainer.aggregation import compute_advantages

CONFIGS = {
    "grpo": ("grpo", 1.0), "gdpo": ("gdpo", 1.0), "rvpo k=1": ("rvpo", 1.0), "rvpo k=2": ("rvpo", 2.0),
    "variance_penalty (beta=0.5)": ("variance_penalty", 1.0), "min": ("min", 1.0),
}


def classify(batch: np.ndarray, g: int, bottleneck: int) -> list[str]:
    """Kind of each group of `batch` `[N, K]`: "value-only", "easy" or "flat"."""
    kinds = []
    for p in range(batch.shape[0] // g):
        grp = batch[p * g:(p + 1) * g]
        varies = np.nanmax(grp, axis=0) - np.nanmin(grp, axis=0) > 1e-9
        easy = np.delete(varies, bottleneck)
        kinds.append("easy" if easy.any() else "value-only" if varies[bottleneck] else "flat")
    return kinds


def study(batches: list[np.ndarray], g: int, bottleneck: int) -> dict[str, Any]:
    """Run the diagnostic (see the module docstring) over `batches`; returns per-method numbers and the counts."""
    kinds_all = [classify(b, g, bottleneck) for b in batches]
    counts = {k: sum(ks.count(k) for ks in kinds_all) for k in ("value-only", "easy", "flat")}
    out: dict[str, Any] = {"group_counts": counts, "methods": {}}
    for name, (method, risk) in CONFIGS.items():
        shares, gaps = [], []
        for b, kinds in zip(batches, kinds_all):
            a = compute_advantages(torch.tensor(b, dtype=torch.float64), g, method, risk=risk).numpy()
            a_g = np.abs(a).reshape(-1, g).sum(axis=1)
            vo = np.array([k == "value-only" for k in kinds])
            ez = np.array([k == "easy" for k in kinds])
            if vo.any() and ez.any() and a_g.sum() > 0:
                shares.append(a_g[vo].sum() / a_g.sum())
            for p in np.flatnonzero(vo):
                v = b[p * g:(p + 1) * g, bottleneck]
                ap = a[p * g:(p + 1) * g]
                gaps.append(ap[v == v.max()].mean() - ap[v == v.min()].mean())
        out["methods"][name] = {"value_only_share": float(np.mean(shares)) if shares else float("nan"),
                                "value_gap": float(np.mean(gaps)) if gaps else float("nan"),
                                "n_batches_with_both": len(shares), "n_value_only_groups": len(gaps)}
    return out


def credit(batches: list[np.ndarray], num_generations: int, indicators: dict[str, list[np.ndarray]],
           configs: dict[str, Any], steps: list[int] | None = None) -> dict[str, Any]:
    """Credit each advantage method gives to a behaviour, on recorded batches (used by benchmarks/rubric_neglect).

    Every batch `[N, K]` is re-aggregated with `compute_advantages(batch, G, **configs[name](step))` (`configs`:
    name -> function of the batch's RL step giving the keyword arguments, so a k schedule can be followed).
    For each indicator (one `[N]` bool array per batch, e.g. "the bottleneck criterion is met") and each group in
    which it varies, the credit gap is mean advantage where it holds minus mean advantage where it does not.
    Returns {name: {indicator: {"gap", "gap_minority", "gap_majority", "n_groups", "n_minority"}}}: `gap` over
    every such group, `gap_minority` over the groups where the indicator holds for fewer than half of the G
    completions (a rare success), `gap_majority` where it holds for more than half (a rare failure).
    """
    steps = steps if steps is not None else [0] * len(batches)
    g = num_generations
    out: dict[str, Any] = {}
    for name, kwargs_at in configs.items():
        acc = {ind: {"all": [], "minority": [], "majority": []} for ind in indicators}
        for i, (b, step) in enumerate(zip(batches, steps)):
            adv = compute_advantages(torch.tensor(b, dtype=torch.float64), g, **kwargs_at(step)).numpy()
            adv = adv.reshape(-1, g)
            for ind, per_batch in indicators.items():
                flag = np.asarray(per_batch[i], dtype=bool).reshape(-1, g)
                for p in range(flag.shape[0]):
                    k = int(flag[p].sum())
                    if 0 < k < g:
                        gap = adv[p][flag[p]].mean() - adv[p][~flag[p]].mean()
                        acc[ind]["all"].append(gap)
                        if 2 * k < g:
                            acc[ind]["minority"].append(gap)
                        elif 2 * k > g:
                            acc[ind]["majority"].append(gap)
        out[name] = {ind: {"gap": _mean(v["all"]), "gap_minority": _mean(v["minority"]),
                           "gap_majority": _mean(v["majority"]), "n_groups": len(v["all"]),
                           "n_minority": len(v["minority"])} for ind, v in acc.items()}
    return out


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
