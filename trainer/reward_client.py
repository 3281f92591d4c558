"""The trainer's reward source: one gateway job per generation batch, read back as a dense ``[N, K]`` matrix.

``RemoteRewardClient(...).reward_funcs()`` gives K TRL reward functions (``f(prompts, completions, **kwargs)
-> list[float | None]``), one per channel, named after it (``rubric/00`` ... ``rubric/{K_r-1}``, then the rule
channels such as ``rules/format``). TRL calls them one after another on the same batch; the first call submits
the batch to the gateway (``POST /v1/score``) and pulls ``GET /v1/jobs/{id}/rewards``, the others read the
memoized matrix, so a generation batch costs one gateway round trip however many channels there are.

Each dataset row supplies (TRL passes every dataset column as a list kwarg, one entry per completion):
``rubrics`` (HealthBench criteria, graded by the judge), ``tools`` (+ ``ground_truth``, ``mode``, ``format``,
``options``; checked by the rules service). Columns may hold JSON strings (Arrow-friendly) or objects.
Slot j of ``rubric/jj`` is the j-th rubric criterion of that row's prompt (docs/contracts.md). Anything that
cannot be scored (no such criterion, no tools, a service failure, the job deadline, a value beyond float32 - TRL's
reward dtype - with reason ``out_of_range``) is ``None`` (NaN), never 0,
so the aggregator leaves it out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from contracts.channels import RULE_CHANNELS, check_rule_channels, rubric_channels
from contracts.results import FINAL_STATUSES
from services.common.httpclient import GATEWAY_CALL
from services.gateway.client import GatewayClient, GatewayError
from trainer.reward_logging import RewardReporter
from trainer.rewards import completion_payload

log = logging.getLogger(__name__)

ROW_COLUMNS = ("rubrics", "tools", "ground_truth", "mode", "format", "options")


#: The largest finite float32: TRL's reward tensor dtype.
FLOAT32_MAX = 3.4028234663852886e38


class RewardClientError(GatewayError):
    """The gateway rejected a batch (4xx: the message carries its body, naming the field) or, with
    ``on_error="raise"``, could not be reached within the retries."""


def _load(value: Any) -> Any:
    """Columns may be stored as JSON strings (Arrow cannot hold ragged JSON-schema objects); decode them."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _prompt(value: Any) -> str | list[dict]:
    if isinstance(value, str):
        return value
    return [{"role": m.get("role", "user"), "content": m.get("content") if isinstance(m.get("content"), str)
             else "".join(p.get("text", "") for p in (m.get("content") or []) if isinstance(p, dict))}
            for m in value]


class RewardBatch:
    """Rewards of one generation batch: ``rewards[i][k]`` (float or None = NaN) for ``channel_names[k]``, with
    ``reasons[i][k]`` for every None, the gateway job id (None when nothing was submitted) and its status."""

    def __init__(self, channel_names: list[str], rewards: list[list[float | None]],
                 reasons: list[list[str | None]], job_id: str | None, status: str):
        self.channel_names, self.rewards, self.reasons = channel_names, rewards, reasons
        self.job_id, self.status = job_id, status

    def column(self, k: int) -> list[float | None]:
        return [row[k] for row in self.rewards]

    def nan_fraction(self) -> float:
        cells = [v for row in self.rewards for v in row]
        return sum(v is None for v in cells) / max(len(cells), 1)


