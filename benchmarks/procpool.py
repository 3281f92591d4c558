"""Process pool of the training benchmarks (constraint_neglect, rubric_neglect): one job per spawned worker
process with a fixed number of torch threads, or inline when there is one worker."""

from __future__ import annotations

import os
from concurrent.futures import Future, ProcessPoolExecutor


def setup_worker(threads: int) -> None:
    """Call first in every job: `threads` torch threads (runs stay deterministic whatever the load), quiet
    transformers, no tokenizers parallelism."""
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class InlineExecutor:
    """Runs each job at submit time in this process (workers = 1: no start-up cost of a spawned process)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args) -> Future:
        f: Future = Future()
        f.set_result(fn(*args))
        return f


def make_pool(workers: int):
    """A context-managed executor: `InlineExecutor` for workers <= 1, else a spawn-context ProcessPoolExecutor."""
    import multiprocessing

    if workers <= 1:
        return InlineExecutor()
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
