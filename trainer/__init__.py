"""RVPO trainer: advantage aggregators (`compute_advantages`), risk schedules and a TRL GRPOTrainer subclass.

Every export is loaded on first use: `import trainer.reward_client` (the gateway reward source) loads neither
torch nor TRL; `compute_advantages` / `METHODS` / `schedules` load torch, `RVPOConfig` / `RVPOTrainer` TRL.
"""

from __future__ import annotations

import importlib

__all__ = ["METHODS", "RVPOConfig", "RVPOTrainer", "compute_advantages", "schedules"]

_EXPORTS = {"METHODS": "trainer.aggregation", "compute_advantages": "trainer.aggregation",
            "RVPOConfig": "trainer.config", "RVPOTrainer": "trainer.trainer"}


def __getattr__(name: str):
    if name == "schedules":
        return importlib.import_module("trainer.schedules")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
