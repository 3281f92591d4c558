"""ToolRL rewards (Qian et al., "ToolRL: Reward is All Tool Learning Needs", 2025), reimplemented from
``qiancheng0/ToolRL`` ``verl/utils/reward_score/rlla.py`` (read via its fork ``neruzZ-JPG/ToolRL``) with the
default settings (no ``REFINEDREWARD`` / ``COARSEREWARD`` / ``INTERMEDIATEREWARD`` / schedules):

- format reward in {0, 1} (``customize_format_reward_func``): the regex depends on which blocks the ground
  truth has - ``<tool_call>`` only: ``^<think>.*?</think>\\n<tool_call>\\n.*?\\n</tool_call>$``; ``<response>``
  only: ``^<think>.*?</think>\\n<response>.*?</response>$``; both: think, tool_call, response in that order;
  neither: ``^<think>.*?</think>$``; plus each present tag occurring exactly once.
- correctness reward in [-3, 3] (``customize_correctness_reward_tool`` / ``compute_tool_call_reward``):
  0 when the ground truth has no call; -3 when ``<tool_call>``/``</tool_call>`` is missing or a line of the
  first block is not a JSON call object; +3 on an exact match of the call list; otherwise
  ``6 * R_match / S_max - 3`` with ``R_match = match_score(gt names, pred names) + sum over ground-truth calls
  of the best unused same-name prediction's (match_score(gt param names, pred param names) + #exactly equal
  values)`` and ``S_max = 1 + sum over ground-truth calls of (1 + #params)``.

The ground truth here is BFCL possible answers; its ToolRL form takes the first allowed value of every
parameter and omits a parameter whose first allowed value is ``""`` (:func:`gt_calls_from_bfcl`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from services.rules.bfcl import reference_calls

TOOLRL_MAX, TOOLRL_MIN = 3.0, -3.0

_FMT_CALL = re.compile(r"^<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>$", re.DOTALL)
_FMT_RESP = re.compile(r"^<think>.*?</think>\n<response>.*?</response>$", re.DOTALL)
_FMT_BOTH = re.compile(r"^<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>\n<response>.*?</response>$", re.DOTALL)
_FMT_THINK = re.compile(r"^<think>.*?</think>$", re.DOTALL)


def gt_calls_from_bfcl(ground_truth: list[dict[str, dict[str, list]]]) -> list[dict[str, Any]]:
    """BFCL possible answers ``[{fname: {param: [allowed, ...]}}]`` -> ToolRL ground truth
    ``[{"name", "parameters"}]`` (first allowed value; a first value ``""`` means the parameter is omitted)."""
    return [{"name": name, "parameters": params} for name, params in reference_calls(ground_truth)]


def format_reward(text: str, has_tool_call: bool, has_response: bool) -> float:
    """ToolRL format reward: 1.0 when ``text`` matches the layout the ground truth implies, else 0.0.
    (``re.match`` equals ToolRL's ``re.search`` here: every pattern is anchored with ``^`` and no MULTILINE.)
    The tag counts are tested before the regex (same conjunction, other order): with a tag repeated many times,
    as in a repetition loop, the two lazy groups of the regex backtrack in quadratic time."""
    if has_response and not has_tool_call:
        ok = text.count("<response>") == 1 and text.count("</response>") == 1 and bool(_FMT_RESP.match(text))
    elif has_tool_call and not has_response:
        ok = text.count("<tool_call>") == 1 and text.count("</tool_call>") == 1 and bool(_FMT_CALL.match(text))
    elif has_tool_call and has_response:
        ok = (
            text.count("<tool_call>") == 1
            and text.count("</tool_call>") == 1
            and text.count("<response>") == 1
            and text.count("</response>") == 1
            and bool(_FMT_BOTH.match(text))
        )
    else:
        ok = bool(_FMT_THINK.match(text))
    return 1.0 if ok else 0.0


def match_score(a: list, b: list) -> float:
    """ToolRL ``match_score``: 1 if the lists are equal, 0 if either is empty, else the multiset Jaccard
    ``|a & b| / (|a| + |b| - |a & b|)``. Raises ``TypeError`` for an unhashable item of ``b`` (ToolRL counts
    both lists with ``Counter``; ``a``, the ground truth's names, are strings)."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    left = Counter(b) if len(b) > 8 else None
    inter = 0
    if left is None:  # small lists (the usual case): multiset intersection without building two Counters
        for x in b:
            hash(x)  # an unhashable item (a JSON list as a name) raises TypeError, as ToolRL's Counter does
        rest = list(b)
        for x in a:
            if x in rest:
                rest.remove(x)
                inter += 1
    else:
        for x in a:
            if left[x] > 0:
                left[x] -= 1
                inter += 1
    denom = len(a) + len(b) - inter
    return inter / denom if denom > 0 else 0.0


def correctness_from_calls(gt: list[dict[str, Any]], pred: list[dict[str, Any]]) -> float:
    """ToolRL ``compute_tool_call_reward`` on call lists ``[{"name", "parameters"}]``; result in [-3, 3].

    Raises ``KeyError`` / ``AttributeError`` / ``TypeError`` on a malformed prediction object, as ToolRL
    does (its caller turns that into -3).
    """
    if not gt:
        return 0.0
    if gt == pred:
        return TOOLRL_MAX
    score = match_score([g["name"] for g in gt], [p["name"] for p in pred])
    s_max = 1.0
    used: set[int] = set()
    for g in gt:
        gname, gparams = g["name"], g["parameters"]
        s_max += 1.0 + len(gparams)
        best, best_i = 0.0, -1
        for i, p in enumerate(pred):
            if i in used or p["name"] != gname:
                continue
            pparams = p["parameters"]
            total = match_score(list(gparams.keys()), list(pparams.keys()))
            total += sum(1.0 for k, v in gparams.items() if k in pparams and pparams[k] == v)
            if total > best:
                best, best_i = total, i
        if best_i >= 0:
            used.add(best_i)
            score += best
    return (TOOLRL_MAX - TOOLRL_MIN) * score / s_max + TOOLRL_MIN


def correctness_from_text(text: str, gt: list[dict[str, Any]]) -> tuple[float, str | None]:
    """ToolRL correctness on raw ToolRL text: the first ``<tool_call>`` block, one JSON object per line.

    Returns ``(reward, reason)``; ``reason`` is a machine-readable note when the reward is the -3 floor
    because of the format (``toolrl_missing_tags``, ``toolrl_bad_json``, ``toolrl_bad_call``).
    """
    if not gt:
        return 0.0, None
    if "<tool_call>" not in text or "</tool_call>" not in text:
        return TOOLRL_MIN, "toolrl_missing_tags: <tool_call>...</tool_call> not found"
    block = text.split("<tool_call>")[1].split("</tool_call>")[0].strip()
    pred = []
    for line in block.split("\n"):
        try:
            pred.append(json.loads(line))
        except (ValueError, RecursionError):  # ToolRL's bare ``except`` also floors a line too deep to decode
            return TOOLRL_MIN, f"toolrl_bad_json: {line[:80]!r}"
    try:
        return correctness_from_calls(gt, pred), None
    except (KeyError, AttributeError, TypeError) as exc:
        return TOOLRL_MIN, f"toolrl_bad_call: {exc.__class__.__name__} {exc}"
