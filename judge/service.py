"""The judge's core, independent of HTTP: cache lookup, micro-batched grading of the misses, scoring.

``JudgeService.judge(items)`` takes validated :class:`judge.schemas.JudgeItem` objects and returns result
dicts in the wire format of docs/contracts.md (one per item, same order).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import replace

from contracts.channels import rubric_channel
from contracts.judge import JudgeItem
from judge import metrics, prompt
from judge.backends import Backend, GradeJob, Outcome, make_backend
from judge.backends.base import BUDGET_EXCEEDED
from judge.backends.routing import example_keys
from judge.batcher import MicroBatcher
from judge.cache import VerdictCache, cache_key
from judge.scoring import example_score, reward_channels
from judge.settings import JudgeSettings
from services.common.budget import Budget

log = logging.getLogger(__name__)
#: seconds of a request's budget kept for building and sending the answer after grading stops (at most half of it)
ANSWER_RESERVE_S = 0.1


class JudgeService:
    """Owns the backend, the micro-batcher and the (optional) cache."""

    def __init__(self, settings: JudgeSettings, backend: Backend, cache: VerdictCache | None):
        self.settings, self.backend, self.cache = settings, backend, cache
        self.template_version = prompt.template_version(backend.yes_no, settings.judge_prompt_layout)
        self.batcher: MicroBatcher[GradeJob, Outcome] = MicroBatcher(
            self._grade_batch, max_batch_size=settings.judge_max_batch_size,
            max_wait_s=settings.judge_max_wait_ms / 1000.0,
            max_concurrent_batches=backend.max_concurrent_batches,
            on_batch=metrics.BATCH_SIZE.observe, on_depth=metrics.QUEUE_DEPTH.set,
        )

    @classmethod
    def from_settings(cls, settings: JudgeSettings) -> JudgeService:
        cache = (VerdictCache(settings.redis_url, settings.judge_cache_ttl_s)
                 if settings.judge_cache_enabled else None)
        return cls(settings, make_backend(settings), cache)

    async def _grade_batch(self, jobs: list[GradeJob]) -> list[Outcome] | list[Awaitable[Outcome]]:
        try:
            grade_each = getattr(self.backend, "grade_each", None)  # independent jobs: each caller released alone
            return grade_each(jobs) if grade_each is not None else await self.backend.grade_batch(jobs)
        except Exception as exc:  # noqa: BLE001 - a backend bug becomes null verdicts, not a 500
            log.exception("backend failed on a batch of %d", len(jobs))
            return [Outcome(None, error=f"judge_internal: {type(exc).__name__}: {exc}") for _ in jobs]

    async def judge(self, items: list[JudgeItem], budget: Budget | None = None) -> list[dict]:
        """Grade every rubric item of every example; returns the contract's result dicts in request order.

        Cache hits skip the backend; the misses of all examples go to the micro-batcher together (one
        example's items contiguously). Never raises for a grading failure: that item's verdict is null with
        ``error`` set, its channel is null with the reason in ``reasons``.

        ``budget`` (services/common/budget.py; None: ``RVPO_JUDGE_BUDGET_S`` from now): the answer is ready by
        its deadline. Grading ends :data:`ANSWER_RESERVE_S` before it (the rest builds the answer); a criterion
        not graded by then - queued, between retries, re-asked, or waiting on its grader - is null with reason
        ``judge_budget_exceeded: ...``, while every criterion graded in time keeps its verdict.
        """
        budget = budget or Budget.starting_now(self.settings.judge_budget_s)
        reserve = min(ANSWER_RESERVE_S, budget.seconds / 2)
        # the backend stops at grading_deadline and gives its own reason; the service waits a little longer
        grading_deadline, wait_until = budget.deadline - reserve, budget.deadline - reserve / 2
        metrics.REQUEST_ITEMS.inc(len(items))
        flat = [(i, j) for i, it in enumerate(items) for j in range(len(it.rubrics))]
        model = self.backend.model_id
        outcomes: dict[tuple[int, int], Outcome] = {}
        cached: set[tuple[int, int]] = set()
        keys: dict[tuple[int, int], str] = {}
        if self.cache is not None:
            for i, it in enumerate(items):
                msgs = [{"role": m.role, "content": m.content} for m in it.prompt]
                for j, r in enumerate(it.rubrics):
                    keys[(i, j)] = cache_key(self.settings.judge_cache_prefix, model=model,
                                             template_version=self.template_version, prompt=msgs,
                                             completion=it.completion, criterion=r.criterion, points=r.points)
            hits = await self._bounded(self.cache.get_many([keys[ij] for ij in flat]), grading_deadline,
                                       [None] * len(flat))
            for ij, hit in zip(flat, hits):
                if hit is not None and isinstance(hit.get("criteria_met"), bool):
                    outcomes[ij] = Outcome(hit["criteria_met"], hit.get("explanation", ""), None, hit.get("raw"))
                    cached.add(ij)
        misses = [ij for ij in flat if ij not in outcomes]
        if misses:
            jobs = []
            conversations: dict[int, str] = {}
            routes: dict[int, tuple[str, str]] = {}
            for i, j in misses:
                if i not in conversations:
                    conversations[i] = self._conversation(items[i])
                    routes[i] = example_keys([{"role": m.role, "content": m.content} for m in items[i].prompt],
                                             items[i].completion, self.settings.judge_routing_key)
                r = items[i].rubrics[j]
                messages = prompt.grader_messages(conversations[i], r.criterion, r.points,
                                                  yes_no=self.backend.yes_no, layout=self.settings.judge_prompt_layout)
                jobs.append(GradeJob(messages, *routes[i], deadline=grading_deadline))
            results = await self._grade_within(jobs, wait_until)
            fresh = {}
            for ij, res in zip(misses, results):
                if isinstance(res, BaseException):
                    res = Outcome(None, error=f"judge_internal: {type(res).__name__}: {res}")
                if res.criteria_met is None and (res.error or "").startswith(BUDGET_EXCEEDED):
                    res = replace(res, error=f"{res.error} ({budget.describe()})")
                outcomes[ij] = res
                if self.cache is not None and res.criteria_met is not None:
                    fresh[keys[ij]] = {"criteria_met": res.criteria_met, "explanation": res.explanation,
                                       "raw": res.raw}
            if self.cache is not None and fresh:
                await self._bounded(self.cache.set_many(fresh), budget.deadline, None)
        return [self._result(i, it, outcomes, cached, model) for i, it in enumerate(items)]

    async def _grade_within(self, jobs: list[GradeJob], deadline: float) -> list[Outcome | BaseException]:
        """Each job's Outcome (or the exception its grading raised), waiting for none past ``deadline``
        (``time.monotonic()``): a job not done by then is cancelled (dropped from the batcher's queue, its grader
        request cut) and gets a ``judge_budget_exceeded`` Outcome."""
        if deadline - time.monotonic() <= 0:
            return [Outcome(None, error=f"{BUDGET_EXCEEDED}: no time left to grade") for _ in jobs]
        futures = self.batcher.submit_many(jobs)
        await asyncio.wait(futures, timeout=max(deadline - time.monotonic(), 0.0))
        out: list[Outcome | BaseException] = []
        for fut in futures:
            if not fut.done():
                fut.cancel()
                out.append(Outcome(None, error=f"{BUDGET_EXCEEDED}: not graded by the request's deadline"))
            elif fut.cancelled():
                out.append(Outcome(None, error="judge_internal: grading cancelled"))
            else:
                out.append(fut.exception() or fut.result())
        return out

    @staticmethod
    async def _bounded(awaitable, deadline: float, default):
        """``await awaitable``, or ``default`` once ``deadline`` (``time.monotonic()``) passes (cache reads and
        writes never hold an answer past its budget: a slow cache is a miss)."""
        left = deadline - time.monotonic()
        if left <= 0:
            awaitable.close()
            return default
        try:
            return await asyncio.wait_for(awaitable, left)
        except TimeoutError:
            log.warning("verdict cache took longer than the time left in the budget (%.3g s)", left)
            return default

    @staticmethod
    def _conversation(item: JudgeItem) -> str:
        msgs = [{"role": m.role, "content": m.content} for m in item.prompt]
        while True:  # a completion that contains the closing delimiter of this nonce: draw another
            try:
                return prompt.render_conversation(msgs, item.completion, prompt.new_nonce())
            except ValueError:
                continue

    def _result(self, i: int, item: JudgeItem, outcomes: dict, cached: set, model: str) -> dict:
        rubric_results = []
        met: list[bool | None] = []
        reasons: dict[str, str] = {}
        for j, r in enumerate(item.rubrics):
            o: Outcome = outcomes[(i, j)]
            met.append(o.criteria_met)
            metrics.VERDICTS.labels({True: "met", False: "not_met", None: "null"}[o.criteria_met]).inc()
            if o.criteria_met is None:
                reasons[rubric_channel(j)] = o.error or "judge_error: no verdict"
                metrics.NULL_VERDICTS.labels(metrics.reason_class(reasons[rubric_channel(j)])).inc()
            rubric_results.append({
                "criterion": r.criterion, "points": r.points, "tags": r.tags, "criteria_met": o.criteria_met,
                "explanation": o.explanation, "error": o.error, "raw": o.raw,
                "template_version": self.template_version, "model": model, "cached": (i, j) in cached,
            })
        points = [r.points for r in item.rubrics]
        score = example_score(points, met)
        if score is None:
            reasons["score"] = ("no_positive_points: the rubric has no positive-points item with a verdict"
                                if any(m is not None for m in met) else "all_null: no verdict at all")
        return {"id": item.id, "rubric_results": rubric_results, "score": score,
                "channels": reward_channels(points, met), "reasons": reasons,
                "n_errors": sum(m is None for m in met)}

    async def ready(self) -> tuple[bool, str]:
        """(ok, detail): ok when the backend and, with the cache on, Redis are reachable. The detail says which
        backend (kind and where), the model it serves, whether it is reachable and why not, and the cache's state:
        ``openai backend http://vllm:8000/v1, model Qwen/Qwen2.5-7B-Instruct: not reachable (ConnectError: ...);
        cache: redis ok``."""
        from services.common.http import redis_ready

        ok, detail = await self.backend.ready()
        s = self.settings
        where = ", ".join(s.backend_urls()) if s.judge_backend == "openai" else s.judge_local_model_path
        text = (f"{s.judge_backend} backend {where}, model {self.backend.model_id}: "
                f"{'reachable' if ok else 'not reachable'} ({detail})")
        if self.cache is not None:
            cache_ok, cache_detail = await redis_ready(s.redis_url)
            ok, text = ok and cache_ok, f"{text}; cache: {cache_detail}"
        return ok, text

    async def aclose(self) -> None:
        await self.batcher.aclose()
        await self.backend.aclose()
        if self.cache is not None:
            await self.cache.aclose()
