"""Reward sources and reward channel names (docs/contracts.md, "Reward channel names").

One Celery task per item per *source*: the judge grades an item's ``rubrics``, the rules service checks its
``tools`` (+ ``ground_truth``). Each source produces named channels:

- judge: ``rubric/00``, ``rubric/01``, ... — slot j is the j-th rubric criterion of that prompt, value
  ``points_j * met_j`` (higher is better, also for negative-points criteria);
- rules: the nine :data:`RULE_CHANNELS`; the first seven in [0, 1] (1 = satisfied), ``rules/toolrl_format``
  in {0, 1}, ``rules/toolrl_correctness`` in [-3, 3] (ToolRL).
"""

from __future__ import annotations

JUDGE, RULES = "judge", "rules"
#: Reward sources, in the order a job lists them.
SOURCES: tuple[str, ...] = (JUDGE, RULES)

RUBRIC_PREFIX = "rubric/"

#: Rules-service channels, in the order of docs/contracts.md.
RULE_CHANNELS: tuple[str, ...] = (
    "rules/format",
    "rules/function_name",
    "rules/required_args",
    "rules/no_unexpected_args",
    "rules/arg_types",
    "rules/arg_values",
    "rules/call_count",
    "rules/toolrl_format",
    "rules/toolrl_correctness",
)


def rubric_channel(j: int) -> str:
    """Name of rubric slot ``j`` (0-based): ``rubric/00``, ``rubric/01``, ... Raises ValueError for j < 0."""
    if j < 0:
        raise ValueError(f"rubric slot must be >= 0, got {j}")
    return f"{RUBRIC_PREFIX}{j:02d}"


def rubric_channels(m: int) -> list[str]:
    """The first ``m`` rubric slot names."""
    return [rubric_channel(j) for j in range(m)]


def is_rubric_channel(name: str) -> bool:
    return name.startswith(RUBRIC_PREFIX)


def source_channels(source: str, n_rubrics: int) -> list[str]:
    """Channels ``source`` produces for one item with ``n_rubrics`` rubric criteria.

    Raises:
        ValueError: for an unknown source.
    """
    if source == JUDGE:
        return rubric_channels(n_rubrics)
    if source == RULES:
        return list(RULE_CHANNELS)
    raise ValueError(f"unknown reward source {source!r}; expected one of {SOURCES}")


def check_rule_channels(names) -> list[str]:
    """``names`` as a list when each is a rules channel, once. Raises ValueError naming the unknown or repeated ones."""
    names = list(names)
    unknown = [c for c in names if c not in RULE_CHANNELS]
    if unknown:
        raise ValueError(f"unknown rules channel(s) {unknown}; expected names from {list(RULE_CHANNELS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"repeated channel names in {names}")
    return names
