"""`gdpo_mean` (the GDPO baseline of the RVPO paper) and the `drop_constant_channels` option, against cases
worked out by hand from the formulas (module docstring of trainer/aggregation.py), plus their wiring through
`RVPOConfig` into a real 2-step `RVPOTrainer` run."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.aggregation import compute_advantages, group_zscores

EPS = 1e-4
NAN = float("nan")
# Two values {1, 0} in a group of G = 2: mean 1/2, Bessel std sqrt(1/2), so Z = +-c.
C = 0.5 / (math.sqrt(0.5) + EPS)

# Group 0: two channels that move together, third absent. Group 1: channel 0 varies, channel 1 absent,
# channel 2 constant (0, 0).
ROWS = [[1.0, 1.0, NAN], [0.0, 0.0, NAN], [1.0, NAN, 0.0], [0.0, NAN, 0.0]]


def _whiten(s):
    vals = [x for x in s if not math.isnan(x)]
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((x - m) ** 2 for x in vals) / (len(vals) - 1))
    return [0.0 if math.isnan(x) else (x - m) / (sd + EPS) for x in s]


def test_gdpo_mean_hand_case():
    # (1/M) sum Z over the present channels: row 0 (c + c)/2, row 1 -c, row 2 (c + 0)/2, row 3 -c/2.
    r = torch.tensor(ROWS, dtype=torch.float64)
    raw = compute_advantages(r, 2, "gdpo_mean", whiten=False)
    assert raw.tolist() == pytest.approx([C, -C, C / 2, -C / 2], abs=1e-12)
    # whitening: mean 0, Bessel std = c sqrt((1 + 1 + 1/4 + 1/4) / 3)
    sd = C * math.sqrt(2.5 / 3)
    expected = [C / (sd + EPS), -C / (sd + EPS), C / 2 / (sd + EPS), -C / 2 / (sd + EPS)]
    assert compute_advantages(r, 2, "gdpo_mean").tolist() == pytest.approx(expected, abs=1e-9)
    assert expected[0] == pytest.approx(1.0954, abs=1e-3)
    # gdpo's sum instead: row 0 gets 2c (two channels) where gdpo_mean gives c
    assert compute_advantages(r, 2, "gdpo", whiten=False).tolist() == pytest.approx([2 * C, -2 * C, C, -C],
                                                                                      abs=1e-12)


def test_gdpo_mean_weights_renormalise_over_present_channels_and_all_nan_row():
    r = torch.tensor([[1.0, 0.0, NAN], [0.0, 1.0, NAN], [NAN, NAN, NAN], [NAN, NAN, NAN]], dtype=torch.float64)
    raw = compute_advantages(r, 2, "gdpo_mean", weights=[3.0, 1.0, 5.0], whiten=False)
    # row 0: (3 c + 1 (-c)) / 4 = c/2; row 1: -c/2; the all-NaN group has no present channel
    assert raw[:2].tolist() == pytest.approx([C / 2, -C / 2], abs=1e-12)
    assert torch.isnan(raw[2:]).all()
    adv = compute_advantages(r, 2, "gdpo_mean", weights=[3.0, 1.0, 5.0])
    assert adv.tolist() == pytest.approx(_whiten(raw.tolist()), abs=1e-9) and adv[2:].tolist() == [0.0, 0.0]


def test_gdpo_mean_is_the_small_k_limit_of_rvpo():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(32, 5, generator=g, dtype=torch.float64)
    r[torch.rand(32, 5, generator=g) < 0.3] = NAN
    a = compute_advantages(r, 8, "gdpo_mean", whiten=False)
    b = compute_advantages(r, 8, "rvpo", risk=1e-7, whiten=False)
    ok = ~torch.isnan(a)
    assert torch.equal(ok, ~torch.isnan(b)) and torch.allclose(a[ok], b[ok], atol=1e-6)


def test_drop_constant_channels_rvpo_hand_case():
    r = torch.tensor(ROWS, dtype=torch.float64)
    k = 1.0
    default = compute_advantages(r, 2, "rvpo", risk=k, whiten=False)
    # literal formula: row 2 = -(1/k) log((exp(-k c) + exp(0)) / 2); dropped: the constant channel 2 is left out
    lit = -math.log((math.exp(-k * C) + 1.0) / 2) / k
    lit3 = -math.log((math.exp(k * C) + 1.0) / 2) / k
    assert default.tolist() == pytest.approx([C, -C, lit, lit3], abs=1e-12)
    dropped = compute_advantages(r, 2, "rvpo", risk=k, whiten=False, drop_constant_channels=True)
    assert dropped.tolist() == pytest.approx([C, -C, C, -C], abs=1e-12)
    assert lit == pytest.approx(0.2923, abs=1e-3) and lit3 == pytest.approx(-0.4148, abs=1e-3)


def test_drop_constant_channels_flat_group_leaves_the_whitening():
    # group 1 is flat (nothing varies): literal formula gives S = 0 there, which enters the batch statistics;
    # with the option those rows have no channel left: advantage 0, out of the statistics.
    r = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    for method in ("rvpo", "gdpo_mean", "variance_penalty", "min"):
        lit = compute_advantages(r, 2, method, risk=2.0)
        sd = math.sqrt((C * C + C * C) / 3)  # scores (c, -c, 0, 0)
        assert lit.tolist() == pytest.approx([C / (sd + EPS), -C / (sd + EPS), 0.0, 0.0], abs=1e-9), method
        drop = compute_advantages(r, 2, method, risk=2.0, drop_constant_channels=True)
        sd = math.sqrt(2 * C * C)  # scores (c, -c) only
        assert drop.tolist() == pytest.approx([C / (sd + EPS), -C / (sd + EPS), 0.0, 0.0], abs=1e-9), method
        assert drop[0].item() == pytest.approx(0.7070, abs=1e-3)


def test_drop_constant_channels_zscores_and_min():
    r = torch.tensor(ROWS, dtype=torch.float64)
    z = group_zscores(r, 2, drop_constant_channels=True)
    assert torch.isnan(z[2:, 2]).all() and torch.isnan(z[2:, 1]).all()  # constant -> absent; absent stays absent
    assert group_zscores(r, 2)[2:, 2].tolist() == [0.0, 0.0]
    # min: literal row 2 = min(c, 0) = 0, row 3 = -c; dropped row 2 = c
    assert compute_advantages(r, 2, "min", whiten=False).tolist() == pytest.approx([C, -C, 0.0, -C], abs=1e-12)
    assert compute_advantages(r, 2, "min", whiten=False, drop_constant_channels=True).tolist() == \
        pytest.approx([C, -C, C, -C], abs=1e-12)


@pytest.mark.parametrize("method", ["grpo", "gdpo"])
def test_drop_constant_channels_refused_where_meaningless(method):
    with pytest.raises(ValueError, match="drop_constant_channels"):
        compute_advantages(torch.zeros(4, 2), 2, method, drop_constant_channels=True)


def test_config_refuses_drop_constant_for_gdpo(tmp_path):
    from tests.trainer_fixtures import tiny_args
    from trainer import RVPOConfig

    with pytest.raises(ValueError, match="drop_constant_channels"):
        tiny_args(RVPOConfig, tmp_path, advantage_method="gdpo", drop_constant_channels=True)
    assert tiny_args(RVPOConfig, tmp_path, advantage_method="gdpo_mean").advantage_method == "gdpo_mean"


def prompt_only_reward(prompts, completions, **kwargs):
    """Depends on the prompt only, so it is constant within every group (no within-group contrast)."""
    return [float(len(p) % 3) for p in prompts]


def test_trainer_uses_gdpo_mean_and_drop_constant(tiny_model_dir, tmp_path):
    from tests.test_rvpo_trainer import G, recording
    from tests.trainer_fixtures import length_reward, prompt_dataset, tiny_args
    from trainer import RVPOConfig, RVPOTrainer

    funcs = [length_reward, prompt_only_reward]
    for method, drop in (("gdpo_mean", False), ("rvpo", True)):
        args = tiny_args(RVPOConfig, tmp_path / method, per_device_train_batch_size=8, num_generations=G,
                         max_steps=2, advantage_method=method, risk=1.5, drop_constant_channels=drop)
        trainer = recording(RVPOTrainer)(model=str(tiny_model_dir), reward_funcs=funcs, args=args,
                                         train_dataset=prompt_dataset(4))
        trainer.train()
        assert len(trainer.generations) == 2
        for gen in trainer.generations:
            rewards = gen["logged_rewards"]
            assert rewards.shape == (8, 2)
            expected = compute_advantages(rewards, G, method, risk=1.5, drop_constant_channels=drop)
            assert torch.allclose(gen["advantages"], expected, atol=1e-6)
            if drop:  # the option really reached the trainer: the literal formula differs on these batches
                literal = compute_advantages(rewards, G, method, risk=1.5)
                assert not torch.allclose(literal, expected, atol=1e-4)


@pytest.mark.parametrize("g, shrink", [(16, 0.0318), (4, 0.1340)])
def test_bessel_std_lowers_the_effective_risk(g, shrink):
    # Bessel z = sqrt((G-1)/G) x population z, and S_k(cZ) = c S_{ck}(Z): after the whitening, rvpo at k is the
    # SoftMin of the population z-scores at c k (written here from the formula, eps = 0).
    c = math.sqrt((g - 1) / g)
    assert 1 - c == pytest.approx(shrink, abs=1e-4)  # 3 % at G = 16, 13 % at G = 4
    r = torch.rand(6 * g, 5, generator=torch.Generator().manual_seed(g), dtype=torch.float64)
    grp = r.view(-1, g, 5)
    zp = ((grp - grp.mean(1, keepdim=True)) / grp.std(1, unbiased=False, keepdim=True)).view(-1, 5)
    k = 2.0
    s = -torch.log(torch.exp(-k * c * zp).mean(1)) / (k * c)
    expected = (s - s.mean()) / s.std()
    assert torch.allclose(compute_advantages(r, g, "rvpo", risk=k, eps=0.0), expected, atol=1e-9)
    s_nominal = -torch.log(torch.exp(-k * zp).mean(1)) / k  # the nominal k on population z: not the same
    assert not torch.allclose(compute_advantages(r, g, "rvpo", risk=k, eps=0.0),
                              (s_nominal - s_nominal.mean()) / s_nominal.std(), atol=1e-4)
