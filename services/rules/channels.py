"""Reward channels for one tool-call completion: the BFCL verdict, seven ``rules/*`` channels in [0, 1] and the
two ToolRL rewards. Entry point :func:`score_item`.

Channel definitions (partial credit is fractional; the reason names the first failure, in ground-truth order):

- model calls are aligned to ground-truth calls: first BFCL's greedy no-order match (each ground-truth call
  takes the first unused model call that passes ``simple_function_checker``), then the first unused call with
  the same name, then the first unused call. ``S = max(#ground-truth calls, #model calls)``; a missing or
  extra call counts 0 in every per-call channel, so each per-call channel is ``sum(pair score) / S``.
- ``rules/format``: 1 when the completion parsed in the declared (or detected) format and, if a call is
  expected, holds at least one call; 0 otherwise.
- ``rules/function_name``: pairs whose name equals the ground-truth name.
- ``rules/required_args``: per pair, the fraction of the called function's schema-required params present.
- ``rules/no_unexpected_args``: per pair, the fraction of the model's arguments that are in the schema and
  (when the name matches) listed in the possible answer (1 for a call without arguments).
- ``rules/arg_types``: per pair, the fraction of the model's schema arguments that pass BFCL's type check.
- ``rules/arg_values``: per name-matched pair, the fraction of the union of possible-answer params and model
  arguments that is satisfied: present with an allowed value (type check included), or omitted where ``""``
  is allowed; a wrong-name pair scores 0.
- ``rules/call_count``: ``min(n, m) / max(n, m)`` for ``n`` model and ``m`` ground-truth calls (1 if both 0).

Special cases: an unparseable completion scores 0 on the seven channels (1 with ``ground_truth == []``, where
not calling is right) and ToolRL correctness -3, with the parse error as the reason. Without ground truth
(``None``) the ground-truth channels (name, values, count, ToolRL) are NaN with reason ``no_ground_truth``
and the schema channels are averaged over the model calls (NaN ``no_calls`` when there are none).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import replace
from typing import Any

from services.rules.bfcl import CheckOptions, FuncDoc, PairCheck, ast_check, check_pair, normalize_tools
from services.rules.parsing import Parsed, parse_completion
from services.rules.schemas import CHANNELS, RulesItem, RulesResult, ToolRLValues, construct
from services.rules.toolrl import TOOLRL_MIN, correctness_from_calls, correctness_from_text, format_reward, gt_calls_from_bfcl

NAN = math.nan
_PER_CALL = ("rules/function_name", "rules/required_args", "rules/no_unexpected_args", "rules/arg_types", "rules/arg_values")


def score_item(item: dict | RulesItem) -> RulesResult:
    """Score one item (a :class:`RulesItem` or a dict of its fields) and return a :class:`RulesResult`.

    Channels: the nine names of :data:`~services.rules.schemas.CHANNELS`; the first seven in [0, 1],
    ``rules/toolrl_format`` in {0, 1}, ``rules/toolrl_correctness`` in [-3, 3]; NaN (with a reason) only when a
    channel cannot be computed (no ground truth). Sources: BFCL ``ast_checker.py`` (verdict, error types) and
    ToolRL ``rlla.py`` (format / correctness) - see :mod:`services.rules.bfcl` and :mod:`services.rules.toolrl`.

    Raises ``pydantic.ValidationError`` for a malformed dict item (the same errors the service answers 422).
    """
    if not isinstance(item, RulesItem):
        item = RulesItem.model_validate(item)
    o = item.options
    opts = CheckOptions(o.nested_int_to_float, o.fill_defaults, o.unicode_nfc)
    docs = getattr(item.tools, "docs", None)
    if docs is None:
        docs = normalize_tools(item.tools)
    gt_raw = item.ground_truth
    gt = None if gt_raw is None else [next(iter(c.items())) for c in gt_raw]
    parsed = parse_completion(item.completion, item.format)
    calls = parsed.calls
    if opts.unicode_nfc:
        calls = _nfc(calls)
        gt = None if gt is None else _nfc(gt)
        docs = _nfc_docs(docs)

    channels: dict[str, float] = {}
    reasons: dict[str, str] = {}
    valid, error_type, error = _score_rules(parsed, calls, gt, docs, item.mode, opts, channels, reasons)
    tr_format, tr_correct = _score_toolrl(item, parsed, gt_raw, reasons)
    channels["rules/toolrl_format"] = tr_format = tr_format + 0.0  # + 0.0: never -0.0 on the wire
    channels["rules/toolrl_correctness"] = tr_correct = tr_correct + 0.0
    return construct(
        RulesResult,
        id=item.id,
        valid=valid,
        error_type=error_type,
        error=error,
        format=parsed.format,
        calls=parsed.calls,
        channels={k: channels[k] + 0.0 for k in CHANNELS},
        reasons=reasons,
        toolrl=construct(ToolRLValues, format=tr_format, correctness=tr_correct),
    )


def bfcl_check(
    completion: Any,
    docs: dict[str, FuncDoc],
    gt: list[tuple[str, dict]],
    mode: str = "auto",
    fmt: str = "auto",
    opts: CheckOptions = CheckOptions(),
) -> tuple[bool, str | None, str | None]:
    """Parse + BFCL verdict only (no channels, no ToolRL): ``(valid, error_type, error)``; the benchmark's
    "BFCL-style check". ``docs`` from :func:`~services.rules.bfcl.normalize_tools`, ``gt`` as
    ``[(name, {param: [allowed]})]``. A completion that does not decode is ``ast_decoder:decoder_failed``
    (valid when no call is expected, as BFCL irrelevance)."""
    parsed = parse_completion(completion, fmt)
    if not parsed.ok:
        if not gt:
            return True, None, None
        return False, "ast_decoder:decoder_failed", f"{parsed.error_code}: {parsed.error}"
    return ast_check(parsed.calls, gt, docs, mode, opts)


def _nfc(x: Any) -> Any:
    if isinstance(x, str):
        return unicodedata.normalize("NFC", x)
    if isinstance(x, dict):
        return {_nfc(k): _nfc(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_nfc(v) for v in x)
    return x


def _nfc_docs(docs: dict[str, FuncDoc]) -> dict[str, FuncDoc]:
    """The tool docs with NFC-normalized function / parameter names and defaults, to match the normalized calls
    and ground truth (otherwise an exact call written in NFD no longer finds its schema)."""
    out = {}
    for doc in docs.values():
        params = {_nfc(p): replace(spec, name=_nfc(p), default=_nfc(spec.default)) for p, spec in doc.params.items()}
        out[_nfc(doc.name)] = FuncDoc(_nfc(doc.name), params, tuple(_nfc(r) for r in doc.required))
    return out


def _score_rules(
    parsed: Parsed,
    calls: list[dict],
    gt: list[tuple[str, dict]] | None,
    docs: dict[str, FuncDoc],
    mode: str,
    opts: CheckOptions,
    ch: dict[str, float],
    why: dict[str, str],
) -> tuple[bool, str | None, str | None]:
    """Fill the seven ``rules/*`` channels and reasons; return the BFCL verdict ``(valid, error_type, error)``."""
    if not parsed.ok:
        reason = f"{parsed.error_code}: {parsed.error}"
        if gt == []:  # BFCL irrelevance: a completion that decodes to no call is the right answer
            for name in CHANNELS[:7]:
                ch[name] = 1.0
            if parsed.error_code != "no_tool_call":
                ch["rules/format"], why["rules/format"] = 0.0, reason
            return True, None, None
        for name in CHANNELS[:7]:
            ch[name], why[name] = 0.0, reason
        if gt is None:
            for name in ("rules/function_name", "rules/arg_values", "rules/call_count"):
                ch[name], why[name] = NAN, "no_ground_truth: ground_truth not given"
        return False, "ast_decoder:decoder_failed", f"Invalid syntax. Failed to decode AST. {reason}"

    n_calls = len(calls)
    if n_calls == 0 and gt != []:
        ch["rules/format"], why["rules/format"] = 0.0, "no_tool_call: a call was expected, none found"
    else:
        ch["rules/format"] = 1.0

    if gt is None:
        _schema_only(calls, docs, opts, ch, why)
        for name in ("rules/function_name", "rules/arg_values", "rules/call_count"):
            ch[name], why[name] = NAN, "no_ground_truth: ground_truth not given"
        return False, "rules:no_ground_truth", "no ground truth given: the BFCL verdict cannot be computed"

    n_gt = len(gt)
    ch["rules/call_count"] = min(n_calls, n_gt) / max(n_calls, n_gt) if max(n_calls, n_gt) else 1.0
    if n_calls != n_gt:
        why["rules/call_count"] = f"wrong_count: {n_calls} call(s), expected {n_gt}"

    valid, error_type, error = ast_check(calls, gt, docs, mode, opts, pair := _memo(calls, gt, docs, opts))
    if n_gt == 0:
        if n_calls == 0:
            for name in _PER_CALL:
                ch[name] = 1.0
        else:
            _schema_only(calls, docs, opts, ch, why)
            names = ", ".join(c["name"] for c in calls)
            for name in ("rules/function_name", "rules/arg_values"):
                ch[name], why[name] = 0.0, f"irrelevance_error: called {names} when no call was expected"
        return valid, error_type, error

    # alignment for the channels: BFCL's greedy no-order match, then the same name, then order
    match = [-1] * n_gt
    used = [False] * n_calls
    for i in range(n_gt):
        for j in range(n_calls):
            if not used[j] and pair(i, j).error_type is None:
                match[i], used[j] = j, True
                break
    for same_name in (True, False):
        for i in range(n_gt):
            if match[i] >= 0:
                continue
            for j in range(n_calls):
                if not used[j] and (not same_name or calls[j]["name"] == gt[i][0]):
                    match[i], used[j] = j, True
                    break

    # per-call channels
    sums = dict.fromkeys(_PER_CALL, 0.0)
    for i in range(n_gt):
        j = match[i]
        if j < 0:
            _first(why, _PER_CALL, f"missing_call: no model call for ground-truth call {i} ({gt[i][0]})")
            continue
        r = pair(i, j)
        if not r.name_ok:
            _first(why, ("rules/function_name",), f"wrong_func_name: {calls[j]['name']!r}, expected {gt[i][0]!r}")
            if r.value_reason is None:
                r.value_reason = f"wrong_func_name: {calls[j]['name']!r}, expected {gt[i][0]!r}"
        _add_pair(r, sums, why, with_values=True)
    for j in range(n_calls):
        if not used[j]:
            _first(why, _PER_CALL, f"extra_call: model call {j} ({calls[j]['name']}) matches no ground-truth call")
    s = max(n_calls, n_gt)
    for name in _PER_CALL:
        ch[name] = sums[name] / s
        if ch[name] >= 1.0:
            why.pop(name, None)
    return valid, error_type, error


def _memo(calls: list[dict], gt: list, docs: dict[str, FuncDoc], opts: CheckOptions):
    cache: dict[tuple[int, int], PairCheck] = {}

    def pair(i: int, j: int) -> PairCheck:
        r = cache.get((i, j))
        if r is None:
            r = cache[(i, j)] = check_pair(calls[j], gt[i], docs, opts)
        return r

    return pair


def _first(why: dict[str, str], names: tuple[str, ...], reason: str) -> None:
    for name in names:
        why.setdefault(name, reason)


def _add_pair(r: PairCheck, sums: dict[str, float], why: dict[str, str], with_values: bool) -> None:
    sums["rules/function_name"] += 1.0 if r.name_ok else 0.0
    if not r.known:
        _first(why, ("rules/required_args", "rules/no_unexpected_args", "rules/arg_types"), r.req_reason)
        if with_values:
            _first(why, ("rules/arg_values",), r.value_reason)
        return
    sums["rules/required_args"] += r.req_ok / r.req_total if r.req_total else 1.0
    sums["rules/no_unexpected_args"] += (r.n_args - r.n_unexpected) / r.n_args if r.n_args else 1.0
    sums["rules/arg_types"] += r.n_type_ok / r.n_typed if r.n_typed else 1.0
    for name, reason in (
        ("rules/required_args", r.req_reason),
        ("rules/no_unexpected_args", r.unexpected_reason),
        ("rules/arg_types", r.type_reason),
    ):
        if reason is not None:
            why.setdefault(name, reason)
    if with_values:
        if r.name_ok:
            sums["rules/arg_values"] += r.n_value_ok / r.n_slots if r.n_slots else 1.0
        if r.value_reason is not None:
            why.setdefault("rules/arg_values", r.value_reason)


def _schema_only(calls: list[dict], docs: dict[str, FuncDoc], opts: CheckOptions, ch: dict, why: dict) -> None:
    """required / unexpected / types of each call against its own schema, averaged over the calls."""
    names = ("rules/required_args", "rules/no_unexpected_args", "rules/arg_types")
    if not calls:
        for name in names:
            ch[name], why[name] = NAN, "no_calls: nothing to check without ground truth"
        return
    sums = dict.fromkeys(_PER_CALL, 0.0)
    for call in calls:
        _add_pair(check_pair(call, None, docs, opts), sums, why, with_values=False)
    for name in names:
        ch[name] = sums[name] / len(calls)
        if ch[name] >= 1.0:
            why.pop(name, None)


def _jsonish(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonish(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonish(v) for v in x]
    return x


def _score_toolrl(item: RulesItem, parsed: Parsed, gt_raw: list | None, why: dict[str, str]) -> tuple[float, float]:
    """ToolRL format and correctness (``services.rules.toolrl``); raw ToolRL text is scored exactly as ToolRL
    does, calls parsed from other formats go through ToolRL's matching directly."""
    if gt_raw is None:
        why["rules/toolrl_format"] = why["rules/toolrl_correctness"] = "no_ground_truth: ground_truth not given"
        return NAN, NAN
    gt = gt_calls_from_bfcl(gt_raw)
    has_response = item.options.toolrl_response if item.options.toolrl_response is not None else not gt
    fmt = format_reward(parsed.text, bool(gt), has_response)
    if fmt < 1.0:
        blocks = ("<tool_call>" if gt else "") + ("<response>" if has_response else "")
        why["rules/toolrl_format"] = f"toolrl_format: not <think>...</think>{blocks} as ToolRL expects"
    if not gt:
        return fmt, 0.0
    if parsed.format == "toolrl" or item.format == "toolrl":
        correct, reason = correctness_from_text(parsed.text, gt)
    elif not parsed.ok:
        correct, reason = TOOLRL_MIN, f"{parsed.error_code}: {parsed.error}"
    else:
        pred = [{"name": c["name"], "parameters": _jsonish(c["arguments"])} for c in parsed.calls]
        correct, reason = correctness_from_calls(gt, pred), None
    if reason is None and correct < 3.0:
        reason = f"toolrl_partial_match: {correct:.3f} of 3"
    if reason is not None:
        why["rules/toolrl_correctness"] = reason
    return fmt, correct
