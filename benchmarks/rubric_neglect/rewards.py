"""The benchmark's rule judge on the project's reward path: verdicts by rule (`task.verdicts`), reward channels by
the judge's own scoring code (`judge.scoring.reward_channels`: channel `rubric/jj` = points_j x met_j), laid out as
the gateway's dense matrix (`rubric/00 .. rubric/{K-1}`, slot j >= the prompt's criterion count NaN), and scores
by the HealthBench formula (`judge.scoring.example_score` / `clipped_mean`)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from judge.scoring import clipped_mean, example_score, reward_channels
from contracts.channels import rubric_channels
from trainer.rewards import completion_payload

from benchmarks.rubric_neglect.task import MAX_CRITERIA, verdicts


def _rubric(value: Any) -> list[dict[str, Any]]:
    return json.loads(value) if isinstance(value, str) else value


def dense_row(items: list[dict[str, Any]], completion: str, *, lenient: bool, slots: int = MAX_CRITERIA
              ) -> list[float]:
    """One completion's `[slots]` reward row: `reward_channels(points, met)` in slot order, NaN for absent slots.

    Raises ValueError when the rubric has more than `slots` criteria."""
    if len(items) > slots:
        raise ValueError(f"rubrics: {len(items)} criteria but only {slots} rubric slots")
    channels = reward_channels([float(it["points"]) for it in items], verdicts(items, completion, lenient=lenient))
    return [math.nan if channels.get(name) is None else float(channels[name]) for name in rubric_channels(slots)]


def true_score(items: list[dict[str, Any]], completion: str, *, lenient: bool = False) -> float:
    """HealthBench score of one completion (simple-evals `calculate_score`, not clipped; strict verdicts unless
    `lenient`)."""
    return example_score([float(it["points"]) for it in items], verdicts(items, completion, lenient=lenient))


def healthbench_mean(scores: Sequence[float]) -> float:
    """The HealthBench aggregate: the mean of per-example scores clipped to [0, 1] (simple-evals)."""
    return clipped_mean(list(scores))


class RubricScorer:
    """TRL reward functions, one per rubric slot (`rubric/00` ...), scoring a batch once with the lenient
    (training) or strict judge. `on_batch(rows, texts, rubrics)` gets each batch's `[N][slots]` rows (NaN = absent),
    the completion texts and the decoded rubrics."""

    def __init__(self, *, lenient: bool = True, slots: int = MAX_CRITERIA,
                 on_batch: Callable[[list[list[float]], list[str], list[list[dict]]], None] | None = None):
        self.lenient, self.slots, self.on_batch = lenient, slots, on_batch
        self.names = rubric_channels(slots)
        self._key: tuple | None = None
        self._rows: list[list[float]] = []
        self.n_scoring_passes = 0

    def score(self, completions: Sequence[Any], rubrics: Sequence[Any]) -> list[list[float]]:
        """`[N][slots]` rows for a batch (memoized on the batch: TRL calls each slot's function in turn)."""
        key = (tuple(_text(c) for c in completions), tuple(rubrics) if rubrics is not None else None)
        if key == self._key:
            return self._rows
        if rubrics is None or len(rubrics) != len(completions):
            raise ValueError("rubrics: the rubric reward functions need a 'rubrics' column, one per completion")
        texts, items = list(key[0]), [_rubric(r) for r in rubrics]
        rows = [dense_row(it, t, lenient=self.lenient, slots=self.slots) for t, it in zip(texts, items)]
        self._key, self._rows = key, rows
        self.n_scoring_passes += 1
        if self.on_batch is not None:
            self.on_batch(rows, texts, items)
        return rows

    def reward_funcs(self) -> list[Callable[..., list[float | None]]]:
        return [self._make(j, name) for j, name in enumerate(self.names)]

    def _make(self, j: int, name: str):
        def reward(prompts, completions, rubrics=None, **kwargs) -> list[float | None]:
            return [None if math.isnan(row[j]) else row[j] for row in self.score(completions, rubrics)]

        reward.__name__ = reward.__qualname__ = name
        return reward


def _text(completion: Any) -> str:
    text = completion_payload(completion)
    if not isinstance(text, str):
        raise TypeError("completions: the rubric task is plain text; got a tool-call message")
    return text
