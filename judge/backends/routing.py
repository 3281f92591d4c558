"""Which grader replica a request goes to: example-sticky consistent hashing with bounded loads and
health-aware failover (``RVPO_JUDGE_BASE_URLS``, ``RVPO_JUDGE_ROUTING``).

Why: every rubric criterion of one example shares the conversation prefix, and a backend with prefix caching
(vLLM automatic prefix caching, SGLang RadixAttention) prefills that prefix once if the criteria land on the
same replica - and once per replica if they scatter (a Kubernetes Service, round robin).

Policies
- ``sticky`` (default). Each replica owns ``vnodes`` points on a hash ring (blake2b of ``url#v``). A new example
  (``pin_key``) starts at the ring point of its ``route_key`` (the prompt, or prompt + completion) and walks
  clockwise to the first replica that is available and not above ``load_factor`` x the mean in-flight requests
  of the available replicas ("consistent hashing with bounded loads", Mirrokni, Thorup & Zadimoghaddam,
  SODA 2018: the load is capped at c x the mean and a key moves only when its replica is full). The example is
  then pinned to that replica: all its criteria follow it, whatever the load, while it is in flight and for
  ``PIN_TTL_S`` after. Examples of one prompt share the ring point, so with ``route_key = prompt`` the G
  completions of a prompt prefer the same replica and spill only when it is above its bound.
- ``round_robin`` / ``random``: per request, ignoring the example (what a plain load balancer does; baselines of
  benchmarks/routing.py).

Health: ``failures`` consecutive failed attempts (transport error, timeout, 408/429/5xx) put a replica in
cool-down for ``cooldown_s``; it is skipped, then half-open: it takes one trial request at a time (a failure
restarts the cool-down, a success makes it fully available again), so a dead replica coming out of its
cool-down does not swallow a burst of requests. A pinned example whose replica is cooling or already failed this request is
re-pinned to the next one on the ring. When every replica is cooling or excluded the one whose cool-down ends
first is used, so one replica behaves exactly as a single ``RVPO_JUDGE_BASE_URL`` always did.

Everything here runs on the event loop thread (no locks); metrics per replica are in judge/metrics.py.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from judge import metrics

PIN_TTL_S = 60.0     # an idle example stays pinned this long (its prefix is likely still cached)
MAX_PINS = 100_000   # most examples remembered (LRU)
POLICIES = ("sticky", "round_robin", "random")


def replica_label(url: str) -> str:
    """The URL as a metric label: without user:password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def example_keys(prompt: Sequence[dict], completion: str, routing_key: str = "prompt") -> tuple[str, str]:
    """(route_key, pin_key) of one example: hex digests of its prompt turns (``routing_key="prompt"``) or of
    prompt + completion (``"example"``), and of prompt + completion. The nonce is not part of either, so a key
    is the same in every request. Raises ValueError for another ``routing_key``."""
    turns = json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False, separators=(",", ":"))
    pin = hashlib.blake2b(json.dumps([turns, completion], ensure_ascii=False).encode(), digest_size=12).hexdigest()
    if routing_key == "example":
        return pin, pin
    if routing_key == "prompt":
        return hashlib.blake2b(turns.encode(), digest_size=12).hexdigest(), pin
    raise ValueError(f"routing_key: expected 'prompt' or 'example', got {routing_key!r}")


