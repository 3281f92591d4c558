"""Adversarial inputs for the advantage aggregators: the z-score is scale-free, so huge reward magnitudes must not
silently zero a channel, and `eps` must not change which channels count. Expected values by hand from the
formulas of the GDPO / RVPO papers (Bessel std, SoftMin `-(1/k) log((1/M) sum_j exp(-k Z_j))`)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.aggregation import METHODS, compute_advantages, group_zscores

INV_SQRT2 = 1 / math.sqrt(2)  # z of two distinct values: deviation d/2, Bessel std d/sqrt(2)


@pytest.mark.parametrize("dtype, big", [(torch.float32, 1e20), (torch.float32, 1e30), (torch.float64, 1e160)])
def test_huge_rewards_keep_their_z_scores(dtype, big):
    """A sentinel penalty of -1e20 in float32: squaring the deviations overflows, and the channel used to get
    Z = 0 for the whole group (silently dropped). The z-score of two distinct values is +-1/sqrt(2) at any scale."""
    r = torch.tensor([[0.0, 1.0], [-big, 0.0]], dtype=dtype)
    z = group_zscores(r, 2)
    assert z[:, 0].tolist() == pytest.approx([INV_SQRT2, -INV_SQRT2], rel=1e-5)
    z_b = 0.5 / (INV_SQRT2 + 1e-4)  # channel b: 1, 0 -> eps matters here
    assert z[:, 1].tolist() == pytest.approx([z_b, -z_b], rel=1e-5)
    s = compute_advantages(r, 2, "gdpo", whiten=False)
    assert s.tolist() == pytest.approx([INV_SQRT2 + z_b, -INV_SQRT2 - z_b], rel=1e-5)
    grpo = compute_advantages(r[:, :1], 2, "grpo")  # one channel: (0, -big) -> +-1/sqrt(2)
    assert grpo.tolist() == pytest.approx([INV_SQRT2, -INV_SQRT2], rel=1e-5)


def test_eps_zero_constant_channel_is_present_with_z_zero():
    """eps = 0 (plain z-scores): a channel every completion of the group satisfies equally has no contrast, Z = 0,
    exactly as with any eps > 0 - not 0/0 = NaN, which made rvpo drop the channel (and a fully constant group
    became an 'all-NaN' row with advantage 0, left out of the batch statistics)."""
    r = torch.tensor([[1.0, 5.0], [0.0, 5.0], [5.0, 5.0], [5.0, 5.0]])
    z = group_zscores(r, 2, eps=0.0)
    assert z.flatten().tolist() == pytest.approx([INV_SQRT2, 0.0, -INV_SQRT2, 0.0, 0.0, 0.0, 0.0, 0.0], abs=1e-6)
    # RVPO paper, uniform weights, k = 1: S = -log((exp(-Z_a) + exp(-Z_b)) / 2)
    s = [-math.log((math.exp(-INV_SQRT2) + 1) / 2), -math.log((math.exp(INV_SQRT2) + 1) / 2), 0.0, 0.0]
    got = compute_advantages(r, 2, "rvpo", risk=1.0, eps=0.0, whiten=False)
    assert got.tolist() == pytest.approx(s, abs=1e-6)
    m = sum(s) / 4
    sd = math.sqrt(sum((x - m) ** 2 for x in s) / 3)
    assert compute_advantages(r, 2, "rvpo", risk=1.0, eps=0.0).tolist() == pytest.approx(
        [(x - m) / sd for x in s], abs=1e-5)  # all four rows are scored and whitened together


@pytest.mark.parametrize("eps", [-1e-4, math.nan, math.inf])
def test_bad_eps_is_an_error_naming_it(eps):
    """A negative eps can make `std + eps` negative and flip the sign of every z-score of a low-variance channel."""
    r = torch.tensor([[1.0, 0.0], [1.00001, 1.0]], dtype=torch.float64)
    for method in METHODS:
        with pytest.raises(ValueError, match="eps"):
            compute_advantages(r, 2, method, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        group_zscores(r, 2, eps=eps)
