"""Verdict parsing: exactly one verdict per grader answer, or a parse error (never a guess).

The rule (simple-evals' ``parse_json_to_dict`` in healthbench_eval.py strips one markdown ```json fence and
parses the rest as JSON; ``grade_rubric_item`` then requires ``label is True or label is False``), made strict
so that an answer holding more than one candidate verdict is never resolved by picking one:

1. The JSON text is the answer's single fenced code block (```json or a bare ```); with no complete fenced
   block it is the whole answer (a lone unterminated ```json opener and a trailing ``` are stripped, as
   simple-evals does). Two or more fenced blocks are an error.
2. Outside that block the answer may hold prose, but no ``criteria_met`` at all: a verdict quoted in prose
   (``Not met. A passing answer would be {"criteria_met": true}.``) makes the answer ambiguous.
3. The JSON text must parse as ONE JSON object (no prose around it when there is no fence) whose top level has
   exactly one ``criteria_met`` key, a JSON boolean, and no ``criteria_met`` key anywhere inside it
   (``{"criteria_met": "false", "details": {"criteria_met": true}}`` is an error, not True).

Every error is a :class:`VerdictParseError`; the backend re-asks and finally records a null verdict with the
reason (judge/backends/openai_compat.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

KEY = "criteria_met"
#: a complete fenced block: ``` + optional language tag + (newline) + content + ```
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)```", re.DOTALL)
#: simple-evals' clean-up of a whole answer: a leading ```json and a trailing ```
_EDGE_FENCES = re.compile(r"^```(?:json|JSON)?\s*|\s*```$")
_JSON_TAGS = frozenset({"", "json"})


class VerdictParseError(ValueError):
    """The grader's answer holds no single valid verdict; ``str(exc)`` is the reason."""


@dataclass(frozen=True)
class Verdict:
    criteria_met: bool
    explanation: str


def _json_text(answer: str) -> str:
    """The one JSON text of the answer (rules 1 and 2 of the module docstring)."""
    blocks = list(_FENCE.finditer(answer))
    if len(blocks) > 1:
        raise VerdictParseError(f"{len(blocks)} fenced blocks in the answer; exactly one verdict expected")
    if not blocks:
        return _EDGE_FENCES.sub("", answer)
    block = blocks[0]
    tag = block.group(1).lower()
    if tag not in _JSON_TAGS:
        raise VerdictParseError(f"the fenced block is tagged {block.group(1)!r}, not json")
    outside = answer[:block.start()] + answer[block.end():]
    if KEY in outside:
        raise VerdictParseError(f"'{KEY}' outside the fenced block (a quoted or second verdict): ambiguous")
    return block.group(2)


def _load_object(text: str) -> tuple[dict, int, int]:
    """(top-level object, number of top-level ``criteria_met`` keys, number of them in nested objects)."""
    counts: list[int] = []  # one entry per decoded object, innermost first: the top level is decoded last

    def hook(pairs: list[tuple[str, object]]) -> dict:
        counts.append(sum(1 for k, _ in pairs if k == KEY))
        return dict(pairs)

    try:
        obj = json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as exc:
        raise VerdictParseError(f"the answer is not one JSON object ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise VerdictParseError("JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise VerdictParseError(f"JSON is a {type(obj).__name__}, not an object")
    return obj, counts[-1], sum(counts[:-1])


def parse_verdict(text: str | None) -> Verdict:
    """Parse the grader's answer into its one verdict ``{"explanation": str, "criteria_met": bool}``.

    Accepted: the verdict object alone, or inside one ```json (or bare ```) fenced block, optionally with
    prose around the block that does not mention ``criteria_met``. Extra top-level keys are ignored; a
    non-string explanation is kept as its JSON text.

    Raises VerdictParseError naming the problem for: no answer; several fenced blocks; ``criteria_met``
    outside the block; prose around unfenced JSON; JSON that is not an object (``[]``); an object without a
    top-level ``criteria_met`` (``{"verdict": true}``), with a non-boolean one (``null``, ``"true"``, ``1``),
    with it twice, or with another one nested inside.
    """
    if text is None or not text.strip():
        raise VerdictParseError("empty answer")
    obj, top, nested = _load_object(_json_text(text.strip()))
    if nested:
        raise VerdictParseError(f"'{KEY}' nested inside the verdict object ({nested}x): ambiguous")
    if top == 0:
        raise VerdictParseError(f"JSON object has no '{KEY}' (keys: {sorted(obj)[:5]})")
    if top > 1:
        raise VerdictParseError(f"duplicate '{KEY}' keys ({top}x): ambiguous")
    met = obj[KEY]
    if not isinstance(met, bool):
        raise VerdictParseError(f"'{KEY}' is {json.dumps(met)}, not a boolean")
    expl = obj.get("explanation", "")
    return Verdict(met, expl if isinstance(expl, str) else json.dumps(expl))


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
