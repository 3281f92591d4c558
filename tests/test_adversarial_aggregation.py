"""Adversarial inputs for the advantage aggregators: the z-score is scale-free, so huge reward magnitudes must not
silently zero a channel, and `eps` must not change which channels count. Expected values by hand from the
formulas of the GDPO / RVPO papers (Bessel std, SoftMin `-(1/k) log((1/M) sum_j exp(-k Z_j))`)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.aggregation import METHODS, compute_advantages, group_zscores, softmin, softmin_weights

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


# --- rewards near the float max, and risk k (or k * Z) beyond the dtype's range ---------------------------------

DTYPES = [torch.float32, torch.float64]


def _softmin_ref(z: list[float], k: float) -> float:
    """-(1/k) log((1/M) sum_j exp(-k z_j)), shifted by min(z) so Python's floats do not overflow for moderate k."""
    m = min(z)
    return m - math.log(math.fsum(math.exp(-k * (x - m)) for x in z) / len(z)) / k


@pytest.mark.parametrize("dtype", DTYPES)
def test_rewards_at_the_float_max_keep_their_z_scores(dtype):
    """Rewards (max, -max, max/2, 0): the group sum and the deviations overflowed, Z = -inf for a finite reward (and
    rvpo / variance_penalty gave -inf). Z is scale-free: the z-scores of (1, -1, 1/2, 0), by hand."""
    big = torch.finfo(dtype).max
    r = torch.tensor([[big, 0.0], [-big, 1.0], [big / 2, 2.0], [0.0, 3.0]], dtype=dtype)
    dev = [0.875, -1.125, 0.375, -0.125]  # (1, -1, 0.5, 0) - 0.125
    sd = math.sqrt(sum(d * d for d in dev) / 3)
    za = [d / sd for d in dev]  # eps / max is far below the precision
    z = group_zscores(r, 4)
    assert z[:, 0].tolist() == pytest.approx(za, rel=1e-5)
    s = compute_advantages(r, 4, "rvpo", risk=1.0, whiten=False)
    zb = [(x - 1.5) / (math.sqrt(5 / 3) + 1e-4) for x in (0.0, 1.0, 2.0, 3.0)]
    assert s.tolist() == pytest.approx([_softmin_ref([a, b], 1.0) for a, b in zip(za, zb)], rel=1e-5)
    for method in METHODS:
        assert torch.isfinite(compute_advantages(r, 4, method)).all(), method


@pytest.mark.parametrize("dtype", DTYPES)
def test_grpo_weighted_sum_beyond_the_float_max(dtype):
    """grpo sums the channels first: max + max overflowed to inf and the group's advantages became (-max, 0)
    instead of +-1/sqrt(2) (two distinct values; eps is negligible at this scale)."""
    big = torch.finfo(dtype).max
    r = torch.tensor([[big, big], [0.0, 0.0]], dtype=dtype)
    assert compute_advantages(r, 2, "grpo").tolist() == pytest.approx([INV_SQRT2, -INV_SQRT2], rel=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmin_z_near_the_float_max(dtype):
    """z_j - z_min overflows for z = (max, -max): the SoftMin is -max + log(2)/k = -max at that scale; for
    (0.9 max, 0.5 max) it is 0.5 max + log(2)/k, i.e. 0.5 max."""
    big = torch.finfo(dtype).max
    z = torch.tensor([[big, -big], [0.9 * big, 0.5 * big]], dtype=dtype)
    for k in (1e-3, 1.0, 1e300):
        got = softmin(z, k)
        assert got.tolist() == pytest.approx([-big, 0.5 * big], rel=1e-6), k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1e39, 1e300, 1e308])
def test_softmin_huge_k_is_the_hard_min(dtype, k):
    """k beyond float32's range (or k * Z beyond float64's) gave 0 * inf = NaN. The SoftMin is min + O(log(M)/k):
    the hard min (1, -1) -> -1, (0.5, 0.2) -> 0.2; the channel shares are one-hot at the min (split on a tie)."""
    z = torch.tensor([[1.0, -1.0], [0.5, 0.2], [0.3, 0.3]], dtype=dtype)
    assert softmin(z, k).tolist() == pytest.approx([-1.0, 0.2, 0.3], rel=1e-6)  # 0.2 in float32 is 0.2 + 3e-9
    assert softmin_weights(z, k).flatten().tolist() == pytest.approx([0.0, 1.0, 0.0, 1.0, 0.5, 0.5], abs=1e-12)
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.5], [0.0, 3.0]], dtype=dtype)
    assert compute_advantages(r, 2, "rvpo", risk=k).tolist() == pytest.approx(
        compute_advantages(r, 2, "min").tolist(), abs=1e-6)


@pytest.mark.parametrize("dtype, k", [(torch.float32, 1e-45), (torch.float32, 1e-300), (torch.float64, 1e-300),
                                      (torch.float64, 5e-324)])
def test_softmin_tiny_k_is_the_mean(dtype, k):
    """k below the dtype's normal range: k became 0 in float32 (0 / 0 = NaN) or lost its precision (1e-45 in
    float32, 5e-324 in float64 gave the min). The k -> 0 limit is the mean, (1, -1) -> 0, (0.5, 0.2) -> 0.35."""
    z = torch.tensor([[1.0, -1.0], [0.5, 0.2]], dtype=dtype)
    assert softmin(z, k).tolist() == pytest.approx([0.0, 0.35], abs=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1e-3, 1.0, 7.0, 50.0])
def test_softmin_matches_the_formula(dtype, k):
    z = [[1.3, -0.4, 0.2], [2.0, 2.0, -3.0], [0.0, 0.0, 0.0]]
    got = softmin(torch.tensor(z, dtype=dtype), k).tolist()
    assert got == pytest.approx([_softmin_ref(row, k) for row in z], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1e39, 1e300])
def test_variance_penalty_huge_k_is_the_whitened_minus_variance(dtype, k):
    """beta = k/2 beyond the dtype's range made beta * var = inf, S = -inf and every advantage 0. The whitening
    is scale-free, so as beta -> inf the advantages go to whiten(-var_j Z): computed here by hand (Bessel
    z-scores with eps = 1e-4, population variance over the two channels, batch whitening with eps negligible)."""
    groups = [[[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]], [[0.0, 3.0], [1.0, 1.0], [5.0, 0.0]]]
    z_rows = [[0.0, 0.0] for _ in range(6)]
    for g, rows in enumerate(groups):
        for c in range(2):
            col = [row[c] for row in rows]
            m = sum(col) / 3
            sd = math.sqrt(sum((x - m) ** 2 for x in col) / 2)
            for i, x in enumerate(col):
                z_rows[3 * g + i][c] = (x - m) / (sd + 1e-4)
    s = [-((a - b) / 2) ** 2 for a, b in z_rows]  # -var of two values: -((a - b) / 2)^2
    m = sum(s) / 6
    sd = math.sqrt(sum((x - m) ** 2 for x in s) / 5)
    r = torch.tensor([row for rows in groups for row in rows], dtype=dtype)
    got = compute_advantages(r, 3, "variance_penalty", risk=k)
    assert got.tolist() == pytest.approx([(x - m) / sd for x in s], abs=1e-5)
