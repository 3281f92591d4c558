"""HealthBench scoring, as openai/simple-evals ``healthbench_eval.py`` computes it, plus the per-item reward
channels for the trainer.

Reference (simple-evals, healthbench_eval.py):
- ``calculate_score``: per example, sum of ``points`` of the met items (positive AND negative points, used as
  given) over the sum of the positive points; not clipped (it can be negative or exceed nothing but 1);
  ``None`` when no item has positive points.
- ``grade_sample``: metrics of one example = ``overall_score``, each example tag (``theme:*``,
  ``physician_agreed_category:*``) -> ``overall_score``, each rubric tag (``axis:*``, ``level:*``,
  ``cluster:*``) -> ``calculate_score`` over the items carrying it (kept only when not None).
- ``_aggregate_get_clipped_mean`` / ``_compute_clipped_stats``: over a set, per metric name the mean clipped
  to [0, 1], ``n_samples`` and a bootstrap std (1000 resamples with replacement of the same size, the std of
  their clipped means).

One extension: a null verdict (the grader gave no valid answer) is left out of both the numerator and the
denominator - it is never counted as "not met". With no null verdict the result is simple-evals' exactly.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from contracts.channels import rubric_channel

N_BOOTSTRAP = 1000


def example_score(points: Sequence[float], met: Sequence[bool | None]) -> float | None:
    """HealthBench score of one example (simple-evals ``calculate_score``), ignoring null verdicts.

    points: (n_items,) rubric points as given (may be negative); met: (n_items,) True / False / None.
    Returns sum(points_i for met_i True) / sum(points_i > 0 for met_i not None), or None when that denominator
    is 0 (only negative items, or every positive item has a null verdict). Raises ValueError on length mismatch.
    Example: points (7, 5, 10, -6), met (T, F, T, T) -> (7 + 10 - 6) / 22 = 0.5.
    Any finite points are valid (no upper limit): the sums are scaled so that they never overflow, and a score
    below the float range (negative points over ~1e308 times the positive ones) is ``-sys.float_info.max``.
    """
    if len(points) != len(met):
        raise ValueError(f"{len(points)} points but {len(met)} verdicts")
    # Each sum is taken over its terms / 2^e (exact) with 2^e above its largest |term|, by math.fsum, and the ratio
    # is rescaled at the end: points like 1e308 + 1e308 do not overflow to inf (the score was 0.0, or
    # inf / inf = NaN), and tiny positive points next to huge negative ones do not vanish.
    pos = [float(p) for p, m in zip(points, met) if m is not None and p > 0]
    if not pos:
        return None
    achieved, e_a = _scaled_sum([float(p) for p, m in zip(points, met) if m is True])
    possible, e_p = _scaled_sum(pos)
    try:
        return math.ldexp(achieved / possible, e_a - e_p) + 0.0  # + 0.0: never -0.0 (an underflowed tiny loss)
    except OverflowError:
        # achieved <= possible, so only a negative score can leave the float range (met negative points over
        # ~1e308 times the positive ones): the most negative float, which a clipped mean counts as 0 like the
        # exact value (JSON has no -inf)
        return -sys.float_info.max


def _scaled_sum(values: list[float]) -> tuple[float, int]:
    """``(t, e)`` with ``sum(values) = t * 2^e`` and |t| <= len(values): fsum of values / 2^e, e from the largest."""
    e = math.frexp(max((abs(v) for v in values), default=0.0))[1]
    return math.fsum(math.ldexp(v, -e) for v in values), e


def reward_channels(points: Sequence[float], met: Sequence[bool | None]) -> dict[str, float | None]:
    """One reward channel per rubric item: ``rubric/{j:02d}`` = points_j * met_j (a met negative item gives its
    negative points, so every channel is higher-is-better); None (NaN on the trainer side) for a null verdict.
    Raises ValueError on length mismatch."""
    if len(points) != len(met):
        raise ValueError(f"{len(points)} points but {len(met)} verdicts")
    return {rubric_channel(j): (None if m is None else float(p) if m else 0.0)  # never -0.0 for a negative unmet
            for j, (p, m) in enumerate(zip(points, met))}


def example_metrics(rubrics: Sequence[Mapping], met: Sequence[bool | None],
                    example_tags: Iterable[str] = ()) -> dict[str, float]:
    """Per-example metrics as simple-evals ``grade_sample``: ``overall_score``, each example tag -> overall
    score, each rubric tag -> score over the items with that tag (omitted when None).

    rubrics: (n_items,) mappings with ``points`` and ``tags``; met: (n_items,) verdicts.
    If the overall score is None (simple-evals asserts it never is) it and the example tags are omitted.
    """
    points = [float(r["points"]) for r in rubrics]
    overall = example_score(points, met)
    out: dict[str, float] = {}
    if overall is not None:
        out["overall_score"] = overall
        for tag in example_tags:
            out[tag] = overall
    by_tag: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rubrics):
        for tag in dict.fromkeys(r.get("tags", ())):
            by_tag[tag].append(i)
    for tag, idx in by_tag.items():
        s = example_score([points[i] for i in idx], [met[i] for i in idx])
        if s is not None:
            out[tag] = s
    return out


def clipped_mean(values: Sequence[float]) -> float:
    """Mean of ``values`` clipped to [0, 1] (simple-evals ``_compute_clipped_stats(.., "mean")``).
    Raises ValueError on an empty sequence."""
    if len(values) == 0:
        raise ValueError("clipped_mean of no values")
    return float(np.clip(np.mean(np.asarray(values, dtype=float)), 0.0, 1.0))


def bootstrap_std(values: Sequence[float], n_resamples: int = N_BOOTSTRAP,
                  rng: np.random.Generator | int | None = None) -> float:
    """Bootstrap std of the clipped mean (simple-evals ``_compute_clipped_stats(.., "bootstrap_std")``):
    draw ``n_resamples`` samples of len(values) with replacement, take each one's clipped mean, return their
    (population, ddof=0) std. ``rng`` seeds the draw (simple-evals uses numpy's global RNG, unseeded).
    Raises ValueError on an empty sequence."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("bootstrap_std of no values")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    samples = gen.choice(arr, size=(n_resamples, arr.size), replace=True)
    return float(np.std(np.clip(samples.mean(axis=1), 0.0, 1.0)))


def aggregate(per_example: Sequence[Mapping[str, float]], n_resamples: int = N_BOOTSTRAP,
              rng: np.random.Generator | int | None = None) -> dict[str, float]:
    """Aggregate per-example metrics as simple-evals ``_aggregate_get_clipped_mean``: for every metric name,
    ``name`` = clipped mean, ``name:n_samples``, ``name:bootstrap_std``; ``score`` (and its stats) is the
    ``overall_score`` of the examples that have one. Metrics missing in an example are not imputed."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    name2values: dict[str, list[float]] = defaultdict(list)
    for metrics in per_example:
        for name, value in metrics.items():
            name2values[name].append(float(value))
        if metrics.get("overall_score") is not None:
            name2values["score"].append(float(metrics["overall_score"]))
    out: dict[str, float] = {}
    for name, values in name2values.items():
        out[name] = clipped_mean(values)
        out[f"{name}:n_samples"] = len(values)
        out[f"{name}:bootstrap_std"] = bootstrap_std(values, n_resamples, gen)
    return out


def healthbench_report(examples: Sequence[Mapping], n_resamples: int = N_BOOTSTRAP,
                       rng: np.random.Generator | int | None = None) -> dict:
    """Full HealthBench summary of graded examples.

    examples: mappings with ``rubrics`` (points, tags), ``met`` (verdicts in rubric order) and optionally
    ``example_tags``. Returns ``{"score", "score_bootstrap_std", "n_samples", "axes": {axis: {mean,
    bootstrap_std, n_samples}}, "themes": {...}, "metrics": <aggregate(...)>}`` where axes come from
    ``axis:*`` rubric tags and themes from ``theme:*`` example tags (the tag prefix is dropped in the keys).
    """
    per_example = [example_metrics(e["rubrics"], e["met"], e.get("example_tags", ())) for e in examples]
    agg = aggregate(per_example, n_resamples, rng)

    def group(prefix: str) -> dict[str, dict[str, float]]:
        return {
            name[len(prefix):]: {"mean": agg[name], "bootstrap_std": agg[f"{name}:bootstrap_std"],
                                 "n_samples": agg[f"{name}:n_samples"]}
            for name in sorted(agg) if name.startswith(prefix) and ":" not in name[len(prefix):]
        }

    return {
        "score": agg.get("score", math.nan),
        "score_bootstrap_std": agg.get("score:bootstrap_std", math.nan),
        "n_samples": agg.get("score:n_samples", 0),
        "axes": group("axis:"),
        "themes": group("theme:"),
        "metrics": agg,
    }
