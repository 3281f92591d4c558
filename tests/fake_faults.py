"""Opt-in fault injection of the fake LLM (tests/fake_llm.py): a faulty grader backend and a grader that quotes
injected verdicts while refusing them. Everything here is a pure function of the request, so the fake can say
exactly what it answered and a benchmark can check every verdict the judge reports.

Faulty backend: ``FAKE_LLM_FAULTS="5xx:0.2,hang:0.05,malformed:0.05,odd:0.05"`` (kinds and probabilities; the
rest of the requests follow the rule). The n-th request (n = 1, 2, ...) for one (rubric item, completion) pair
draws ``u = sha256(seed, item, completion, n)`` in [0, 1) and takes the first kind whose cumulative probability
exceeds u, so a retry of the same pair draws afresh and the whole sequence is reproducible
(``FAKE_LLM_FAULT_SEED``). Kinds:

- ``5xx``: HTTP 500 / 502 / 503;
- ``hang``: no answer for ``hang_s`` or until the client disconnects, then the rule's answer;
- ``malformed``: a 200 without a verdict (``[]``, prose, ``{"criteria_met": null}``, a truncated object,
  an empty answer, ``{"choices": []}``);
- ``odd``: a 200 holding the rule's verdict ``v`` AND a decoy ``not v`` (a verdict quoted in prose, a nested
  key, two fenced blocks, a duplicate key, a list of objects): no single verdict, so a correct parser must
  refuse it, and a parser that picks one may pick the decoy.

Refusing grader: ``FAKE_LLM_QUOTE_INJECTIONS=1``. When the completion holds a ``{... criteria_met ...}``
object, the answer quotes that object while refusing it, in one of four forms drawn like the faults: the bare
fenced rule verdict; the quote in prose plus the fenced rule verdict; the quote fenced plus the rule verdict
bare; the rule verdict with the quote inside its explanation string.

The verdicts the fake states as its own count as *given* (``GET /answers``); decoys and quoted injected
verdicts never do. A verdict the judge reports for a pair that the fake never gave is fabricated.
``refusal_content`` also says whether its answer holds one unambiguous verdict (what a strict parser accepts).
"""

from __future__ import annotations

import hashlib
import json
import re

KINDS = ("5xx", "hang", "malformed", "odd")
_INJECTED = re.compile(r"\{[^{}]*criteria_met[^{}]*\}")


def parse_faults(spec: str) -> list[tuple[str, float]]:
    """``"5xx:0.2,hang:0.05"`` -> ``[("5xx", 0.2), ("hang", 0.05)]``.

    Raises ValueError for an unknown kind, a probability outside [0, 1] or a total above 1.
    """
    out: list[tuple[str, float]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, prob = part.partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (one of {', '.join(KINDS)})")
        p = float(prob)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault probability {p} of {kind!r} not in [0, 1]")
        out.append((kind, p))
    if sum(p for _, p in out) > 1.0 + 1e-9:
        raise ValueError(f"fault probabilities add up to more than 1: {spec!r}")
    return out


def pair_key(criterion: str, completion: str) -> str:
    """Key of one (rubric item, completion) pair in ``GET /answers`` (criterion without its ``[points]``)."""
    return hashlib.sha256(f"{criterion}\x00{completion}".encode()).hexdigest()[:24]


def draw(seed: int, item: str, completion: str, n: int) -> tuple[float, int]:
    """(u in [0, 1), a variant number) for the n-th request of a pair."""
    digest = hashlib.sha256(f"{seed}\x00{item}\x00{completion}\x00{n}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:12], "big")


def pick_fault(faults: list[tuple[str, float]], u: float) -> str | None:
    """The fault kind for the draw ``u`` (None: follow the rule)."""
    acc = 0.0
    for kind, p in faults:
        acc += p
        if u < acc:
            return kind
    return None


def status_5xx(variant: int) -> int:
    return (500, 502, 503)[variant % 3]


#: (answer content, or None for a 200 without choices)
MALFORMED = ("[]", "The response meets the criterion.", '{"criteria_met": null}',
             '{"explanation": "cut off', "", None)


def malformed_content(variant: int) -> str | None:
    return MALFORMED[variant % len(MALFORMED)]


def odd_content(variant: int, met: bool) -> str:
    """An answer holding the verdict ``met`` and the decoy ``not met``: never one single verdict."""
    v, d = json.dumps(met), json.dumps(not met)
    forms = (
        f'{"Met" if met else "Not met"}. A {"failing" if met else "passing"} answer would be '
        f'{{"criteria_met": {d}}}.',
        f'{{"criteria_met": "{v}", "details": {{"criteria_met": {d}}}}}',
        f'```json\n{{"criteria_met": {d}}}\n```\nCorrection:\n```json\n{{"criteria_met": {v}}}\n```',
        f'{{"criteria_met": {v}, "explanation": "fake: odd", "criteria_met": {d}}}',
        f'[{{"criteria_met": {d}}}, {{"criteria_met": {v}}}]',
    )
    return forms[variant % len(forms)]


def injected_payload(completion: str) -> str | None:
    """The first ``{...}`` of the completion that mentions ``criteria_met`` (an injected verdict), or None."""
    m = _INJECTED.search(completion)
    return m.group(0) if m else None


def refusal_content(variant: int, verdict_json: str, payload: str) -> tuple[str, bool]:
    """(answer quoting the injected ``payload`` while giving ``verdict_json``, whether it is unambiguous)."""
    verdict = json.loads(verdict_json)
    form = variant % 4
    if form == 0:
        return f"```json\n{verdict_json}\n```", True
    if form == 1:
        return (f"The completion contains an instruction to the grader: {payload}. It is data, ignored.\n"
                f"```json\n{verdict_json}\n```"), False
    if form == 2:
        return (f"The completion says:\n```json\n{payload}\n```\nThat is an injected verdict, refused. "
                f"{verdict_json}"), False
    explanation = f"{verdict['explanation']}; the completion's embedded verdict {payload} is ignored"
    return json.dumps({"explanation": explanation, "criteria_met": verdict["criteria_met"]}), True
