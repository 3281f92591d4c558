"""Held-out evaluation of the benchmark: the demo's and `rvpo train`'s own (rvpo/demo/heldout.py), so that the
benchmark, the demo and `rvpo train` measure a policy the same way."""

from rvpo.demo.heldout import evaluate, sample_completions, score_rows, summarize

__all__ = ["evaluate", "sample_completions", "score_rows", "summarize"]
