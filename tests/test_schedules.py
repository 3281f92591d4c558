"""Risk schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest

from trainer.schedules import AdaptiveRisk, ConstantRisk, CosineRisk, LinearRisk, make_schedule


def test_constant():
    s = make_schedule("constant", risk=1.5)
    assert [s(t) for t in (0, 0.3, 1)] == [1.5, 1.5, 1.5]


def test_linear_paper_schedule():
    s = make_schedule("linear", risk_start=0.5, risk_end=2.0)
    assert [s(t) for t in (0, 0.25, 0.5, 1)] == pytest.approx([0.5, 0.875, 1.25, 2.0])
    assert LinearRisk(2.0, 0.5)(0.5) == pytest.approx(1.25)


def test_cosine():
    s = CosineRisk(0.5, 2.0)
    # end + (start - end)(1 + cos(pi t))/2: t = 1/3 -> 2 - 1.5 * 0.75
    assert [s(0), s(1 / 3), s(0.5), s(1)] == pytest.approx([0.5, 0.875, 1.25, 2.0])
    assert s(0.01) - s(0) < LinearRisk(0.5, 2.0)(0.01) - 0.5  # flatter than linear at the start


def test_adaptive_rule_by_hand():
    s = AdaptiveRisk(start=1.0, target=0.5, rate=0.2, k_min=0.1, k_max=3.0, ema=0.5)
    assert s(0.7) == 1.0
    s.observe(1.5)  # d_bar = 1.5 -> k = exp(0.2 * 1.0)
    assert s.k == pytest.approx(math.exp(0.2))
    s.observe(0.5)  # d_bar = 0.5 * 1.5 + 0.5 * 0.5 = 1.0 -> k *= exp(0.2 * 0.5)
    assert s(0.0) == pytest.approx(math.exp(0.2 + 0.1))
    s.observe(float("nan"))  # skipped
    assert s.d_bar == 1.0
    for _ in range(100):
        s.observe(5.0)
    assert s.k == 3.0  # clipped at k_max
    for _ in range(300):
        s.observe(0.0)
    assert s.k == 0.1  # agreeing channels: relax to k_min


def test_adaptive_steady_at_target():
    s = make_schedule("adaptive", risk=0.8, adaptive_target=0.4)
    for _ in range(10):
        s.observe(0.4)
    assert s(0.5) == pytest.approx(0.8)


@pytest.mark.parametrize("call,word", [
    (lambda: make_schedule("step"), "risk_schedule"),
    (lambda: ConstantRisk(0.0), "risk"),
    (lambda: LinearRisk(0.5, -1.0), "risk_end"),
    (lambda: AdaptiveRisk(start=20.0), "risk"),
    (lambda: AdaptiveRisk(ema=1.0), "risk_adaptive_ema"),
    (lambda: LinearRisk()(1.5), "progress"),
    (lambda: AdaptiveRisk().observe(-1.0), "disagreement"),
])
def test_errors(call, word):
    with pytest.raises(ValueError, match=word):
        call()


@pytest.mark.parametrize("steps, every, expected", [
    (1, 1, [0.5]),                              # one step: no ramp, the start value
    (2, 1, [0.5, 2.0]),                         # progress 0/1, 1/1
    (6, 1, [0.5, 0.8, 1.1, 1.4, 1.7, 2.0]),     # progress s/5: 0.5 + 1.5 * s / 5
    (6, 2, [0.5, 1.25, 2.0]),                   # a generation every 2 steps (s = 0, 2, 4): progress s/4
])
def test_trainer_risk_reaches_risk_end_on_the_last_step(steps, every, expected):
    """`RVPOTrainer.current_risk` at each step where TRL generates (s = 0, g, 2g, ... < S) of a linear 0.5 -> 2.0
    schedule (hand-computed)."""
    from types import SimpleNamespace

    from trainer.trainer import RVPOTrainer

    fake = SimpleNamespace(risk_schedule=LinearRisk(0.5, 2.0), state=SimpleNamespace(max_steps=steps, global_step=0),
                           args=SimpleNamespace(steps_per_generation=every, num_iterations=1))
    ks = []
    for s in range(0, steps, every):
        fake.state.global_step = s
        ks.append(RVPOTrainer.current_risk(fake))
    assert ks == pytest.approx(expected)
