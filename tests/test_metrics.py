"""`trainer.metrics.rvpo_metrics` against values computed by hand."""

import math

import pytest
import torch

from trainer.metrics import rvpo_metrics


def test_softmin_share_is_the_majority_weight_and_grows_with_k():
    # G = 2, K = 3. Channel 0 differs within the group (0 then 1), channels 1 and 2 are constant (Z = 0).
    # Channel 0: mean 0.5, Bessel std 0.7071 -> Z = -/+ 0.7071 / (0.7071 + 1e-4) = -/+ 0.99986.
    # Row 0, Z = (-z, 0, 0): p_0 = e^{kz} / (e^{kz} + 2): k = 1 -> 0.5761 > 1/2; k = 0.5 -> 0.4520 < 1/2.
    # Row 1, Z = (+z, 0, 0): p_0 = e^{-kz} / (e^{-kz} + 2) < 1/2 and p_1 = p_2 = 1 / (e^{-kz} + 2) < 1/2.
    rewards = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    z = 0.5 ** 0.5 / (0.5 ** 0.5 + 1e-4)
    assert math.exp(z) / (math.exp(z) + 2) > 0.5 > math.exp(0.5 * z) / (math.exp(0.5 * z) + 2)
    names = ["a", "b", "c"]
    at_1 = rvpo_metrics(rewards, 2, 1.0, names)
    at_half = rvpo_metrics(rewards, 2, 0.5, names)
    assert [at_1[f"rvpo/softmin_share/{n}"] for n in names] == [0.5, 0.0, 0.0]
    assert [at_half[f"rvpo/softmin_share/{n}"] for n in names] == [0.0, 0.0, 0.0]
    # bottleneck reward: group means (0.5, 1, 1) -> worst 0.5; pass rates (reward > 0): 1/2, 1, 1
    assert at_1["rvpo/bottleneck_reward"] == pytest.approx(0.5)
    assert [at_1[f"rvpo/pass_rate/{n}"] for n in names] == [0.5, 1.0, 1.0]
