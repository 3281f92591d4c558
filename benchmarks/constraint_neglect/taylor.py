"""Numeric study on the reward matrices the benchmark's policies actually trained on.

1. Taylor statement (RVPO, arXiv 2605.05750): the SoftMin score `S_k = -(1/k) log (1/M) sum_j exp(-k Z_j)` equals
   `mean(Z) - (k/2) var(Z) + O(k^2)`. S comes from `trainer.aggregation.compute_advantages(..., whiten=False)`;
   the Taylor side (group z-scores, mean, population variance) is computed here independently with numpy. The
   remainder is the next cumulant term: `S = k1 - k k2/2 + k^2 k3/6 - ...` (k_n: cumulants of Z over the
   channels, `log E exp(-kZ) = sum_n k_n (-k)^n / n!`), so `|S - taylor| / k^2 -> |k3| / 6` as k -> 0; the
   log-log slope of the error against k is 2 where k3 != 0.
2. Dominance: the SoftMin weight of channel j is `p_j = exp(-k Z_j) / sum_i exp(-k Z_i)` (= dS/dZ_j). For each
   k we report, per channel, the share of completions where `p_j > 1/2` (the channel alone carries the majority of
   the score's gradient) and the mean `p_j`; at k -> 0 every `p_j = 1/M`, as k grows the mass moves to the worst
   channel of each completion. (The argmax of p_j is the argmin of Z for every k > 0, so an argmax share would
   not depend on k.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from trainer.aggregation import compute_advantages

EPS = 1e-4


def zscores(rewards: np.ndarray, num_generations: int, eps: float = EPS) -> np.ndarray:
    """Group z-scores `[N, K]` of `[N, K]` rewards (NaN-aware, Bessel std + eps, 0 for a channel seen once in its
    group), written here from the GDPO formula, independently of `trainer.aggregation`."""
    n, k = rewards.shape
    g = rewards.reshape(n // num_generations, num_generations, k).astype(np.float64)
    out = np.full_like(g, np.nan)
    for p in range(g.shape[0]):
        for j in range(k):
            col = g[p, :, j]
            ok = ~np.isnan(col)
            if ok.sum() < 2:
                out[p, ok, j] = 0.0
                continue
            mu = col[ok].mean()
            sd = col[ok].std(ddof=1)
            out[p, ok, j] = (col[ok] - mu) / (sd + eps)
    return out.reshape(n, k)


def taylor_side(z: np.ndarray, k: float) -> np.ndarray:
    """`mean(Z) - (k/2) var(Z)` per row over the present channels (population variance)."""
    return np.nanmean(z, axis=1) - 0.5 * k * np.nanvar(z, axis=1)


def third_cumulant(z: np.ndarray) -> np.ndarray:
    """Third central moment (= third cumulant) of each row's present z-scores."""
    mu = np.nanmean(z, axis=1, keepdims=True)
    return np.nanmean((z - mu) ** 3, axis=1)


def softmin_weights_np(z: np.ndarray, k: float) -> np.ndarray:
    """`[N, K]` SoftMin weights `p_j` (uniform channel weights), 0 for absent channels."""
    a = np.where(np.isnan(z), -np.inf, -k * z)
    a = a - a.max(axis=1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=1, keepdims=True)


def study(batches: list[np.ndarray], num_generations: int, channels: list[str], ks: list[float]) -> dict[str, Any]:
    """Run both studies over the reward matrices `batches` (each `[N, K]`, TRL layout); see the module docstring.

    Returns {"ks", "taylor": {"max_abs_err", "mean_abs_err", "mean_err_over_k2", "predicted_k3_over_6",
    "slope_small_k", "slope_fit_ks"}, "dominance": {channel: {"majority_share": [...], "mean_weight": [...]}},
    "no_majority_share": [...], "n_rows"}.
    """
    rows = [b for b in batches if b.size]
    r_all = np.concatenate(rows, axis=0)
    z_all = np.concatenate([zscores(b, num_generations) for b in rows], axis=0)
    scored = ~np.isnan(z_all).all(axis=1)
    z_s = z_all[scored]
    max_err, mean_err, over_k2 = [], [], []
    for k in ks:
        s = np.concatenate([compute_advantages(torch.tensor(b, dtype=torch.float64), num_generations, "rvpo",
                                               risk=k, whiten=False).numpy() for b in rows])[scored]
        err = np.abs(s - taylor_side(z_s, k))
        max_err.append(float(err.max()))
        mean_err.append(float(err.mean()))
        over_k2.append(float(err.mean() / k ** 2))
    small = [i for i, k in enumerate(ks) if k <= 0.1 and mean_err[i] > 0]
    slope = float(np.polyfit(np.log([ks[i] for i in small]), np.log([mean_err[i] for i in small]), 1)[0]) \
        if len(small) >= 2 else math.nan
    dominance = {c: {"majority_share": [], "mean_weight": []} for c in channels}
    no_majority = []
    for k in ks:
        p = softmin_weights_np(z_s, k)
        major = p > 0.5
        for j, c in enumerate(channels):
            dominance[c]["majority_share"].append(float(major[:, j].mean()))
            dominance[c]["mean_weight"].append(float(p[:, j].mean()))
        no_majority.append(float((~major.any(axis=1)).mean()))
    return {
        "ks": list(ks), "n_rows": int(scored.sum()), "n_batches": len(rows),
        "share_rows_all_channels_equal_z": float((np.nanvar(z_s, axis=1) < 1e-12).mean()),
        "taylor": {"max_abs_err": max_err, "mean_abs_err": mean_err, "mean_err_over_k2": over_k2,
                   "predicted_k3_over_6": float(np.abs(third_cumulant(z_s)).mean() / 6),
                   "slope_small_k": slope, "slope_fit_ks": [ks[i] for i in small]},
        "dominance": dominance, "no_majority_share": no_majority, "raw_rows": int(r_all.shape[0]),
    }


def plot(result: dict[str, Any], path) -> None:
    """Two panels: Taylor error vs k (log-log, with the k^2 |k3|/6 prediction) and the majority share per
    channel vs k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.array(result["ks"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.loglog(ks, result["taylor"]["mean_abs_err"], "o-", label="mean |S - (mean - k/2 var)|")
    a.loglog(ks, result["taylor"]["max_abs_err"], "s--", label="max |S - (mean - k/2 var)|")
    a.loglog(ks, result["taylor"]["predicted_k3_over_6"] * ks ** 2, "k:", label="k^2 mean|k3|/6 (next term)")
    a.set_xlabel("risk k")
    a.set_ylabel("error (z units)")
    a.set_title(f"Taylor remainder, slope {result['taylor']['slope_small_k']:.2f} for k <= 0.1")
    a.legend(fontsize=8)
    for c, d in result["dominance"].items():
        b.semilogx(ks, d["majority_share"], label=c.split("/")[-1])
    b.semilogx(ks, result["no_majority_share"], "k--", label="no channel > 1/2")
    b.set_xlabel("risk k")
    b.set_ylabel("share of completions")
    b.set_title("SoftMin weight p_j > 1/2")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
