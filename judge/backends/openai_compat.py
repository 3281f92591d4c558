"""OpenAI-compatible chat-completions backend (vLLM, SGLang, Ollama, OpenAI) over httpx.

Per rubric item: POST ``{base_url}/chat/completions`` to one of the grader replicas (``RVPO_JUDGE_BASE_URLS``,
or the single ``RVPO_JUDGE_BASE_URL``) that :class:`judge.backends.routing.Router` picks; transport failures,
timeouts, 408, 429 and 5xx are retried - on another replica when one is available, else with exponential backoff
(tenacity) - up to ``RVPO_JUDGE_RETRIES`` times in all (:meth:`OpenAICompatBackend._post`, the one attempt
loop); an answer without a valid verdict is re-asked up to ``RVPO_JUDGE_PARSE_RETRIES`` times. At most
``RVPO_JUDGE_CONCURRENCY`` requests per replica are in flight: a request borrows one of that many
single-connection httpx clients (:class:`ClientPool`) and gives it back when answered, never holding it during
a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from judge import metrics
from judge.backends.base import GradeJob, Outcome
from judge.backends.routing import Replica, Router
from judge.parsing import VerdictParseError, parse_verdict, yes_no_probability
from judge.settings import JudgeSettings

RETRY_STATUSES = frozenset({408, 429})


class _RetryableStatus(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


class _FatalStatus(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:200]}")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (_RetryableStatus, httpx.TransportError))  # TimeoutException is a TransportError


def _retry_reason(exc: BaseException | None) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, _RetryableStatus):
        return str(exc.status)
    return "transport"


class ClientPool:
    """Concurrency limit and connection pool in one: at most ``size`` httpx.AsyncClients with ONE keep-alive
    connection each, created on demand and lent to one request at a time (most recently used first, waiters
    served in FIFO order).

    Why not one client with ``max_connections=size``: httpcore's pool re-scans every connection for every
    queued request, which costs several ms of CPU per request at 32+ connections; single-connection clients
    keep the per-request overhead flat and let one judge process saturate a backend.
    """

    def __init__(self, size: int, factory: Callable[[], httpx.AsyncClient]):
        self.size, self._factory = size, factory
        self._free: asyncio.LifoQueue[httpx.AsyncClient] = asyncio.LifoQueue()
        self._all: list[httpx.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._free.empty() and len(self._all) < self.size:
            c = self._factory()
            self._all.append(c)
        else:
            c = await self._free.get()
        try:
            yield c
        finally:
            self._free.put_nowait(c)

    async def aclose(self) -> None:
        for c in self._all:
            await c.aclose()
        self._all.clear()


class OpenAICompatBackend:
    """Grades each rubric item with one chat-completion request (JSON verdict, or yes/no logprobs)."""

    max_concurrent_batches = None

    def __init__(self, settings: JudgeSettings):
        s = self.settings = settings
        self.model_id = s.judge_model
        self.yes_no = s.judge_yes_no_mode
        headers = {}
        if s.judge_api_key is not None and s.judge_api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {s.judge_api_key.get_secret_value()}"
        ssl_ctx = httpx.create_ssl_context()  # built once, shared by every client of the pools

        def factory(base_url: str, max_connections: int = 1) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=base_url, headers=headers, verify=ssl_ctx, timeout=httpx.Timeout(s.judge_timeout_s),
                limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            )

        self.router = Router(s.backend_urls(), policy=s.judge_routing, load_factor=s.judge_routing_load_factor,
                             vnodes=s.judge_routing_vnodes, failures=s.judge_replica_failures,
                             cooldown_s=s.judge_replica_cooldown_s)
        self.controls: list[httpx.AsyncClient] = []  # readiness probes; never compete with grading
        for replica in self.router.replicas:
            replica.pool = ClientPool(s.judge_concurrency, lambda u=replica.url: factory(u))
            self.controls.append(factory(replica.url, 2))

    # -- public --------------------------------------------------------------------------------------------
    async def grade_batch(self, jobs: list[GradeJob]) -> list[Outcome]:
        """Grade every job concurrently (bounded by the concurrency limit); one Outcome per job, in order."""
        return list(await asyncio.gather(*(self.grade_one(j) for j in jobs)))

    async def grade_one(self, job: GradeJob) -> Outcome:
        """Ask, parse, re-ask on an unparseable answer; a null Outcome with the reason when it cannot."""
        attempts = 1 + self.settings.judge_parse_retries
        raw: str | None = None
        problem = ""
        for _ in range(attempts):
            try:
                data = await self._post(self._body(job), job)
            except httpx.TimeoutException:
                return Outcome(None, error=f"judge_timeout: no answer within {self.settings.judge_timeout_s} s "
                                           f"after {1 + self.settings.judge_retries} attempts", raw=raw)
            except (_RetryableStatus, _FatalStatus) as exc:
                return Outcome(None, error=f"judge_http_error: {exc}", raw=raw)
            except httpx.TransportError as exc:
                return Outcome(None, error=f"judge_transport_error: {type(exc).__name__}: {exc}", raw=raw)
            try:
                met, explanation, raw = self._verdict(data)
            except VerdictParseError as exc:
                metrics.PARSE_FAILURES.inc()
                problem, raw = str(exc), getattr(exc, "raw", raw)
                continue
            return Outcome(met, explanation, None, raw)
        return Outcome(None, error=f"judge_parse_error: {problem} (after {attempts} answers)", raw=raw)

    async def ready(self) -> tuple[bool, str]:
        """Ready when at least one replica answers ``GET {base_url}/models`` below 500 within 2 s; the detail
        names every replica that does not."""
        async def probe(control: httpx.AsyncClient) -> str | None:
            try:
                resp = await control.get("/models", timeout=2.0)
            except httpx.HTTPError as exc:
                return f"unreachable: {type(exc).__name__}: {exc}"
            return f"answered HTTP {resp.status_code}" if resp.status_code >= 500 else None

        problems = await asyncio.gather(*(probe(c) for c in self.controls))
        bad = [f"{r.label} {p}" for r, p in zip(self.router.replicas, problems) if p]
        if len(self.controls) == 1:
            return (False, f"judge backend {problems[0]}") if bad else (True, "backend ok")
        n_ok = len(self.controls) - len(bad)
        detail = f"{n_ok}/{len(self.controls)} grader replicas ok" + (f"; {'; '.join(bad)}" if bad else "")
        return n_ok > 0, detail

    async def aclose(self) -> None:
        for replica, control in zip(self.router.replicas, self.controls):
            await replica.pool.aclose()
            await control.aclose()

    # -- internals -----------------------------------------------------------------------------------------
    def _body(self, job: GradeJob) -> dict:
        s = self.settings
        body = {"model": s.judge_model, "messages": job.messages, "temperature": s.judge_temperature}
        if self.yes_no:
            body.update(max_tokens=1, logprobs=True, top_logprobs=s.judge_top_logprobs)
        else:
            body["max_tokens"] = s.judge_max_tokens
        return body

    async def _post(self, body: dict, job: GradeJob) -> object:
        """THE attempt loop of one grader request (retries and failover live here and only here).

        At most ``1 + RVPO_JUDGE_RETRIES`` attempts in all, whichever replicas they reach (a failover spends the
        same budget; a remaining-time budget belongs in this loop's ``stop`` condition). Each attempt: the
        router picks a replica (sticky: the example's; never one this request already failed on while another
        is available), one POST, the outcome reported back to the router (health, load, metrics). A replica
        failure - transport error, timeout, 408/429/5xx - is retried at once on another available replica, else
        after exponential backoff (``RVPO_JUDGE_BACKOFF_S`` doubling up to ``RVPO_JUDGE_BACKOFF_MAX_S``). A
        4xx is final. Returns the decoded JSON body (or its text when it is not JSON); raises the last error
        (httpx.TimeoutException / TransportError, _RetryableStatus, _FatalStatus) when no attempt succeeded.
        """
        s = self.settings
        failed: set[int] = set()  # replicas this request failed on
        backoff = wait_exponential(multiplier=s.judge_backoff_s, max=s.judge_backoff_max_s)

        def wait(state) -> float:
            return 0.0 if self.router.any_untried(failed) else backoff(state)

        def before_sleep(state) -> None:
            metrics.RETRIES.labels(_retry_reason(state.outcome.exception())).inc()

        retrying = AsyncRetrying(stop=stop_after_attempt(1 + s.judge_retries), wait=wait,
                                 retry=retry_if_exception(_retryable), before_sleep=before_sleep, reraise=True)
        async for attempt in retrying:
            with attempt:
                replica = self.router.acquire(job.route_key, job.pin_key, failed)
                healthy: bool | None = None  # None: cancelled - says nothing about the replica
                reason = ""
                try:
                    data = await self._send(replica, body, job.route_key)
                    healthy = True
                    return data
                except _FatalStatus:
                    healthy = True  # a 4xx is about the request, not the replica
                    raise
                except (_RetryableStatus, httpx.TransportError) as exc:
                    healthy, reason = False, _retry_reason(exc)
                    failed.add(replica.index)
                    raise
                finally:
                    self.router.release(replica, ok=healthy, reason=reason, pin_key=job.pin_key)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, replica: Replica, body: dict, route_key: str | None) -> object:
        """One POST /chat/completions to ``replica``; raises _RetryableStatus / _FatalStatus / httpx errors."""
        header = self.settings.judge_session_header
        headers = {header: route_key} if header and route_key else None
        async with replica.pool.client() as client:
            t0 = time.perf_counter()
            try:
                resp = await client.post("/chat/completions", json=body, headers=headers)
            except httpx.TransportError as exc:
                metrics.BACKEND_CALLS.labels(_retry_reason(exc)).inc()
                raise
            finally:
                metrics.BACKEND_LATENCY.observe(time.perf_counter() - t0)
        metrics.BACKEND_CALLS.labels(str(resp.status_code)).inc()
        if resp.status_code in RETRY_STATUSES or resp.status_code >= 500:
            raise _RetryableStatus(resp.status_code, resp.text)
        if resp.status_code >= 400:
            raise _FatalStatus(resp.status_code, resp.text)
        try:
            return resp.json()
        except ValueError:
            return resp.text  # not JSON: becomes a parse error (re-asked)

    def _verdict(self, data: object) -> tuple[bool, str, str | None]:
        """(criteria_met, explanation, raw text) from a chat-completion response body."""
        try:
            choice = data["choices"][0]  # type: ignore[index]
            content = choice["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            exc = VerdictParseError(f"not a chat-completion response: {json.dumps(data)[:200]}")
            exc.raw = json.dumps(data)[:2000]  # type: ignore[attr-defined]
            raise exc from None
        if not self.yes_no:
            try:
                v = parse_verdict(content)
            except VerdictParseError as exc:
                exc.raw = content  # type: ignore[attr-defined]
                raise
            return v.criteria_met, v.explanation, content
        top = None
        try:
            top = choice["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            pass
        if top:
            try:
                p_yes, p_no = yes_no_probability(top)
            except VerdictParseError as exc:
                exc.raw = content  # type: ignore[attr-defined]
                raise
        else:  # backend without logprobs: read the generated word
            word = (content or "").strip().strip(".").lower()
            if word not in {"yes", "no"}:
                exc = VerdictParseError(f"no logprobs and the answer is not yes/no: {word[:50]!r}")
                exc.raw = content  # type: ignore[attr-defined]
                raise exc
            p_yes, p_no = (1.0, 0.0) if word == "yes" else (0.0, 1.0)
        p = p_yes / (p_yes + p_no)
        return p > self.settings.judge_yes_no_threshold, f"P(yes)={p:.4f}", content