class RemoteRewardClient:
    """Pull reward vectors for a generation batch from the gateway (REST -> Celery -> judge / rules).

    Args:
        gateway_url: base URL of the gateway, e.g. ``http://127.0.0.1:8000``; None = ``RVPO_GATEWAY_URL``.
        token: bearer token (``RVPO_API_TOKEN`` of the gateway); None = ``RVPO_API_TOKEN`` of this process.
        timeout_s: longest wait for one batch's job to finish (seconds); what is still missing then is NaN.
        max_retries: attempts per HTTP request on transport errors and 408/429/5xx (tenacity, exponential backoff;
            a retried submission keeps its ``Idempotency-Key``, so it never creates a second job).
        rubric_slots: K_r, the number of ``rubric/jj`` channels (the largest rubric count in the dataset); a
            prompt with more criteria loses the extra ones (logged).
        rule_channels: the rule channels to expose, by name (default: all nine of docs/contracts.md).
        request_timeout_s: timeout of one HTTP request on top of its ``?wait=``.
        poll_s: long-poll period of ``GET /v1/jobs/{id}/rewards?wait=``.
        on_error: ``"nan"`` (default) turns an unreachable gateway into an all-NaN batch (logged);
            ``"raise"`` raises RewardClientError instead. A 4xx answer always raises.

    The reward functions also report, through TRL's ``log_metric`` / ``log_extra``, each channel's NaN fraction
    and the reasons counted (trainer/reward_logging.py).

    Raises:
        ValueError: for a negative ``rubric_slots``, an unknown rule channel or an unknown ``on_error``.
    """

    def __init__(self, gateway_url: str | None = None, token: str | None = None, timeout_s: float = 600.0,
                 max_retries: int = 3, rubric_slots: int = 16, rule_channels: Sequence[str] = RULE_CHANNELS,
                 request_timeout_s: float = 30.0, poll_s: float = 10.0, on_error: str = "nan"):
        if rubric_slots < 0 or on_error not in ("nan", "raise"):
            raise ValueError(f"rubric_slots must be >= 0 (got {rubric_slots}); "
                             f"on_error must be 'nan' or 'raise' (got {on_error!r})")
        self.rule_channels = check_rule_channels(rule_channels)
        self.gateway = GatewayClient(gateway_url, token, request_timeout_s,
                                     GATEWAY_CALL.with_(attempts=max(max_retries, 1)))
        self.gateway_url = self.gateway.base_url
        self.timeout_s, self.poll_s, self.on_error = timeout_s, poll_s, on_error
        self.rubric_slots = rubric_slots
        self.channel_names = rubric_channels(rubric_slots) + self.rule_channels
        self._memo: OrderedDict[str, RewardBatch] = OrderedDict()
        self._reporter = RewardReporter()
        self.last: RewardBatch | None = None

    @property
    def requests(self) -> int:
        """HTTP requests sent to the gateway so far (one batch: 1 POST + >= 1 GET, plus retries)."""
        return self.gateway.requests

    # -- batch -> items -----------------------------------------------------------------------------------
    def build_items(self, prompts: Sequence, completions: Sequence, **columns: Any) -> tuple[list[dict], list[int]]:
        """Gateway items for the rows that have a reward source, and their row indices.

        A row with rubrics goes to the judge, one with ``tools`` to the rules service;
        ``group_id`` is a hash of the prompt (TRL's completions of one prompt share it).
        """
        items, rows = [], []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            row = {c: _load(columns[c][i]) for c in ROW_COLUMNS if c in columns and columns[c] is not None
                   and columns[c][i] is not None}
            has_rules = row.get("tools") is not None
            if not row.get("rubrics") and not has_rules:
                continue
            p = _prompt(prompt)
            item = {"id": str(i), "group_id": hashlib.sha1(json.dumps(p, sort_keys=True).encode()).hexdigest()[:16],
                    "prompt": p, "completion": completion_payload(completion)}
            if row.get("rubrics"):
                if len(row["rubrics"]) > self.rubric_slots:
                    log.warning("row %d has %d rubric criteria but rubric_slots=%d: the extra ones are dropped",
                                i, len(row["rubrics"]), self.rubric_slots)
                item["rubrics"] = row["rubrics"]
            if has_rules:
                item.update({k: row[k] for k in ("tools", "ground_truth", "mode", "format", "options") if k in row})
            items.append(item)
            rows.append(i)
        return items, rows

    # -- scoring ------------------------------------------------------------------------------------------
    def score(self, prompts: Sequence, completions: Sequence, **columns: Any) -> RewardBatch:
        """Rewards ``[N, K]`` for one generation batch (memoized on the batch contents).

        Returns a RewardBatch in this client's channel layout. Raises RewardClientError on a 4xx answer, and with
        ``on_error="raise"`` when the gateway cannot be reached.
        """
        items, rows = self.build_items(prompts, completions, **columns)
        key = hashlib.sha256(json.dumps([len(prompts), rows, items], sort_keys=True, default=str).encode()).hexdigest()
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        batch = self._score(len(prompts), items, rows)
        self._memo[key] = batch
        while len(self._memo) > 4:
            self._memo.popitem(last=False)
        self.last = batch
        return batch

    def _score(self, n: int, items: list[dict], rows: list[int]) -> RewardBatch:
        k = len(self.channel_names)
        rewards: list[list[float | None]] = [[None] * k for _ in range(n)]
        reasons: list[list[str | None]] = [["unscorable: row has no rubrics and no tools"] * k
                                           for _ in range(n)]
        if not items:
            return RewardBatch(self.channel_names, rewards, reasons, None, "failed")
        for i in rows:
            reasons[i] = ["pending: job did not finish"] * k
        job_id, status = None, "failed"
        try:
            job_id = self.gateway.submit(items)["job_id"]
            dense = self.gateway.rewards(job_id, self.timeout_s, self.poll_s, self.rubric_slots, rules=True)
            status = dense["status"]
        except GatewayError as exc:
            raise RewardClientError(str(exc), exc.status_code, exc.body) from exc
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            if self.on_error == "raise":
                raise RewardClientError(f"gateway {self.gateway_url} failed: {type(exc).__name__}: {exc}") from exc
            log.error("reward batch of %d rows unscored (NaN): gateway %s failed: %s: %s", n, self.gateway_url,
                      type(exc).__name__, exc)
            for i in rows:
                reasons[i] = [f"gateway_error: {type(exc).__name__}: {exc}"] * k
            return RewardBatch(self.channel_names, rewards, reasons, job_id, "failed")
        if status not in FINAL_STATUSES:
            log.warning("job %s still %s after %.0f s: missing rewards are NaN", job_id, status, self.timeout_s)
        col = {name: j for j, name in enumerate(dense["channel_names"])}
        for row_i, values, why in zip(rows, dense["rewards"], dense["reasons"], strict=True):
            for kk, name in enumerate(self.channel_names):
                j = col.get(name)
                v = values[j] if j is not None else None
                if v is not None and math.isfinite(v) and abs(v) > FLOAT32_MAX:
                    # TRL holds rewards in a float32 tensor: 1e308 (rubric points the gateway accepts) became
                    # inf there and compute_advantages stopped the run; it is an unscorable value instead
                    reasons[row_i][kk] = (f"out_of_range: {v!r} does not fit TRL's float32 reward tensor "
                                          f"(|reward| <= {FLOAT32_MAX:.4g}; scale the rubric points down)")
                elif v is not None and math.isfinite(v):
                    rewards[row_i][kk], reasons[row_i][kk] = float(v), None
                else:
                    reasons[row_i][kk] = (why[j] if j is not None else None) or f"absent: no {name} in the job"
        return RewardBatch(self.channel_names, rewards, reasons, job_id, status)

    # -- TRL ----------------------------------------------------------------------------------------------
    def reward_funcs(self) -> list[Callable[..., list[float | None]]]:
        """One TRL reward function per channel (``__name__`` = channel name), all sharing one gateway job per
        generation batch. Each returns ``list[float | None]`` of length N (None = NaN: TRL turns it into NaN)."""
        return [self._channel_func(k, name) for k, name in enumerate(self.channel_names)]

    def _channel_func(self, k: int, name: str) -> Callable[..., list[float | None]]:
        def reward(prompts, completions, **kwargs):
            columns = {c: kwargs[c] for c in ROW_COLUMNS if c in kwargs}
            batch = self.score(prompts, completions, **columns)
            values = batch.column(k)
            self._reporter.report(kwargs, batch, name, values, batch.channel_names, batch.rewards, batch.reasons)
            return values

        reward.__name__ = reward.__qualname__ = name
        return reward

    def close(self) -> None:
        self.gateway.close()

    def __enter__(self) -> "RemoteRewardClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def max_rubric_count(rubrics_column: Sequence[Any]) -> int:
    """The largest number of rubric criteria in a dataset column (use it as ``rubric_slots``)."""
    return max((len(_load(r) or []) for r in rubrics_column), default=0)
