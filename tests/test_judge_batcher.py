"""The async micro-batcher (judge.batcher.MicroBatcher) with a real asyncio loop and a recording handler."""

from __future__ import annotations

import asyncio
import time

import pytest

from judge.batcher import MicroBatcher


def run(coro):
    return asyncio.run(coro)


def test_full_batches_leave_at_once_and_keep_order():
    async def main():
        seen: list[list[int]] = []

        async def handler(xs):
            seen.append(list(xs))
            return [x * 10 for x in xs]

        b = MicroBatcher(handler, max_batch_size=4, max_wait_s=5.0)  # a long wait that full batches never hit
        t0 = time.perf_counter()
        futs = b.submit_many(range(8))
        out = await asyncio.gather(*futs)
        elapsed = time.perf_counter() - t0
        await b.aclose()
        return seen, out, elapsed

    seen, out, elapsed = run(main())
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert out == [x * 10 for x in range(8)]
    assert elapsed < 2.0


def test_partial_batch_waits_max_wait_and_gathers_late_arrivals():
    async def main():
        seen: list[list[int]] = []

        async def handler(xs):
            seen.append(list(xs))
            return xs

        b = MicroBatcher(handler, max_batch_size=100, max_wait_s=0.3)
        t0 = time.perf_counter()
        f1 = b.submit_many([1, 2])
        await asyncio.sleep(0.05)
        f2 = b.submit_many([3])  # arrives within the window of the first items -> same batch
        await asyncio.gather(*f1, *f2)
        elapsed = time.perf_counter() - t0
        await b.aclose()
        return seen, elapsed

    seen, elapsed = run(main())
    assert seen == [[1, 2, 3]]
    assert 0.25 <= elapsed < 2.0  # dispatched by the 0.3 s deadline of the oldest item


def test_bounded_in_flight_batches_grow_while_the_backend_is_busy():
    async def main():
        sizes: list[int] = []

        async def handler(xs):
            sizes.append(len(xs))
            await asyncio.sleep(0.2)  # a slow forward pass
            return xs

        b = MicroBatcher(handler, max_batch_size=64, max_wait_s=0.0, max_concurrent_batches=1)
        first = b.submit_many([0])
        await asyncio.sleep(0.05)  # the first batch (1 item) is running now
        rest = [b.submit_many([i]) for i in range(1, 11)]  # 10 single-item callers queue meanwhile
        await asyncio.gather(*first, *(f for fs in rest for f in fs))
        await b.aclose()
        return sizes

    assert run(main()) == [1, 10]


def test_handler_exception_reaches_every_caller_of_that_batch_only():
    async def main():
        async def handler(xs):
            if 13 in xs:
                raise RuntimeError("boom")
            return xs

        b = MicroBatcher(handler, max_batch_size=2, max_wait_s=0.0)
        futs = b.submit_many([1, 13, 2, 3])
        res = await asyncio.gather(*futs, return_exceptions=True)
        await b.aclose()
        return res

    res = run(main())
    assert isinstance(res[0], RuntimeError) and isinstance(res[1], RuntimeError)
    assert res[2:] == [2, 3]


def test_cancelled_items_are_not_sent_to_the_handler():
    async def main():
        seen: list[list[int]] = []

        async def handler(xs):
            seen.append(list(xs))
            return xs

        b = MicroBatcher(handler, max_batch_size=10, max_wait_s=0.1)
        futs = b.submit_many([1, 2, 3])
        futs[1].cancel()
        await asyncio.gather(futs[0], futs[2])
        await b.aclose()
        return seen

    assert run(main()) == [[1, 3]]


def test_rejects_bad_batch_size():
    async def handler(xs):
        return xs

    with pytest.raises(ValueError):
        MicroBatcher(handler, max_batch_size=0, max_wait_s=0.0)


def test_awaitable_results_release_each_caller_when_its_own_item_is_done():
    """A handler that grades items independently returns one awaitable per item: the fast items' callers get
    their results while the slow one still runs, and a caller that goes away cancels its item's work."""
    async def main():
        slow_started, slow_cancelled = asyncio.Event(), asyncio.Event()

        async def grade(x):
            if x == "slow":
                slow_started.set()
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    slow_cancelled.set()
                    raise
            if x == "bad":
                raise RuntimeError("broken item")
            return x.upper()

        async def handler(xs):
            return [asyncio.ensure_future(grade(x)) for x in xs]

        b = MicroBatcher(handler, max_batch_size=4, max_wait_s=0.0, max_concurrent_batches=1)
        fast, slow, bad = b.submit_many(["fast", "slow", "bad"])
        assert await asyncio.wait_for(fast, 5) == "FAST"  # while "slow" sleeps its 30 s
        with pytest.raises(RuntimeError, match="broken item"):
            await asyncio.wait_for(bad, 5)
        await asyncio.wait_for(slow_started.wait(), 5)
        assert not slow.done()
        slow.cancel()  # the caller's budget is spent
        await asyncio.wait_for(slow_cancelled.wait(), 5)
        # the batch held the only slot until its last item ended; now the next batch runs
        assert await asyncio.wait_for(b.submit("next"), 5) == "NEXT"
        await b.aclose()

    run(main())
