"""Reward channel names shared by the worker, the gateway and the trainer's reward client (docs/contracts.md)."""

from __future__ import annotations

from services.rules.schemas import CHANNELS

#: Rules-service channels, in the order of docs/contracts.md. The first seven are in [0, 1] (1 = satisfied);
#: `rules/toolrl_format` is 0/1 and `rules/toolrl_correctness` is in [-3, 3] (ToolRL).
RULE_CHANNELS: tuple[str, ...] = CHANNELS

#: Reward sources: one Celery task per item per source.
JUDGE, RULES = "judge", "rules"
SOURCES: tuple[str, ...] = (JUDGE, RULES)


def rubric_channel(j: int) -> str:
    """Name of rubric slot ``j`` (0-based): ``rubric/00``, ``rubric/01``, ... (value ``points * met``)."""
    if j < 0:
        raise ValueError(f"rubric slot must be >= 0, got {j}")
    return f"rubric/{j:02d}"


def rubric_channels(m: int) -> list[str]:
    """The first ``m`` rubric slot names."""
    return [rubric_channel(j) for j in range(m)]


def source_channels(source: str, n_rubrics: int) -> list[str]:
    """Channels a source produces for one item with ``n_rubrics`` rubric criteria.

    Raises:
        ValueError: for an unknown source.
    """
    if source == JUDGE:
        return rubric_channels(n_rubrics)
    if source == RULES:
        return list(RULE_CHANNELS)
    raise ValueError(f"unknown reward source {source!r}; expected one of {SOURCES}")
