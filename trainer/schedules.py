"""Risk-coefficient schedules k(t) for RVPO training; t = s / (S - 1) in [0, 1] for step s (0-based) of S
(s / (S - g) when TRL generates every g steps), so the first step uses the start value and the last the end
value (`RVPOTrainer.current_risk`).

The RVPO paper (arXiv 2605.05750) anneals k linearly from 0.5 to 2.0: start close to the mean of the channel
z-scores (GDPO-like, every channel counts) and end closer to the worst channel (bottleneck-focused). Every schedule
is called as `schedule(progress) -> k` once per generation batch; `observe(disagreement)` feeds the adaptive one and
is a no-op for the others. Pure Python, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SCHEDULES = ("constant", "linear", "cosine", "adaptive")


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return float(value)


def _progress(t: float) -> float:
    if not 0 <= t <= 1 or math.isnan(t):
        raise ValueError(f"progress: must be in [0, 1], got {t!r}")
    return t


@dataclass
class ConstantRisk:
    """k(t) = k."""

    k: float

    def __post_init__(self):
        self.k = _positive("risk", self.k)

    def __call__(self, progress: float) -> float:
        _progress(progress)
        return self.k

    def observe(self, disagreement: float) -> None:
        pass


@dataclass
class LinearRisk:
    """k(t) = start + (end - start) t (paper: 0.5 -> 2.0)."""

    start: float = 0.5
    end: float = 2.0

    def __post_init__(self):
        self.start, self.end = _positive("risk_start", self.start), _positive("risk_end", self.end)

    def __call__(self, progress: float) -> float:
        return self.start + (self.end - self.start) * _progress(progress)

    def observe(self, disagreement: float) -> None:
        pass


@dataclass
class CosineRisk(LinearRisk):
    """k(t) = end + (start - end) (1 + cos(pi t)) / 2: flat at both ends, steepest mid-run."""

    def __call__(self, progress: float) -> float:
        return self.end + (self.start - self.end) * (1 + math.cos(math.pi * _progress(progress))) / 2


@dataclass
class AdaptiveRisk:
    """EXPERIMENTAL (the paper leaves adaptive k to future work; this rule is ours): more conflict, more caution.

    Signal: the channel disagreement d = mean over scored completions of the (weighted, population) variance of
    that completion's channel z-scores Z_j. By the Taylor statement `S = mean(Z) - (k/2) var(Z) + O(k^2)`, d is
    exactly what k penalises: d ~ 0 means the channels agree (k does not matter, so relax toward the mean),
    d large means a completion that is good on some channels is bad on others (lean toward the worst channel).
    Z are group z-scores, so d has a fixed scale: about (1 - 1/K)(1 - 1/G) for independent channels, 0 for
    identical ones.

    Rule, once per generation batch: `d_bar <- ema * d_bar + (1 - ema) * d` (d_bar starts at the first d), then
    `log k <- log k + rate * (d_bar - target)`, clipped to [k_min, k_max]. Multiplicative, so k stays > 0 and moves
    by at most a factor exp(rate * max(d_bar, target)) per batch. The schedule ignores `progress`.
    """

    start: float = 1.0
    target: float = 0.5
    rate: float = 0.1
    k_min: float = 0.05
    k_max: float = 10.0
    ema: float = 0.9
    k: float = field(init=False)
    d_bar: float | None = field(init=False, default=None)

    def __post_init__(self):
        self.start = _positive("risk", self.start)
        self.k_min, self.k_max = _positive("risk_min", self.k_min), _positive("risk_max", self.k_max)
        if not self.k_min <= self.start <= self.k_max:
            raise ValueError(f"risk: start {self.start} outside [risk_min, risk_max] = [{self.k_min}, {self.k_max}]")
        if not 0 <= self.ema < 1:
            raise ValueError(f"risk_adaptive_ema: must be in [0, 1), got {self.ema}")
        self.target, self.rate = _positive("risk_adaptive_target", self.target), _positive("risk_adaptive_rate",
                                                                                          self.rate)
        self.k = self.start

    def __call__(self, progress: float) -> float:
        _progress(progress)
        return self.k

    def observe(self, disagreement: float) -> None:
        """Update k from one batch's channel disagreement (NaN, e.g. no scored completion, is skipped)."""
        if math.isnan(disagreement):
            return
        if disagreement < 0:
            raise ValueError(f"disagreement: a variance cannot be negative, got {disagreement}")
        self.d_bar = disagreement if self.d_bar is None else self.ema * self.d_bar + (1 - self.ema) * disagreement
        self.k = min(self.k_max, max(self.k_min, self.k * math.exp(self.rate * (self.d_bar - self.target))))


def make_schedule(name: str, *, risk: float = 1.0, risk_start: float = 0.5, risk_end: float = 2.0,
                  adaptive_target: float = 0.5, adaptive_rate: float = 0.1, risk_min: float = 0.05,
                  risk_max: float = 10.0, adaptive_ema: float = 0.9):
    """Build a schedule by name: constant uses `risk`, linear / cosine `risk_start -> risk_end`, adaptive starts
    at `risk`. Raises ValueError for an unknown name or a bad value (the message names the setting)."""
    if name == "constant":
        return ConstantRisk(risk)
    if name == "linear":
        return LinearRisk(risk_start, risk_end)
    if name == "cosine":
        return CosineRisk(risk_start, risk_end)
    if name == "adaptive":
        return AdaptiveRisk(risk, adaptive_target, adaptive_rate, risk_min, risk_max, adaptive_ema)
    raise ValueError(f"risk_schedule: unknown schedule {name!r}; expected one of {SCHEDULES}")
