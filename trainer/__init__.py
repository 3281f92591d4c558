"""RVPO trainer: advantage aggregators (`compute_advantages`), risk schedules and a TRL GRPOTrainer subclass.

`import trainer` / `trainer.aggregation` load torch only; `RVPOConfig` and `RVPOTrainer` import TRL on first use.
"""

from __future__ import annotations

from trainer import schedules
from trainer.aggregation import METHODS, compute_advantages

__all__ = ["METHODS", "RVPOConfig", "RVPOTrainer", "compute_advantages", "schedules"]


def __getattr__(name: str):
    if name == "RVPOConfig":
        from trainer.config import RVPOConfig

        return RVPOConfig
    if name == "RVPOTrainer":
        from trainer.trainer import RVPOTrainer

        return RVPOTrainer
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