def key_hash(text: str) -> int:
    """64-bit position of ``text`` on the ring."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(eq=False)
class Replica:
    """One grader backend: its URL, in-flight requests and health."""

    index: int
    url: str
    label: str
    inflight: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0   # monotonic time before which it is skipped
    half_open: bool = False   # after a cool-down: one trial request at a time until one succeeds
    pool: object = field(default=None, repr=False)  # set by the backend (its connection pool)

    def available(self, now: float) -> bool:
        if now < self.down_until:
            return False
        return not (self.half_open and self.inflight > 0)


class Router:
    """Picks a :class:`Replica` per attempt; the caller reports each attempt's outcome.

    ``acquire(route_key, pin_key, exclude)`` -> replica (its in-flight count +1) and ``release(replica, ok,
    reason)`` after the attempt. Raises ValueError for an empty URL list, duplicate URLs or an unknown policy.
    """

    def __init__(self, urls: Sequence[str], *, policy: str = "sticky", load_factor: float = 1.25,
                 vnodes: int = 64, failures: int = 2, cooldown_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        if not urls:
            raise ValueError("urls: at least one grader URL is needed")
        if len(set(urls)) != len(urls):
            raise ValueError("urls: the same URL is listed twice")
        if policy not in POLICIES:
            raise ValueError(f"policy: unknown routing policy {policy!r}; expected one of {POLICIES}")
        self.policy, self.load_factor, self.failures, self.cooldown_s = policy, load_factor, failures, cooldown_s
        self.clock, self.rng = clock, rng or random.Random()
        self.replicas = [Replica(i, u, replica_label(u)) for i, u in enumerate(urls)]
        points = sorted((key_hash(f"{r.url}#{v}"), r.index) for r in self.replicas for v in range(vnodes))
        self._ring_hashes = [h for h, _ in points]
        self._ring_owner = [i for _, i in points]
        self._pins: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self._pin_inflight: collections.Counter[str] = collections.Counter()
        self._next = 0
        for r in self.replicas:
            metrics.REPLICA_INFLIGHT.labels(r.label).set(0)
            metrics.REPLICA_UP.labels(r.label).set_function(lambda r=r: float(r.available(self.clock())))

    # -- choosing ---------------------------------------------------------------------------------------------
    def acquire(self, route_key: str | None = None, pin_key: str | None = None,
                exclude: set[int] | frozenset[int] = frozenset()) -> Replica:
        """The replica for the next attempt of a request (never raises once constructed).

        ``exclude``: replicas this request already failed on. ``pin_key``: the example (sticky policy).
        """
        now = self.clock()
        ok = [r for r in self.replicas if r.available(now) and r.index not in exclude]
        if not ok:  # every replica cooling or already tried: the one back soonest, preferring untried ones
            pool = [r for r in self.replicas if r.index not in exclude] or self.replicas
            choice, kind = min(pool, key=lambda r: (r.down_until, r.inflight)), "fallback"
        elif self.policy == "round_robin":
            choice, kind = self._round_robin(ok), "round_robin"
        elif self.policy == "random":
            choice, kind = self.rng.choice(ok), "random"
        else:
            choice, kind = self._sticky(route_key, pin_key, ok, now)
        if pin_key is not None and self.policy == "sticky":
            self._pins[pin_key] = (choice.index, now)
            self._pins.move_to_end(pin_key)
            while len(self._pins) > MAX_PINS:
                self._pins.popitem(last=False)
            self._pin_inflight[pin_key] += 1
        choice.inflight += 1
        metrics.ROUTING_DECISIONS.labels(kind).inc()
        metrics.REPLICA_REQUESTS.labels(choice.label).inc()
        metrics.REPLICA_INFLIGHT.labels(choice.label).set(choice.inflight)
        return choice

    def _round_robin(self, ok: list[Replica]) -> Replica:
        n = len(self.replicas)
        for step in range(n):
            r = self.replicas[(self._next + step) % n]
            if r in ok:
                self._next = (r.index + 1) % n
                return r
        return ok[0]  # pragma: no cover - ok is never empty here

    def _sticky(self, route_key: str | None, pin_key: str | None, ok: list[Replica],
                now: float) -> tuple[Replica, str]:
        if pin_key is not None and pin_key in self._pins:
            index, last = self._pins[pin_key]
            pinned = self.replicas[index]
            if pinned in ok and (self._pin_inflight[pin_key] > 0 or now - last < PIN_TTL_S):
                return pinned, "pinned"
            moved = pinned not in ok
        else:
            moved = False
        if route_key is None:  # no key: the least loaded available replica
            return min(ok, key=lambda r: r.inflight), "unkeyed"
        bound = self.load_factor * sum(r.inflight for r in ok) / len(ok)
        start = bisect.bisect(self._ring_hashes, key_hash(route_key))
        seen: set[int] = set()
        first: Replica | None = None
        for step in range(len(self._ring_owner)):
            r = self.replicas[self._ring_owner[(start + step) % len(self._ring_owner)]]
            if r.index in seen:
                continue
            seen.add(r.index)
            if r not in ok:
                continue
            first = first or r
            if r.inflight <= bound:  # bounded loads: above c x mean takes no new example
                return r, "failover" if moved else ("ring" if r is first else "spill")
        return min(ok, key=lambda r: r.inflight), "spill"  # pragma: no cover - some replica is <= the mean

    # -- outcomes ---------------------------------------------------------------------------------------------
    def release(self, replica: Replica, *, ok: bool | None, reason: str = "", pin_key: str | None = None) -> None:
        """End an attempt on ``replica``. ``ok=False`` (a replica failure: transport error, timeout, 408/429/5xx)
        counts towards its cool-down, ``True`` resets it, ``None`` (cancelled) does neither; ``reason`` labels
        the error metric."""
        replica.inflight -= 1
        metrics.REPLICA_INFLIGHT.labels(replica.label).set(replica.inflight)
        if pin_key is not None and self._pin_inflight.get(pin_key):
            self._pin_inflight[pin_key] -= 1
            if not self._pin_inflight[pin_key]:
                del self._pin_inflight[pin_key]
        if ok is None:
            return
        if ok:
            replica.consecutive_failures, replica.half_open = 0, False
            return
        metrics.REPLICA_ERRORS.labels(replica.label, reason or "error").inc()
        replica.consecutive_failures += 1
        if replica.consecutive_failures >= self.failures or replica.half_open:
            replica.down_until = self.clock() + self.cooldown_s
            replica.half_open = True

    def any_untried(self, exclude: set[int]) -> bool:
        """Whether a replica that is available now and not in ``exclude`` exists (then a retry needs no backoff:
        it goes elsewhere)."""
        now = self.clock()
        return any(r.available(now) and r.index not in exclude for r in self.replicas)

    def status(self) -> list[dict]:
        """Per replica: url label, in-flight, available, consecutive failures (for /readyz details, tests)."""
        now = self.clock()
        return [{"replica": r.label, "inflight": r.inflight, "available": r.available(now),
                 "consecutive_failures": r.consecutive_failures} for r in self.replicas]
