"""grpo / gdpo equal TRL's own GRPOTrainer advantages: TRL's real `_generate_and_score_completions` (tiny Qwen2 on
CPU) is run with reward functions that return a preset NaN-masked matrix, and its `advantages` are compared."""

from __future__ import annotations

import math

import pytest
import torch

from tests.trainer_fixtures import PROMPTS, PresetRewards, prompt_dataset, tiny_args
from trainer.aggregation import compute_advantages

G, P, K = 4, 6, 3
WEIGHTS = [1.0, 2.0, 0.5]


def _matrix():
    g = torch.Generator().manual_seed(7)
    m = torch.randint(0, 4, (P * G, K), generator=g).float() / 2 + torch.rand(P * G, K, generator=g).round()
    m[torch.rand(P * G, K, generator=g) < 0.3] = math.nan
    m[2] = math.nan                      # a completion no channel could score
    m[4:8, 1] = math.nan                 # a channel absent for a whole prompt
    m[8:12, 2] = math.nan
    m[9, 2] = 1.5                        # a channel present once in its group
    m[12:16] = math.nan
    m[13] = torch.tensor([1.0, 0.0, 2.0])  # a group with a single scorable completion
    return m


@pytest.mark.parametrize("aggregation,method", [("sum_then_normalize", "grpo"), ("normalize_then_sum", "gdpo")])
def test_trl_advantages_equal_ours(tiny_model_dir, tmp_path, aggregation, method):
    from trl import GRPOConfig, GRPOTrainer

    m = _matrix()
    preset = PresetRewards(m.tolist())
    args = tiny_args(GRPOConfig, tmp_path, multi_objective_aggregation=aggregation, scale_rewards="group",
                     reward_weights=WEIGHTS, per_device_train_batch_size=P * G, num_generations=G,
                     max_completion_length=4)
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=preset.funcs, args=args,
                          train_dataset=prompt_dataset(P))
    inputs = [{"prompt": PROMPTS[i // G]} for i in range(P * G)]
    trl_adv = trainer._generate_and_score_completions(inputs)["advantages"]
    assert preset.calls == [P * G] * K  # every preset row was handed out exactly once
    ours = compute_advantages(m, G, method, weights=WEIGHTS)
    assert trl_adv.shape == ours.shape == (P * G,)
    assert (trl_adv - ours).abs().max().item() < 1e-6
    assert ours[2] == 0.0 and ours.abs().max() > 0.5
