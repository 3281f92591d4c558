"""Verdict parsing. A verdict is a JSON object whose ``criteria_met`` is a JSON boolean (as simple-evals'
``grade_rubric_item`` requires: ``label is True or label is False``); anything else is a parse error that the
caller retries and finally turns into a null verdict."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


class VerdictParseError(ValueError):
    """The grader's answer holds no valid verdict; ``str(exc)`` is the reason."""


@dataclass(frozen=True)
class Verdict:
    criteria_met: bool
    explanation: str


def _candidates(text: str):
    """JSON texts to try, best first: fenced blocks, the whole answer, then each ``{...}`` found in it."""
    for m in _FENCE.finditer(text):
        yield m.group(1)
    yield text
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        yield obj


def parse_verdict(text: str | None) -> Verdict:
    """Parse a JSON verdict ``{"explanation": str, "criteria_met": bool}`` (a ```json fence is fine).

    Raises VerdictParseError naming the problem for: no answer, no JSON at all (prose), JSON that is not an
    object (``[]``), an object without ``criteria_met`` (``{"verdict": true}``) or with a non-boolean one
    (``null``, ``"true"``, ``1``).
    """
    if text is None or not text.strip():
        raise VerdictParseError("empty answer")
    first_problem: str | None = None
    for cand in _candidates(text.strip()):
        if isinstance(cand, str):
            try:
                obj = json.loads(cand)
            except json.JSONDecodeError:
                continue
        else:
            obj = cand
        if not isinstance(obj, dict):
            first_problem = first_problem or f"JSON is a {type(obj).__name__}, not an object"
            continue
        if "criteria_met" not in obj:
            first_problem = first_problem or f"JSON object has no 'criteria_met' (keys: {sorted(obj)[:5]})"
            continue
        met = obj["criteria_met"]
        if not isinstance(met, bool):
            first_problem = first_problem or f"'criteria_met' is {json.dumps(met)}, not a boolean"
            continue
        expl = obj.get("explanation", "")
        return Verdict(met, expl if isinstance(expl, str) else json.dumps(expl))
    raise VerdictParseError(first_problem or "no JSON object in the answer")


def yes_no_probability(top_logprobs: list[dict]) -> tuple[float, float]:
    """(P(yes), P(no)) from the first generated token's ``top_logprobs`` (OpenAI format: list of
    ``{"token": str, "logprob": float}``). Tokens match after stripping spaces and lower-casing ("Yes", " yes").

    Raises VerdictParseError when neither "yes" nor "no" is among the top tokens.
    """
    p_yes = p_no = 0.0
    for entry in top_logprobs or []:
        try:
            tok = str(entry["token"]).strip().lower()
            p = math.exp(float(entry["logprob"]))
        except (KeyError, TypeError, ValueError):
            continue
        if tok == "yes":
            p_yes += p
        elif tok == "no":
            p_no += p
    if p_yes == 0.0 and p_no == 0.0:
        raise VerdictParseError("neither 'yes' nor 'no' among the top_logprobs of the first token")
    return p_yes, p_no
