"""A fake OpenAI-compatible LLM server: THE only stand-in of the project (for the external grader LLM).

Run it
------
- ``python -m tests.fake_llm --port 9000 [--latency-ms 50] [--concurrency 16] [--hang-s 30]
  [--fail-every N --fail-mode 503] [--model fake-judge]``
- or as a real uvicorn process from a test:
  ``tests.procs.uvicorn_server("tests.fake_llm:app", log_dir, env={"FAKE_LLM_LATENCY_MS": "50", ...})``.
  Every option is also an environment variable ``FAKE_LLM_<OPTION>`` (table below).

| env / option                        | default      | meaning                                                      |
| ----------------------------------- | ------------ | ------------------------------------------------------------ |
| FAKE_LLM_LATENCY_MS / --latency-ms  | 0            | time each request holds a slot before it is answered         |
| FAKE_LLM_CONCURRENCY / --concurrency| 0 (no limit) | slots; extra requests queue FIFO. Capacity = C / latency     |
| FAKE_LLM_HANG_S / --hang-s          | 30           | how long a ``hang`` request stays silent (less if the client |
|                                     |              | disconnects first); it holds no slot                         |
| FAKE_LLM_FAIL_EVERY / --fail-every  | 0 (never)    | every N-th request (N, 2N, ... counted from 1) gets          |
| FAKE_LLM_FAIL_MODE / --fail-mode    | 503          | ... this failure mode (any mode of the marker table)         |
| FAKE_LLM_MODEL / --model            | fake-judge   | the model id listed by /v1/models                            |
| FAKE_LLM_KEEP_REQUESTS              | 2000         | request bodies kept for ``GET /requests``                    |
| FAKE_LLM_PREFIX_CACHE_TOKENS /      | 0 (off)      | model a prefix cache of this many tokens (LRU of hashed      |
| --prefix-cache-tokens               |              | blocks, tests/fake_prefix_cache.py); counts in ``/stats``    |
| FAKE_LLM_BLOCK_TOKENS /             | 16           | ... tokens per cache block (vLLM's default block size)       |
| --block-tokens                      |              |                                                              |
| FAKE_LLM_CHARS_PER_TOKEN /          | 4            | ... characters per modelled token                            |
| --chars-per-token                   |              |                                                              |
| FAKE_LLM_MS_PER_TOKEN /             | 0            | a request holds its slot this much longer per computed token |
| --ms-per-token                      |              | (uncached prompt tokens + output tokens), on top of latency  |
| FAKE_LLM_FAULTS / --faults          | "" (none)    | faulty backend, e.g. ``5xx:0.2,hang:0.05,malformed:0.05,odd: |
|                                     |              | 0.05`` (tests/fake_faults.py: kinds, the deterministic draw) |
| FAKE_LLM_FAULT_SEED / --fault-seed  | 0            | seed of that draw                                            |
| FAKE_LLM_QUOTE_INJECTIONS           | false        | quote a completion's injected ``{..criteria_met..}`` while   |
|                                     |              | refusing it (tests/fake_faults.py)                           |

Endpoints
---------
``POST /v1/chat/completions`` (OpenAI shape, also ``logprobs``/``top_logprobs``), ``GET /v1/models``,
``GET /livez``, ``GET /stats`` (counters, see :class:`Stats`), ``POST /stats/reset``,
``GET /requests?last=N`` (the last N request bodies received, oldest first), ``POST /cache/reset`` (empties the
prefix cache model), ``GET /answers`` (per (rubric item, completion) pair, keyed by
``tests.fake_faults.pair_key(criterion, completion)``: ``given`` = the verdicts it stated as its own - never a
decoy or a quoted injected verdict -, ``requests`` = requests received).

The deterministic rule (what tests compute expected verdicts from)
--------------------------------------------------------------------
Applied to the content of the LAST ``user`` message of the request:

1. Rubric item = the text after the last line ``# Rubric item``, up to a following ``\\n\\n# Answer`` line if any,
   stripped; a leading ``[points] `` is removed. Criterion = that text with every marker ``[[fake:...]]``
   removed (and stripped).
2. Completion = the text between the lines ``<<<COMPLETION <code>>>>`` and ``<<<END COMPLETION <code>>>>``
   (same code; the judge's nonce delimiters); the newline after the opening and before the closing line are not
   part of it.
3. Keyword = the longest run of ASCII letters (regex ``[A-Za-z]+``) in the criterion, lower-cased; on a tie the
   first one. ``criteria_met = keyword in completion.lower()`` (plain substring test).
4. Answer: content ``"```json\\n{"explanation": "fake: keyword '<kw>' present|absent", "criteria_met": <bool>}\\n```"``.
   With ``"logprobs": true`` in the request (the yes/no mode) the content is ``"yes"`` / ``"no"`` instead, and
   ``choices[0].logprobs.content[0].top_logprobs`` = ``[{"token": "yes", "logprob": ln P}, {"token": "no",
   "logprob": ln (1 - P)}]`` (sorted by probability) with P = 0.9 when met, 0.1 when not.
If there is no ``# Rubric item`` section or no completion delimiters the answer is the prose
``"fake-llm: no rubric item / completion found"`` (a malformed verdict for the judge).

Injected failures: markers in the criterion text
------------------------------------------------
``[[fake:MODE]]`` applies MODE to every request for that rubric item; ``[[fake:MODE*N]]`` only to the first N
requests for the same (criterion, completion) - later ones follow the rule (to test retries that recover).
Several markers may be combined; the first that applies wins.

| MODE                 | answer                                                                        |
| -------------------- | ----------------------------------------------------------------------------- |
| ``true`` / ``false`` | forces the verdict (normal well-formed answer)                                |
| ``400`` ``408`` ``429`` ``500`` ``502`` ``503`` (any 4xx/5xx) | that HTTP status, OpenAI-style error body    |
| ``hang``             | no answer for ``hang_s`` (or until the client disconnects), then the rule     |
| ``json_list``        | content ``[]``                                                                |
| ``wrong_key``        | content ``{"verdict": true}``                                                 |
| ``null``             | content ``{"criteria_met": null}``                                            |
| ``string``           | content ``{"criteria_met": "true"}``                                          |
| ``prose``            | content ``The response meets the criterion.`` (no JSON)                       |
| ``empty``            | content ``""``                                                                |
| ``no_choices``       | HTTP 200 with body ``{"choices": []}`` (wrong-shape response)                 |
| ``plain``            | the rule's JSON without the markdown fence                                    |
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import re
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic_settings import BaseSettings, SettingsConfigDict

from tests.fake_prefix_cache import PrefixCache
from tests import fake_faults

MARKER = re.compile(r"\[\[fake:([A-Za-z0-9_]+)(?:\*(\d+))?\]\]")
_RUBRIC = "# Rubric item\n"
_COMPLETION = re.compile(r"<<<COMPLETION ([0-9A-Za-z]+)>>>\n(.*?)\n<<<END COMPLETION \1>>>", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]+")
P_MET, P_NOT_MET = 0.9, 0.1
TOKEN_COUNTERS = ("prompt_tokens", "cached_tokens", "prefill_tokens", "output_tokens")
NO_RUBRIC = "fake-llm: no rubric item / completion found"


class FakeLLMSettings(BaseSettings):
    """Options of the fake server (environment ``FAKE_LLM_*``; see the module docstring)."""

    model_config = SettingsConfigDict(env_prefix="FAKE_LLM_", extra="ignore")
    latency_ms: float = 0.0
    concurrency: int = 0
    hang_s: float = 30.0
    fail_every: int = 0
    fail_mode: str = "503"
    model: str = "fake-judge"
    keep_requests: int = 2000
    prefix_cache_tokens: int = 0
    block_tokens: int = 16
    chars_per_token: int = 4
    ms_per_token: float = 0.0
    faults: str = ""
    fault_seed: int = 0
    quote_injections: bool = False


# ---------------------------------------------------------------------------------------------------------
# The rule, as plain functions (also usable by callers that want the fake's verdict for a pair)
# ---------------------------------------------------------------------------------------------------------
def strip_markers(text: str) -> str:
    """``text`` without any ``[[fake:...]]`` marker, stripped."""
    return MARKER.sub("", text).strip()


def keyword(criterion: str) -> str:
    """Longest ``[A-Za-z]+`` run of the marker-free criterion, lower-cased (first on ties; '' if none)."""
    best = ""
    for w in _WORD.findall(strip_markers(criterion)):
        if len(w) > len(best):
            best = w
    return best.lower()


def rule_verdict(criterion: str, completion: str) -> bool:
    """The fake's verdict: the criterion's keyword occurs in the lower-cased completion."""
    kw = keyword(criterion)
    return bool(kw) and kw in completion.lower()


def parse_grader_prompt(text: str) -> tuple[str, str] | None:
    """(rubric item text incl. markers, completion) from a grader user message, or None."""
    k = text.rfind(_RUBRIC)
    m = _COMPLETION.search(text)
    if k < 0 or m is None:
        return None
    item = text[k + len(_RUBRIC):].split("\n\n# Answer", 1)[0].strip()
    item = re.sub(r"^\[[^\]]*\]\s*", "", item, count=1)  # "[points] "
    return item, m.group(2)


# ---------------------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Stats:
    """Counters served by ``GET /stats``: ``requests`` (chat-completion requests received), ``by_status``,
    ``by_mode`` (``rule`` / ``forced`` / a failure mode / ``no_rubric``), ``by_kind`` (``json`` / ``yes_no``),
    ``inflight`` / ``max_inflight`` (requests holding a slot), ``busy_s`` (slot-seconds held so far: the backend
    occupancy over a window of W seconds is d(busy_s) / (concurrency * W)); with the prefix cache model on,
    ``prompt_tokens`` / ``cached_tokens`` / ``prefill_tokens`` (= prompt - cached, the tokens computed) and
    ``output_tokens`` of the answered requests."""

    requests: int = 0
    by_status: collections.Counter = field(default_factory=collections.Counter)
    by_mode: collections.Counter = field(default_factory=collections.Counter)
    by_kind: collections.Counter = field(default_factory=collections.Counter)
    inflight: int = 0
    max_inflight: int = 0
    busy_s: float = 0.0
    tokens: collections.Counter = field(default_factory=collections.Counter)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "by_status": dict(self.by_status), "by_mode": dict(self.by_mode),
                "by_kind": dict(self.by_kind), "inflight": self.inflight, "max_inflight": self.max_inflight,
                "busy_s": self.busy_s, **{k: self.tokens[k] for k in TOKEN_COUNTERS}}


def _completion_body(model: str, content: str, logprobs: dict | None = None) -> dict:
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
    }


def _yes_no_logprobs(met: bool) -> tuple[str, dict]:
    p = P_MET if met else P_NOT_MET
    top = sorted([{"token": "yes", "logprob": math.log(p)}, {"token": "no", "logprob": math.log(1 - p)}],
                 key=lambda e: -e["logprob"])
    token = top[0]["token"]
    return token, {"content": [{"token": token, "logprob": top[0]["logprob"], "top_logprobs": top}]}


MALFORMED = {
    "json_list": "[]",
    "wrong_key": '{"verdict": true}',
    "null": '{"criteria_met": null}',
    "string": '{"criteria_met": "true"}',
    "prose": "The response meets the criterion.",
    "empty": "",
}


def create_app(settings: FakeLLMSettings | None = None) -> FastAPI:
    """Build the fake server (reads ``FAKE_LLM_*`` when ``settings`` is None)."""
    s = settings or FakeLLMSettings()
    app = FastAPI(title="fake OpenAI-compatible LLM")
    stats = Stats()
    seen: collections.Counter = collections.Counter()  # (criterion, completion, mode) -> requests so far
    recent: collections.deque = collections.deque(maxlen=s.keep_requests)
    slots = asyncio.Semaphore(s.concurrency) if s.concurrency > 0 else None
    latency = s.latency_ms / 1000.0
    cache = PrefixCache(s.prefix_cache_tokens, s.block_tokens, s.chars_per_token) if s.prefix_cache_tokens > 0 \
        else None
    faults = fake_faults.parse_faults(s.faults)
    given: collections.defaultdict = collections.defaultdict(list)  # pair key -> verdicts given unambiguously
    pair_requests: collections.Counter = collections.Counter()  # pair key -> requests received

    def pick_mode(item: str, completion: str, n: int) -> str | None:
        for mode, count in MARKER.findall(item):
            if not count:
                return mode
            key = (strip_markers(item), completion, mode)
            seen[key] += 1
            if seen[key] <= int(count):
                return mode
        if s.fail_every > 0 and n % s.fail_every == 0:
            return s.fail_mode
        return None

    async def hold_slot(body: dict, answer):
        """Hold a slot for the latency (+ the computed tokens' cost when the prefix cache model is on) and
        return ``answer()``, built while the slot is held."""
        stats.inflight += 1
        stats.max_inflight = max(stats.max_inflight, stats.inflight)
        t0 = time.monotonic()
        try:
            computed = cache.lookup(body.get("messages") or []) if cache is not None else None
            if latency > 0:
                await asyncio.sleep(latency)
            response = answer()
            if computed is not None:
                output = _output_tokens(response, cache)
                stats.tokens.update(prompt_tokens=computed.prompt_tokens, cached_tokens=computed.cached,
                                    prefill_tokens=computed.computed, output_tokens=output)
                if s.ms_per_token > 0:
                    await asyncio.sleep((computed.computed + output) * s.ms_per_token / 1000.0)
            return response
        finally:
            stats.inflight -= 1
            stats.busy_s += time.monotonic() - t0

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await request.json()
        stats.requests += 1
        n = stats.requests
        recent.append(body)
        yes_no = bool(body.get("logprobs"))
        stats.by_kind["yes_no" if yes_no else "json"] += 1
        messages = body.get("messages") or []
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        parsed = parse_grader_prompt(user if isinstance(user, str) else json.dumps(user))
        mode = pick_mode(parsed[0], parsed[1], n) if parsed else (
            s.fail_mode if s.fail_every > 0 and n % s.fail_every == 0 else None)
        fault, variant, pk = None, 0, None
        if parsed is not None:
            pk = fake_faults.pair_key(strip_markers(parsed[0]), parsed[1])
            pair_requests[pk] += 1
            if mode is None and faults:
                u, variant = fake_faults.draw(s.fault_seed, parsed[0], parsed[1], pair_requests[pk])
                fault = fake_faults.pick_fault(faults, u)
                if fault == "hang":
                    mode = "hang"
                elif fault == "5xx":
                    mode = str(fake_faults.status_5xx(variant))

        if mode == "hang":
            deadline = time.monotonic() + s.hang_s
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            mode = None
            stats.by_mode["hang"] += 1

        def answer() -> JSONResponse:
            return respond(body, mode, parsed, yes_no, fault, variant, pk)

        if slots is not None:
            async with slots:
                return await hold_slot(body, answer)
        return await hold_slot(body, answer)

    def respond(body: dict, mode: str | None, parsed: tuple[str, str] | None, yes_no: bool,
                fault: str | None = None, variant: int = 0, pk: str | None = None) -> JSONResponse:
        model = body.get("model", s.model)
        if mode is not None and mode.isdigit():
            status = int(mode)
            stats.by_mode[mode] += 1
            stats.by_status[str(status)] += 1
            return JSONResponse({"error": {"message": f"fake-llm injected HTTP {status}", "type": "fake",
                                           "code": status}}, status_code=status)
        stats.by_status["200"] += 1
        if mode == "no_choices":
            stats.by_mode[mode] += 1
            return JSONResponse({"id": "chatcmpl-fake", "object": "chat.completion", "choices": []})
        if mode in MALFORMED:
            stats.by_mode[mode] += 1
            return JSONResponse(_completion_body(model, MALFORMED[mode]))
        if parsed is None:
            stats.by_mode["no_rubric"] += 1
            return JSONResponse(_completion_body(model, NO_RUBRIC))

        item, completion = parsed
        kw = keyword(item)
        if mode in ("true", "false"):
            met = mode == "true"
            stats.by_mode["forced"] += 1
            explanation = f"fake: forced {mode}"
        else:
            met = rule_verdict(item, completion)
            stats.by_mode["rule"] += 1
            explanation = f"fake: keyword '{kw}' {'present' if met else 'absent'}"
        if fault in ("malformed", "odd"):
            stats.by_mode[f"fault_{fault}"] += 1
            content = (fake_faults.malformed_content(variant) if fault == "malformed" or yes_no
                       else fake_faults.odd_content(variant, met))
            if fault == "odd" and not yes_no:
                given[pk].append(met)  # its own verdict, next to a decoy
            if content is None:
                return JSONResponse({"id": "chatcmpl-fake", "object": "chat.completion", "choices": []})
            return JSONResponse(_completion_body(model, content))
        if yes_no:
            given[pk].append(met)
            token, logprobs = _yes_no_logprobs(met)
            return JSONResponse(_completion_body(model, token, logprobs))
        verdict = json.dumps({"explanation": explanation, "criteria_met": met})
        payload = fake_faults.injected_payload(completion) if s.quote_injections else None
        if payload is not None:
            u, variant = fake_faults.draw(s.fault_seed, item, completion, -pair_requests[pk])
            content, _ = fake_faults.refusal_content(variant, verdict, payload)
            stats.by_mode["quoted_injection"] += 1
            given[pk].append(met)  # its own verdict; the quoted one is not
            return JSONResponse(_completion_body(model, content))
        given[pk].append(met)
        content = verdict if mode == "plain" else f"```json\n{verdict}\n```"
        return JSONResponse(_completion_body(model, content))

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": s.model, "object": "model", "owned_by": "fake-llm"}]}

    @app.get("/livez")
    async def livez() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def get_stats() -> dict:
        return stats.as_dict() | {"latency_ms": s.latency_ms, "concurrency": s.concurrency}

    @app.post("/stats/reset")
    async def reset_stats() -> dict:
        stats.requests = 0
        stats.by_status.clear(), stats.by_mode.clear(), stats.by_kind.clear()
        stats.max_inflight = stats.inflight
        stats.busy_s = 0.0
        seen.clear()
        recent.clear()
        stats.tokens.clear()
        given.clear()
        pair_requests.clear()
        return {"status": "reset"}

    @app.post("/cache/reset")
    async def reset_cache() -> dict:
        if cache is not None:
            cache.clear()
        return {"status": "reset", "prefix_cache": cache is not None}

    @app.get("/answers")
    async def get_answers() -> dict:
        return {"given": dict(given), "requests": dict(pair_requests)}

    @app.get("/requests")
    async def get_requests(last: int = 100) -> list:
        return list(recent)[-last:] if last > 0 else []

    return app


def _output_tokens(response: JSONResponse, cache: PrefixCache) -> int:
    """Tokens of the answer's content (0 for an error or an answer without choices)."""
    try:
        content = json.loads(response.body)["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError, ValueError):
        return 0
    return max(1, cache.tokens(content))


def __getattr__(name: str):
    # ``uvicorn tests.fake_llm:app`` builds the app from the environment on first access
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fake_llm --port P [...]``: serve until interrupted."""
    import uvicorn

    d = FakeLLMSettings()
    ap = argparse.ArgumentParser(prog="python -m tests.fake_llm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--latency-ms", type=float, default=d.latency_ms)
    ap.add_argument("--concurrency", type=int, default=d.concurrency)
    ap.add_argument("--hang-s", type=float, default=d.hang_s)
    ap.add_argument("--fail-every", type=int, default=d.fail_every)
    ap.add_argument("--fail-mode", default=d.fail_mode)
    ap.add_argument("--model", default=d.model)
    ap.add_argument("--prefix-cache-tokens", type=int, default=d.prefix_cache_tokens)
    ap.add_argument("--block-tokens", type=int, default=d.block_tokens)
    ap.add_argument("--chars-per-token", type=int, default=d.chars_per_token)
    ap.add_argument("--ms-per-token", type=float, default=d.ms_per_token)
    ap.add_argument("--faults", default=d.faults)
    ap.add_argument("--fault-seed", type=int, default=d.fault_seed)
    a = ap.parse_args(argv)
    settings = FakeLLMSettings(latency_ms=a.latency_ms, concurrency=a.concurrency, hang_s=a.hang_s,
                               fail_every=a.fail_every, fail_mode=a.fail_mode, model=a.model,
                               prefix_cache_tokens=a.prefix_cache_tokens, block_tokens=a.block_tokens,
                               chars_per_token=a.chars_per_token, ms_per_token=a.ms_per_token,
                               faults=a.faults, fault_seed=a.fault_seed)
    uvicorn.run(create_app(settings), host=a.host, port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
