"""Diagnostics of multi-channel rewards logged by `RVPOTrainer` (names under `rvpo/`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainer.aggregation import group_zscores, softmin_weights


def rvpo_metrics(rewards: torch.Tensor, num_generations: int, risk: float, names: Sequence[str], *,
                 weights: torch.Tensor | None = None, advantages: torch.Tensor | None = None,
                 pass_threshold: float = 0.0, eps: float = 1e-4) -> dict[str, float]:
    """Scalar metrics of one gathered reward batch `[N, K]` (NaN = channel absent / unscored).

    - `rvpo/risk`: the k used.
    - `rvpo/advantage_std`: std (Bessel) of the `[N]` advantages used, when given.
    - `rvpo/bottleneck_reward`: mean over prompts of the worst channel's group mean (reward units; channels with
      no value in that group are skipped, prompts with none are left out).
    - `rvpo/disagreement`: mean over scored completions of the weighted population variance of their channel
      z-scores (the quantity the SoftMin penalises, `S ~ mean - (k/2) var`; feeds the adaptive schedule).
    - `rvpo/pass_rate/<name>`: share of the completions where the channel exists whose reward > pass_threshold
      (NaN when it exists nowhere). Note: for a negative-points rubric item the best outcome is 0, not > 0.
    - `rvpo/softmin_share/<name>`: share of scored completions whose SoftMin (at k) the channel dominates, i.e.
      holds more than half of the SoftMin weight `p_j = w~_j exp(-k Z_j) / sum_i ...` (= dS/dZ_j). (The channel
      with the *largest* weight is always the lowest z-score whatever k; the majority share grows with k.)
    The per-channel mean (NaN excluded) is TRL's own `rewards/<name>/mean`.
    """
    r = rewards.float()
    n, k = r.shape
    if len(names) != k:
        raise ValueError(f"names: expected {k} channel names, got {len(names)}")
    out = {"rvpo/risk": float(risk)}
    if advantages is not None:
        out["rvpo/advantage_std"] = advantages.float().std().item() if advantages.numel() > 1 else 0.0
    group_mean = torch.nanmean(r.view(-1, num_generations, k), dim=1)  # [P, K]
    worst = torch.where(torch.isnan(group_mean), torch.inf, group_mean).amin(dim=1)
    out["rvpo/bottleneck_reward"] = worst[torch.isfinite(worst)].mean().item() if torch.isfinite(worst).any() \
        else float("nan")
    z = group_zscores(r, num_generations, eps=eps)
    p = softmin_weights(z, risk, weights)
    scored = ~torch.isnan(p).any(dim=1)
    z_s, p_s = torch.nan_to_num(z[scored]), p[scored]
    w = torch.ones(k, dtype=z.dtype, device=z.device) if weights is None else weights.to(z)
    wt = torch.where(torch.isnan(z[scored]), 0.0, w)
    wt = wt / wt.sum(dim=1, keepdim=True)
    mean = (wt * z_s).sum(dim=1, keepdim=True)
    var = (wt * (z_s - mean).square()).sum(dim=1)
    out["rvpo/disagreement"] = var.mean().item() if var.numel() else float("nan")
    share = (p_s > 0.5).float().mean(dim=0) if p_s.shape[0] else torch.full((k,), float("nan"))
    present = ~torch.isnan(r)
    passed = ((r > pass_threshold) & present).sum(dim=0) / present.sum(dim=0)
    for j, name in enumerate(names):
        out[f"rvpo/pass_rate/{name}"] = passed[j].item()
        out[f"rvpo/softmin_share/{name}"] = share[j].item()
    return out
