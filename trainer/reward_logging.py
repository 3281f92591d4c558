"""Unscored rewards in TRL's training logs: the NaN fraction of every channel and the reasons, counted.

TRL's ``GRPOTrainer._calculate_rewards`` (TRL 1.16) passes two callables to every reward function:
``log_metric(name, value)`` appends a scalar that is averaged over the logging step (across processes) and
logged next to ``rewards/<name>/mean``; ``log_extra(column, values)`` adds a column (one value per completion of
this process's batch) to the completions table. The reward functions of ``trainer.reward_client`` and
``trainer.rewards`` report through them, once per generation batch:

- ``rewards/<channel>/nan_fraction``: share of this batch's completions whose ``<channel>`` is NaN (None);
- ``rewards/nan_reasons/<kind>``: number of NaN (completion, channel) cells of the batch whose reason has that
  kind (the text before ``:``, e.g. ``judge_timeout``, ``deadline_exceeded``, ``absent``);
- the ``unscored`` column: per completion, ``channel=kind`` for each of its NaN channels other than by-design
  padding (reason kind ``absent``), ``None`` when every channel has a value.

So a channel that went unscored (a dead judge backend, a deadline) shows in the logs, not only as a mean taken
over fewer completions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from contracts.results import reason_kind

PADDING_KINDS = frozenset({"absent"})


class RewardReporter:
    """Reports each generation batch once per channel and once per batch, whatever order TRL calls the channel
    functions in (a repeated channel, or a new batch object, starts a new round)."""

    def __init__(self):
        self._batch: Any = None
        self._served: set[str] = set()

    def report(self, kwargs: Mapping[str, Any], batch: Any, channel: str, values: Sequence[float | None],
               channel_names: Sequence[str], rows: Sequence[Sequence[float | None]],
               reasons: Sequence[Sequence[str | None]]) -> None:
        """Log ``channel``'s NaN fraction and, on the first call of a round, the batch's reason counts and the
        ``unscored`` column. ``rows[i][k]`` / ``reasons[i][k]``: value / reason of completion i, channel
        ``channel_names[k]``. Does nothing for a caller that passes no ``log_metric`` / ``log_extra``."""
        log_metric, log_extra = kwargs.get("log_metric"), kwargs.get("log_extra")
        first = batch is not self._batch or channel in self._served
        if first:
            self._batch, self._served = batch, set()
        self._served.add(channel)
        if callable(log_metric):
            log_metric(f"rewards/{channel}/nan_fraction", sum(v is None for v in values) / max(len(values), 1))
        if not first:
            return
        counts: Counter = Counter()
        column: list[str | None] = []
        for row, why in zip(rows, reasons, strict=True):
            unscored = []
            for name, v, r in zip(channel_names, row, why, strict=True):
                if v is None:
                    kind = reason_kind(r)
                    counts[kind] += 1
                    if kind not in PADDING_KINDS:
                        unscored.append(f"{name}={kind}")
            column.append("; ".join(unscored) or None)
        if callable(log_metric):
            for kind, n in sorted(counts.items()):
                log_metric(f"rewards/nan_reasons/{kind}", float(n))
        if callable(log_extra):
            log_extra("unscored", column)
