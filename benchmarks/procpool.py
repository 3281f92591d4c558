"""Process pool of the training benchmarks (constraint_neglect, rubric_neglect): one job per spawned worker
process with a fixed number of torch threads, or inline when there is one worker."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor

PARENT_POLL_S = 1.0  # how often a worker checks that the benchmark that spawned it is still alive


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


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: a daemon thread that ends this worker (``os._exit``) within :data:`PARENT_POLL_S` once
    ``parent_pid`` is gone. Without it a killed benchmark (SIGTERM/SIGKILL, no clean shutdown) leaves its workers
    training on, holding the cores that the next run's timings depend on."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def make_pool(workers: int):
    """A context-managed executor: `InlineExecutor` for workers <= 1, else a spawn-context ProcessPoolExecutor
    whose workers end when this process does (:func:`exit_with_parent`)."""
    import multiprocessing

    if workers <= 1:
        return InlineExecutor()
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))
