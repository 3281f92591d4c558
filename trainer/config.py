"""`RVPOConfig`: TRL's `GRPOConfig` plus the advantage method and the risk-coefficient schedule."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from trl import GRPOConfig

from trainer.aggregation import DROP_CONSTANT_METHODS, METHODS
from trainer.schedules import SCHEDULES, make_schedule

logger = logging.getLogger(__name__)


@dataclass
class RVPOConfig(GRPOConfig):
    """GRPOConfig for `RVPOTrainer`. Everything TRL does (generation, reward calling, loss) is configured as for
    GRPOTrainer; only the advantages change. `multi_objective_aggregation` and `scale_rewards` are not used
    (the advantage method replaces them). ``bf16`` left unset is True where the GPU supports it and False
    otherwise (TRL would make it True everywhere, which fails on a CPU-only machine). Raises ValueError, naming
    the field, for an unknown method or schedule or a bad risk value."""

    advantage_method: str = field(default="rvpo", metadata={"help": f"One of {METHODS}."})
    risk: float = field(default=1.0, metadata={"help": "Risk coefficient k > 0 (constant schedule; adaptive start)."})
    risk_schedule: str = field(default="constant", metadata={"help": f"One of {SCHEDULES}."})
    risk_start: float = field(default=0.5, metadata={"help": "k at the start of a linear / cosine schedule."})
    risk_end: float = field(default=2.0, metadata={"help": "k at the end of a linear / cosine schedule."})
    risk_beta: float | None = field(default=None, metadata={"help": "variance_penalty beta; default k / 2."})
    risk_min: float = field(default=0.05, metadata={"help": "Adaptive schedule: lower clip of k."})
    risk_max: float = field(default=10.0, metadata={"help": "Adaptive schedule: upper clip of k."})
    risk_adaptive_target: float = field(default=0.5, metadata={"help": "Adaptive: target channel disagreement."})
    risk_adaptive_rate: float = field(default=0.1, metadata={"help": "Adaptive: step of log k per unit of error."})
    risk_adaptive_ema: float = field(default=0.9, metadata={"help": "Adaptive: EMA factor of the disagreement."})
    advantage_eps: float = field(default=1e-4, metadata={"help": "Added to every std (TRL uses 1e-4)."})
    pass_threshold: float = field(default=0.0, metadata={"help": "A channel passes when its reward > this."})
    drop_constant_channels: bool = field(default=False, metadata={
        "help": "Leave channels constant within a group out of the aggregation instead of Z = 0 (gdpo_mean, rvpo, "
                "variance_penalty, min only)."})

    def __post_init__(self):
        if self.bf16 is None and not self.fp16 and not self.use_cpu:
            # TRL turns an unset bf16 into True, which fails on a CPU-only machine: use it where the GPU has it
            from transformers.utils import is_torch_bf16_gpu_available

            self.bf16 = is_torch_bf16_gpu_available()
        super().__post_init__()
        if self.advantage_method not in METHODS:
            raise ValueError(f"advantage_method: unknown method {self.advantage_method!r}; expected one of {METHODS}")
        if self.drop_constant_channels and self.advantage_method not in DROP_CONSTANT_METHODS:
            raise ValueError(f"drop_constant_channels: only for {DROP_CONSTANT_METHODS}, not "
                             f"advantage_method={self.advantage_method!r}")
        if self.risk_beta is not None and not self.risk_beta >= 0:
            raise ValueError(f"risk_beta: must be >= 0, got {self.risk_beta}")
        if not self.advantage_eps > 0:
            raise ValueError(f"advantage_eps: must be > 0, got {self.advantage_eps}")
        self.make_risk_schedule()  # validates the schedule settings now rather than at the first step
        if self.scale_rewards != "group":
            logger.warning("RVPOConfig: scale_rewards=%r is ignored; advantage_method=%r sets the normalisation",
                           self.scale_rewards, self.advantage_method)

    def make_risk_schedule(self):
        """A fresh schedule object (see `trainer.schedules`) built from these settings."""
        return make_schedule(self.risk_schedule, risk=self.risk, risk_start=self.risk_start, risk_end=self.risk_end,
                             adaptive_target=self.risk_adaptive_target, adaptive_rate=self.risk_adaptive_rate,
                             risk_min=self.risk_min, risk_max=self.risk_max, adaptive_ema=self.risk_adaptive_ema)
