"""Speed of the advantage aggregators vs TRL's inline GDPO arithmetic, printed as JSON.

N = 16,384 completions (1,024 prompts x G = 16), K = 17 reward channels, ~30% NaN. Median wall time over
`--repeats` runs after warm-up, in milliseconds. TRL's GDPO (`multi_objective_aggregation="normalize_then_sum"`)
and GRPO (`"sum_then_normalize"`, `scale_rewards="group"`) are the statements of
trl/trainer/grpo_trainer.py::_generate_and_score_completions (TRL 1.16) reproduced line by line, using TRL's own
`nanstd`. Target: rvpo <= 1.5x TRL's GDPO path.

    python benchmarks/aggregation.py [--n 16384] [--k 17] [--g 16] [--nan 0.3] [--repeats 50] [--device cpu]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from trl.trainer.utils import nanstd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from trainer.aggregation import METHODS, compute_advantages  # noqa: E402


def trl_gdpo(rewards_per_func: torch.Tensor, num_generations: int, reward_weights: torch.Tensor) -> torch.Tensor:
    """TRL 1.16 `normalize_then_sum` branch plus its `nan_to_num`, verbatim apart from variable plumbing."""
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    k = rewards_per_func.shape[1]
    grouped = rewards_per_func.view(-1, num_generations, k)
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = nanstd(grouped, dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(mean_k)
    reward_k = (grouped - mean_k) / (std_k + 1e-4)
    reward_k = reward_k.view(-1, k)
    rewards = (reward_k * reward_weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    std_rewards = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    advantages = (rewards - torch.nanmean(rewards)) / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def trl_grpo(rewards_per_func: torch.Tensor, num_generations: int, reward_weights: torch.Tensor) -> torch.Tensor:
    """TRL 1.16 `sum_then_normalize` branch with `scale_rewards="group"`, plus its `nan_to_num`."""
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
    std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    advantages = (rewards - mean_grouped_rewards) / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def median_ms(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Median ms of each function; the functions take turns in every round so load drift hits them alike."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for fn in fns.values():
        for _ in range(3):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--k", type=int, default=17)
    ap.add_argument("--g", type=int, default=16)
    ap.add_argument("--nan", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(a.n, a.k, generator=gen).round() * torch.randint(1, 4, (a.n, a.k), generator=gen)
    rewards[torch.rand(a.n, a.k, generator=gen) < a.nan] = torch.nan
    rewards = rewards.to(a.device)
    weights = torch.ones(a.k, device=a.device)

    fns = {"trl_gdpo": lambda: trl_gdpo(rewards, a.g, weights), "trl_grpo": lambda: trl_grpo(rewards, a.g, weights)}
    for method in METHODS:
        fns[method] = lambda m=method: compute_advantages(rewards, a.g, m, risk=1.0, weights=weights)
    ms = median_ms(fns, a.repeats, a.device)
    result = {
        "device": a.device, "torch_threads": torch.get_num_threads(), "n": a.n, "k": a.k, "num_generations": a.g,
        "nan_fraction": round(torch.isnan(rewards).float().mean().item(), 4), "repeats": a.repeats,
        "trl_gdpo_ms": round(ms["trl_gdpo"], 3), "trl_grpo_ms": round(ms["trl_grpo"], 3),
        "methods": {m: {"median_ms": round(ms[m], 3), "ratio_vs_trl_gdpo": round(ms[m] / ms["trl_gdpo"], 3)}
                    for m in METHODS},
        "max_abs_diff_vs_trl": {
            "gdpo": (fns["gdpo"]() - fns["trl_gdpo"]()).abs().max().item(),
            "grpo": (fns["grpo"]() - fns["trl_grpo"]()).abs().max().item(),
        },
    }
    result["rvpo_ratio_vs_trl_gdpo"] = result["methods"]["rvpo"]["ratio_vs_trl_gdpo"]
    result["target_met"] = result["rvpo_ratio_vs_trl_gdpo"] <= 1.5
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
