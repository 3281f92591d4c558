"""Aggregators against hand values, the published formulas (a plain-Python reference written from the issue's
formulas, not from trainer/aggregation.py) and the limits / identities of the RVPO paper (arXiv 2605.05750)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.aggregation import (METHODS, compute_advantages, group_zscores, softmin, softmin_weights,
                                 variance_penalty)

NAN = float("nan")
EPS = 1e-4


# ---------------------------------------------------------------- plain-Python reference of the formulas
def _mean(xs):
    return sum(xs) / len(xs)


def _bessel_std(xs):
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def ref_zscores(rows, g):
    """Z[i][j] = (r - group mean) / (Bessel std + eps) over the present values; 0 if present once; NaN if absent."""
    n, k = len(rows), len(rows[0])
    z = [[NAN] * k for _ in range(n)]
    for start in range(0, n, g):
        for j in range(k):
            idx = [i for i in range(start, start + g) if not math.isnan(rows[i][j])]
            for i in idx:
                z[i][j] = 0.0 if len(idx) < 2 else (rows[i][j] - _mean([rows[t][j] for t in idx])) / (
                    _bessel_std([rows[t][j] for t in idx]) + EPS)
    return z


def ref_whiten(s):
    idx = [i for i, x in enumerate(s) if not math.isnan(x)]
    if len(idx) < 2:
        return [0.0] * len(s)
    vals = [s[i] for i in idx]
    m, sd = _mean(vals), _bessel_std(vals)
    return [0.0 if math.isnan(x) else (x - m) / (sd + EPS) for x in s]


def ref_scores(rows, g, method, k=1.0, beta=None, w=None):
    """Pre-whitening scores (grpo: final advantages)."""
    n, kk = len(rows), len(rows[0])
    w = w or [1.0] * kk
    if method == "grpo":
        s = [NAN if all(math.isnan(x) for x in r) else sum(wj * x for wj, x in zip(w, r) if not math.isnan(x))
             for r in rows]
        out = []
        for start in range(0, n, g):
            grp = s[start:start + g]
            vals = [x for x in grp if not math.isnan(x)]
            for x in grp:
                out.append(0.0 if math.isnan(x) or len(vals) < 2 else (x - _mean(vals)) / (_bessel_std(vals) + EPS))
        return out
    z = ref_zscores(rows, g)
    out = []
    for i, zr in enumerate(z):
        if method == "gdpo":
            out.append(NAN if all(math.isnan(x) for x in rows[i])
                       else sum(wj * x for wj, x in zip(w, zr) if not math.isnan(x)))
            continue
        pres = [(wj, x) for wj, x in zip(w, zr) if not math.isnan(x) and wj > 0]
        if not pres:
            out.append(NAN)
            continue
        tot = sum(wj for wj, _ in pres)
        wt = [(wj / tot, x) for wj, x in pres]
        mean = sum(a * x for a, x in wt)
        if method == "gdpo_mean":
            out.append(mean)
        elif method == "rvpo":
            top = max(-k * x for _, x in wt)  # log-sum-exp with the usual max shift
            out.append(-(top + math.log(sum(a * math.exp(-k * x - top) for a, x in wt))) / k)
        elif method == "variance_penalty":
            b = k / 2 if beta is None else beta
            out.append(mean - b * sum(a * (x - mean) ** 2 for a, x in wt))
        else:
            out.append(min(x for _, x in wt))
    return out


def ref_advantages(rows, g, method, **kw):
    s = ref_scores(rows, g, method, **kw)
    return s if method == "grpo" else ref_whiten(s)


# ---------------------------------------------------------------- GDPO paper toy case (G = 2, two binary channels)
def test_gdpo_paper_toy_case():
    z1 = 0.5 / (math.sqrt(0.5) + EPS)  # one channel differs: mean 0.5, Bessel std sqrt(0.5)
    a = compute_advantages(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), 2, "gdpo", whiten=False)
    b = compute_advantages(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), 2, "gdpo", whiten=False)
    assert a.tolist() == pytest.approx([-z1, z1], abs=1e-6)  # -/+0.7071
    assert b.tolist() == pytest.approx([-2 * z1, 2 * z1], abs=1e-6)  # -/+1.4142
    assert abs(z1 - 0.7071) < 1e-3 and abs(2 * z1 - 1.4142) < 1e-3
    for r, s in (([[0.0, 0.0], [1.0, 0.0]], 1.0), ([[0.0, 0.0], [1.0, 1.0]], 2.0)):
        grpo = compute_advantages(torch.tensor(r), 2, "grpo")  # sums (0, s): deviation s/2, std s/sqrt(2)
        assert grpo.tolist() == pytest.approx([-(s / 2) / (s / math.sqrt(2) + EPS), (s / 2) / (s / math.sqrt(2) + EPS)],
                                              abs=1e-6)
        assert grpo[1].item() == pytest.approx(0.7071, abs=1e-3)


# ---------------------------------------------------------------- every method against the reference on fixed input
ROWS = [
    [1.0, NAN, 0.0, 2.0], [0.0, 1.0, NAN, 1.0], [NAN, NAN, NAN, NAN], [3.0, 1.0, 1.0, 0.5],   # group 0
    [0.5, 0.2, NAN, 1.0], [0.5, 0.9, NAN, -1.0], [0.5, 0.1, 4.0, 0.0], [0.5, NAN, NAN, 2.5],  # group 1
    [NAN, 1.0, 0.0, 0.0], [NAN, 1.0, 1.0, 0.0], [NAN, 0.0, 1.0, 1.0], [NAN, 0.0, 0.0, 1.0],   # group 2
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5, 0.0]])
def test_methods_match_reference(method, weights):
    r = torch.tensor(ROWS, dtype=torch.float64)
    kw = dict(k=1.7, w=weights)
    got = compute_advantages(r, 4, method, risk=1.7, weights=weights)
    assert got.tolist() == pytest.approx(ref_advantages(ROWS, 4, method, **kw), abs=1e-9)
    raw = compute_advantages(r, 4, method, risk=1.7, weights=weights, whiten=False)
    ref = ref_scores(ROWS, 4, method, **kw)
    assert [x if not math.isnan(x) else None for x in raw.tolist()] == pytest.approx(
        [x if not math.isnan(x) else None for x in ref], abs=1e-9)
    assert got[2] == 0.0  # the all-NaN row


def test_float32_matches_reference():
    r = torch.tensor(ROWS, dtype=torch.float32)
    for method in METHODS:
        got = compute_advantages(r, 4, method, risk=0.8)
        assert got.dtype == torch.float32
        assert got.tolist() == pytest.approx(ref_advantages(ROWS, 4, method, k=0.8), abs=2e-5)


def test_group_of_one_and_single_observation():
    r = torch.tensor([[1.0, NAN], [5.0, 2.0], [7.0, NAN]])
    assert group_zscores(r, 1)[:, 0].tolist() == [0.0, 0.0, 0.0]
    for m in METHODS:
        assert compute_advantages(r, 1, m).abs().max() == 0.0  # group size 1: Z = 0 everywhere -> no signal
    z = group_zscores(torch.tensor([[1.0, NAN], [3.0, 2.0]]), 2)
    assert z[1, 1] == 0.0 and math.isnan(z[0, 1])  # channel present once in its group: Z = 0


# ---------------------------------------------------------------- limits and identities of the SoftMin
Z = torch.tensor([[0.3, -1.2, 2.0, NAN], [1.0, 1.0, NAN, NAN], [-0.5, 0.7, 0.1, 1.9], [NAN, NAN, 4.0, NAN]],
                 dtype=torch.float64)
W = torch.tensor([1.0, 3.0, 0.5, 2.0], dtype=torch.float64)


def _wmean_var(z, w):
    out = []
    for row in z.tolist():
        pres = [(a, x) for a, x in zip(w.tolist(), row) if not math.isnan(x)]
        tot = sum(a for a, _ in pres)
        m = sum(a * x for a, x in pres) / tot
        out.append((m, sum(a * (x - m) ** 2 for a, x in pres) / tot, sum(a * (x - m) ** 3 for a, x in pres) / tot))
    return out


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_k_to_zero_is_weighted_mean(dtype, tol):
    stats = _wmean_var(Z, W)
    for k in (1e-4, 1e-7):  # the gap to the mean is (k/2) var + O(k^2), plus rounding of the dtype
        s = softmin(Z.to(dtype), k, W.to(dtype))
        assert s.tolist() == pytest.approx([m for m, _, _ in stats], abs=k * max(v for _, v, _ in stats) + tol)


def test_k_to_infinity_is_min():
    mins = [min(x for x in row if not math.isnan(x)) for row in Z.tolist()]
    for k in (1e3, 1e5):
        # |S - min| <= log(1 / smallest renormalised weight) / k
        assert softmin(Z, k, W).tolist() == pytest.approx(mins, abs=math.log(7) / k + 1e-12)
    assert compute_advantages(torch.tensor(ROWS), 4, "rvpo", risk=1e5, whiten=False).nan_to_num(9).tolist() == \
        pytest.approx(compute_advantages(torch.tensor(ROWS), 4, "min", whiten=False).nan_to_num(9).tolist(), abs=1e-4)


def test_rvpo_equals_gdpo_when_all_channels_present_and_k_small():
    torch.manual_seed(0)
    r = torch.randint(0, 3, (32, 5)).double()
    # gdpo sums Z, rvpo (k -> 0) averages it; with weights 1/K the two pre-whitening scores are the same numbers
    # (with unit weights they differ by the factor K, which whitening removes up to eps)
    assert compute_advantages(r, 4, "rvpo", risk=1e-8).tolist() == pytest.approx(
        compute_advantages(r, 4, "gdpo", weights=[0.2] * 5).tolist(), abs=1e-6)
    assert compute_advantages(r, 4, "rvpo", risk=1e-8, eps=1e-12).tolist() == pytest.approx(
        compute_advantages(r, 4, "gdpo", eps=1e-12).tolist(), abs=1e-6)


def test_decreasing_in_k():
    ks = [1e-3, 0.1, 0.5, 1.0, 2.0, 5.0, 20.0, 100.0]
    s = torch.stack([softmin(Z, k, W) for k in ks])
    assert (s[1:] <= s[:-1] + 1e-12).all()
    assert (s[-1] < s[0]).sum() == 2  # strictly where the row's channels differ (rows 0 and 2)


def test_shift_equivariance():
    c = torch.tensor([[3.0], [-7.5], [0.25], [100.0]], dtype=torch.float64)
    for k in (0.01, 1.0, 30.0):
        assert (softmin(Z + c, k, W) - softmin(Z, k, W) - c.squeeze(1)).abs().max() < 1e-10


def test_taylor_statement():
    """S = mean - (k/2) var + O(k^2), and the k^2 coefficient is the third central moment / 6 (cumulant expansion)."""
    stats = _wmean_var(Z, W)
    for k in (1e-1, 1e-2, 1e-3):
        s = softmin(Z, k, W)
        for i, (m, v, m3) in enumerate(stats):
            rest = s[i].item() - (m - k / 2 * v)
            assert abs(rest) <= (abs(m3) / 6 + 1.0) * k ** 2
            assert rest / k ** 2 == pytest.approx(m3 / 6, abs=max(5 * k, 1e-6))
        taylor = variance_penalty(Z, k / 2, W)
        assert (s - taylor).abs().max() < 2 * k ** 2


def test_no_overflow_large_k_and_z():
    z = torch.tensor([[1e3, -1e3, 0.0], [-1e3, -999.0, NAN], [1e3, 1e3, 1e3]])
    s = softmin(z, 100.0)
    assert torch.isfinite(s).all()
    assert s.tolist() == pytest.approx([-1e3 + math.log(3) / 100, -1e3 + math.log(2) / 100, 1e3], abs=1e-3)
    r = torch.randn(64, 17) * 1e3
    assert torch.isfinite(compute_advantages(r, 8, "rvpo", risk=100.0, eps=1e-12)).all()


def test_softmin_weights_are_its_gradient():
    z = Z.clone().requires_grad_(True)
    softmin(z, 1.3, W).sum().backward()
    p = softmin_weights(Z, 1.3, W)
    assert torch.allclose(z.grad.nan_to_num(0.0), p, atol=1e-10)
    assert torch.allclose(p.sum(1), torch.ones(4, dtype=torch.float64))


def test_variance_penalty_default_beta_is_half_k():
    r = torch.tensor(ROWS)
    assert torch.allclose(compute_advantages(r, 4, "variance_penalty", risk=3.0),
                          compute_advantages(r, 4, "variance_penalty", risk=1.0, beta=1.5))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("args,kwargs,word", [
    ((torch.zeros(6, 2), 4), {}, "num_generations"),
    ((torch.zeros(4, 0), 2), {}, "rewards"),
    ((torch.zeros(4), 2), {}, "rewards"),
    ((torch.zeros(4, 2), 2), {"risk": 0.0}, "risk"),
    ((torch.zeros(4, 2), 2), {"risk": -1.0}, "risk"),
    ((torch.zeros(4, 2), 2), {"weights": [1.0]}, "weights"),
    ((torch.zeros(4, 2), 2), {"weights": [1.0, -0.1]}, "weights"),
    ((torch.zeros(4, 2), 2), {"method": "mean"}, "method"),
    ((torch.tensor([[math.inf, 0.0], [0.0, 0.0]]), 2), {}, "rewards"),
])
def test_errors_name_the_argument(args, kwargs, word):
    with pytest.raises(ValueError, match=word):
        compute_advantages(*args, **kwargs)


# ---------------------------------------------------------------- property tests on random shapes and NaN masks
@st.composite
def reward_batches(draw):
    p, g, k = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    value = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 3)))
    rows = [[draw(st.one_of(value, st.just(NAN)) if draw(st.booleans()) else value) for _ in range(k)]
            for _ in range(p * g)]
    return rows, g


@settings(max_examples=150, deadline=None)
@given(batch=reward_batches(), method=st.sampled_from(METHODS), k=st.sampled_from([0.05, 0.5, 2.0, 10.0]))
def test_property_matches_reference(batch, method, k):
    rows, g = batch
    got = compute_advantages(torch.tensor(rows, dtype=torch.float64), g, method, risk=k)
    assert torch.isfinite(got).all()
    assert got.tolist() == pytest.approx(ref_advantages(rows, g, method, k=k), abs=1e-6)
    dead = [i for i, r in enumerate(rows) if all(math.isnan(x) for x in r)]
    assert all(got[i] == 0.0 for i in dead)


@settings(max_examples=100, deadline=None)
@given(batch=reward_batches(), k1=st.floats(0.01, 50), k2=st.floats(0.01, 50), c=st.floats(-100, 100))
def test_property_softmin_bounds_monotone_shift(batch, k1, k2, c):
    rows, _ = batch
    z = torch.tensor(rows, dtype=torch.float64)
    lo, hi = sorted((k1, k2))
    s_lo, s_hi = softmin(z, lo), softmin(z, hi)
    live = ~torch.isnan(z).all(1)
    assert torch.isnan(s_lo[~live]).all()
    s_lo, s_hi, zl = s_lo[live], s_hi[live], z[live]
    mean, mn = torch.nanmean(zl, 1), torch.where(torch.isnan(zl), math.inf, zl).amin(1)
    assert (s_hi <= s_lo + 1e-9).all()  # decreasing in k
    assert (s_lo <= mean + 1e-9).all() and (s_hi >= mn - 1e-9).all()  # between min and mean
    assert torch.allclose(softmin(zl + c, lo), s_lo + c, atol=1e-9)  # shift equivariance
