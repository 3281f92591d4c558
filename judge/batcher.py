"""Async micro-batcher: concurrent callers submit items; a single loop groups them into batches of at most
``max_batch_size`` and hands each batch to ``handler``.

Dispatch rule: a batch leaves as soon as ``max_batch_size`` items are queued, or when its oldest item has
waited ``max_wait_s``. With ``max_concurrent_batches = n`` the loop waits for a free slot before forming the
next batch, so items pile up while the backend is busy and the next batch is bigger (local model); with None,
batches are dispatched immediately and the backend bounds its own concurrency (HTTP backend).
Items submitted together in one ``submit_many`` call are queued contiguously (one example's rubric items reach
the backend side by side, sharing their prompt prefix).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """``handler(list[T]) -> list[R | Awaitable[R]]`` (same length and order); results reach callers through
    futures. An element that is awaitable (a backend grading items independently) resolves its caller as soon as
    it is done, not when the slowest item of the batch is, and is cancelled when its caller goes away.

    If ``handler`` raises, every item of that batch gets the exception. ``on_batch(size)`` is called per
    dispatched batch (metrics, tests); ``on_depth(n)`` with the queue length after each change.
    """

    def __init__(self, handler: Callable[[list[T]], Awaitable[list[R]]], *, max_batch_size: int,
                 max_wait_s: float, max_concurrent_batches: int | None = None,
                 on_batch: Callable[[int], None] | None = None, on_depth: Callable[[int], None] | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.handler, self.max_batch_size, self.max_wait_s = handler, max_batch_size, max_wait_s
        self._slots = asyncio.Semaphore(max_concurrent_batches) if max_concurrent_batches else None
        self._on_batch, self._on_depth = on_batch, on_depth
        self._queue: collections.deque[tuple[T, asyncio.Future, float]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        """Start the dispatch loop (idempotent); needs a running event loop."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Stop the loop; give in-flight batches ``grace_s`` seconds, then cancel them. Items still queued or in
        a cancelled batch get CancelledError (at shutdown no caller is normally left waiting: uvicorn finishes
        the open requests before the app's lifespan ends)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        while self._queue:
            _, fut, _ = self._queue.popleft()
            fut.cancel()

    def submit_many(self, items: Iterable[T]) -> list[asyncio.Future]:
        """Queue ``items`` contiguously; returns one future per item (result R or the handler's exception)."""
        self.start()
        loop = asyncio.get_running_loop()
        now = loop.time()
        futs = []
        for item in items:
            fut = loop.create_future()
            self._queue.append((item, fut, now))
            futs.append(fut)
        self._changed()
        return futs

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result."""
        return await self.submit_many([item])[0]

    def __len__(self) -> int:
        return len(self._queue)

    def _changed(self) -> None:
        self._wakeup.set()
        if self._on_depth:
            self._on_depth(len(self._queue))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._slots is not None:
                await self._slots.acquire()
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # wait until the batch is full or the oldest item has waited max_wait_s
            while len(self._queue) < self.max_batch_size:
                remaining = self._queue[0][2] + self.max_wait_s - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                if not self._queue:
                    break
            batch: list[tuple[T, asyncio.Future]] = []
            while self._queue and len(batch) < self.max_batch_size:
                item, fut, _ = self._queue.popleft()
                if not fut.done():  # the caller went away (cancelled): don't grade it
                    batch.append((item, fut))
            if self._on_depth:
                self._on_depth(len(self._queue))
            if not batch:
                if self._slots is not None:
                    self._slots.release()
                continue
            task = loop.create_task(self._dispatch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        try:
            if self._on_batch:
                self._on_batch(len(batch))
            try:
                results = await self.handler([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"handler returned {len(results)} results for {len(batch)} items")
            except Exception as exc:  # noqa: BLE001 - forwarded to every caller of the batch
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            running = []
            for (_, fut), res in zip(batch, results):
                if inspect.isawaitable(res):
                    running.append(_chain(asyncio.ensure_future(res), fut))
                elif not fut.done():
                    fut.set_result(res)
            if running:  # the batch keeps its slot until its last item is done
                await asyncio.wait(running)
        except asyncio.CancelledError:
            for _, fut in batch:
                fut.cancel()  # also cancels the item's running awaitable (_chain)
            raise
        finally:
            if self._slots is not None:
                self._slots.release()


def _chain(task: asyncio.Future, fut: asyncio.Future) -> asyncio.Future:
    """Resolve the caller's ``fut`` with ``task``'s result or exception as soon as it is done; a caller that goes
    away (``fut`` cancelled, e.g. its time budget spent) cancels ``task``. Returns ``task``."""

    def done(t: asyncio.Future) -> None:
        if fut.done():
            return
        if t.cancelled():
            fut.cancel()
        elif t.exception() is not None:
            fut.set_exception(t.exception())
        else:
            fut.set_result(t.result())

    def gone(f: asyncio.Future) -> None:
        if f.cancelled() and not task.done():
            task.cancel()

    task.add_done_callback(done)
    fut.add_done_callback(gone)
    return task
