"""BFCL AST-checker semantics for Python-typed tool calls, reimplemented (not copied) from
``ShishirPatil/gorilla`` ``berkeley-function-call-leaderboard/bfcl_eval/eval_checker/ast_eval/ast_checker.py``
(``simple_function_checker``, ``type_checker``, ``string_checker``, ``list_checker``, ``dict_checker``,
``list_dict_checker``, ``multiple_function_checker``, ``parallel_function_checker_no_order``) and
``eval_runner.py`` (``ast_decoder:decoder_failed``, ``irrelevance_error:decoder_success``).

Rules reproduced exactly, in BFCL's order (the first failure is the verdict):

1. the called name must equal the ground-truth name (``simple_function_checker:wrong_func_name``);
2. every schema-required parameter present (``...:missing_required``);
3. for each model argument in the model's order: it must be in the schema **and** listed in the possible
   answer (``...:unexpected_param``); its type must match (``type_error:simple``; arrays/tuples check their
   items one level deep, ``type_error:nested``) - an ``int`` is accepted for a top-level ``float`` parameter
   but not inside an array, and ``bool`` is never an ``int`` nor the reverse (exact ``type()`` comparison);
   a value whose type equals the possible answer's type instead of the schema's is a "variable" and only
   compared with ``in``; its value must be allowed: strings after ``standardize_string`` (drop
   `` ,./-_*^``, lowercase, ``'`` -> ``"``) ``value_error:string``; lists element-wise after standardizing
   their string items ``value_error:list/tuple``; dicts key/value ``value_error:dict_key`` /
   ``value_error:dict_value``; lists of dicts ``value_error:list_dict_count``; anything else Python ``in``
   ``value_error:others``;
4. every possible-answer parameter the model omitted must allow ``""`` (``...:missing_optional``).

Lenient flags (all off = BFCL): ``nested_int_to_float`` accepts ints inside float arrays (gorilla issue
#1049); ``fill_defaults`` fills an omitted parameter that the possible answer lists from the schema's
``default`` before checking; ``unicode_nfc`` NFC-normalizes strings on both sides (done by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# The tool-doc reading is the wire contract's (what a valid `tools` list is); the checker uses its result.
from contracts.tools import FuncDoc, ParamSpec, normalize_tools  # noqa: F401


@dataclass(slots=True, frozen=True)
class CheckOptions:
    """Lenient options; all ``False`` reproduces BFCL."""

    nested_int_to_float: bool = False
    fill_defaults: bool = False
    unicode_nfc: bool = False


BFCL_OPTIONS = CheckOptions()


def standardize_string(s: str) -> str:
    """BFCL ``standardize_string``: drop `` ,./-_*^``, lowercase, ``'`` -> ``"`` (memoized up to
    ``_STD_MEMO_LEN`` characters: possible-answer strings recur across the rollouts of a group, while a long
    free-text argument would only fill the memo - 65,536 entries of any size)."""
    return _standardize_memo(s) if len(s) <= _STD_MEMO_LEN else _standardize(s)


def _standardize(s: str) -> str:
    return (
        s.replace(" ", "").replace(",", "").replace(".", "").replace("/", "").replace("-", "").replace("_", "")
        .replace("*", "").replace("^", "").lower().replace("'", '"')
    )


_STD_MEMO_LEN = 256
_standardize_memo = lru_cache(maxsize=65536)(_standardize)


def reference_value(value: Any) -> Any:
    """One concrete value from a possible-answer entry: a dict entry holds allowed lists per key (BFCL
    ``dict_checker``), so it becomes ``{key: first allowed}`` (keys whose first allowed value is ``""`` left
    out); a list of such dicts (``list_dict_checker``) likewise element-wise; anything else is itself."""
    if isinstance(value, dict):
        return {k: a[0] if isinstance(a, list) else a for k, a in value.items() if not (isinstance(a, list) and (not a or a[0] == ""))}
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        return [reference_value(x) for x in value]
    return value


def reference_calls(ground_truth: list[dict[str, dict[str, list]]]) -> list[tuple[str, dict[str, Any]]]:
    """BFCL possible answers -> the reference calls ``[(name, {param: value})]``: the first allowed value of
    every parameter (via :func:`reference_value`), omitting a parameter whose first allowed value is ``""``."""
    out = []
    for call in ground_truth:
        for name, params in call.items():
            out.append((name, {p: reference_value(a[0]) for p, a in params.items() if a and a[0] != ""}))
    return out


def _answer_type(allowed: list) -> type | None:
    """BFCL ``get_possible_answer_type``: type of the first allowed value that is not ``""``."""
    for a in allowed:
        if a != "":
            return type(a)
    return None


def type_check(value: Any, allowed: list, spec: ParamSpec, opts: CheckOptions) -> tuple[str | None, bool, Any]:
    """BFCL ``type_checker`` (plus the int->float and tuple->list conversions done before it).

    Returns ``(error_type | None, is_variable, converted value)``; ``error_type`` is ``type_error:simple`` or
    ``type_error:nested``.
    """
    expected = spec.py_type
    tv = type(value)
    if spec.type_name == "tuple" and tv is tuple:
        value, tv = list(value), list
    elif expected is float and tv is int:
        value, tv = float(value), float
    ans_type = None  # _answer_type, inlined: this runs once per argument
    for a in allowed:
        if a != "":
            ans_type = type(a)
            break
    is_variable = ans_type is not None and ans_type is not expected
    if tv is expected:
        nested = spec.nested
        if nested is None:
            return None, is_variable, value
        for cand in allowed:
            if type(cand) is list:
                item_ans = _answer_type(cand)
                lenient = opts.nested_int_to_float and nested is float
                ok = all(
                    type(v) is nested or (item_ans is not None and type(v) is item_ans) or (lenient and type(v) is int)
                    for v in value
                )
                if not ok:
                    continue
            return None, is_variable, value
        # BFCL falls through: nested error is kept only when the value has the possible answer's type
        if ans_type is not None and tv is ans_type:
            return "type_error:nested", True, value
        return "type_error:simple", is_variable, value
    if ans_type is not None and tv is ans_type:
        return None, True, value
    return "type_error:simple", is_variable, value


def value_check(value: Any, allowed: list, spec: ParamSpec, is_variable: bool) -> str | None:
    """BFCL value checks after a passed type check; returns the error type or ``None``."""
    if not is_variable:
        expected = spec.py_type
        if expected is dict:
            return dict_check(value, allowed)
        if expected is list and spec.nested is dict:
            return list_dict_check(value, allowed)
        if expected is str:
            std = standardize_string(value)
            return None if any(type(a) is str and standardize_string(a) == std for a in allowed) else "value_error:string"
        if expected is list:
            std = _std_list(value)
            return None if any(_iterable(a) and _std_list(a) == std for a in allowed) else "value_error:list/tuple"
    return None if value in allowed else "value_error:others"


def _iterable(a: Any) -> bool:
    return isinstance(a, (list, tuple, str))


def _std_list(items: Any) -> list:
    return [standardize_string(x) if type(x) is str else x for x in items]


def _std(x: Any) -> Any:
    return standardize_string(x) if type(x) is str else x


def dict_check(value: dict, allowed: list) -> str | None:
    """BFCL ``dict_checker``: some non-``""`` candidate dict must accept every key and value of ``value`` and
    ``value`` must hold every candidate key whose allowed list lacks ``""``. Returns the error type of the
    last candidate tried (``value_error:dict_key`` / ``value_error:dict_value``) or ``None``."""
    err = "dict_checker:unclear"
    for cand in allowed:
        if cand == "":
            continue
        err = "dict_checker:unclear"
        if not isinstance(cand, dict):
            continue
        ok = True
        for k, v in value.items():
            if k not in cand:
                err, ok = "value_error:dict_key", False
                break
            opts_k = cand[k] if isinstance(cand[k], list) else [cand[k]]
            if _std(v) not in [_std(a) for a in opts_k]:
                err, ok = "value_error:dict_value", False
                break
        for k, opts_k in cand.items():
            if k not in value and "" not in (opts_k if isinstance(opts_k, list) else [opts_k]):
                err, ok = "value_error:dict_key", False
                break
        if ok:
            return None
    return err


def list_dict_check(value: list, allowed: list) -> str | None:
    """BFCL ``list_dict_checker``: same length as a candidate and each dict accepted in order."""
    err = "list_dict_checker:unclear"
    for cand in allowed:
        if not _iterable(cand) or len(value) != len(cand):
            err = "value_error:list_dict_count"
            continue
        ok = True
        for d, c in zip(value, cand):
            err = dict_check(d, [c]) if isinstance(d, dict) else "value_error:dict_value"
            if err is not None:
                ok = False
                break
        if ok:
            return None
    return err


@dataclass(slots=True)
class PairCheck:
    """One model call checked against one ground-truth call (or, with ``gt=None``, only its own schema).

    ``error_type``/``error``: the BFCL verdict (``None`` = valid). The remaining fields feed the reward
    channels: counts and the first failure (``"code: detail"``) for required arguments, unexpected
    arguments, argument types and argument values.
    """

    name_ok: bool
    known: bool
    error_type: str | None = None
    error: str | None = None
    req_total: int = 0
    req_ok: int = 0
    req_reason: str | None = None
    n_args: int = 0
    n_unexpected: int = 0
    unexpected_reason: str | None = None
    n_typed: int = 0
    n_type_ok: int = 0
    type_reason: str | None = None
    n_slots: int = 0
    n_value_ok: int = 0
    value_reason: str | None = None


def check_pair(
    call: dict[str, Any],
    gt: tuple[str, dict[str, list]] | None,
    docs: dict[str, FuncDoc],
    opts: CheckOptions = BFCL_OPTIONS,
) -> PairCheck:
    """Check one normalized call ``{"name", "arguments"}`` against one ground-truth call ``(name, {param:
    [allowed, ...]})`` with BFCL ``simple_function_checker`` semantics (see module docstring).

    With ``gt=None`` (or a different name) only the schema of the called function is checked (required,
    unexpected, types) for the reward channels; the verdict is then ``wrong_func_name`` (or
    ``unknown_function`` when the called name is not among the tools).
    """
    name, args = call["name"], call["arguments"]
    if gt is not None and name == gt[0]:
        doc, gtp = docs[name], gt[1]
        if opts.fill_defaults:
            missing = [p for p in gtp if p not in args and p in doc.params and doc.params[p].has_default]
            if missing:
                args = dict(args)
                for p in missing:
                    args[p] = doc.params[p].default
    else:
        doc, gtp = docs.get(name), None
    pc = PairCheck(name_ok=gtp is not None, known=doc is not None)
    if doc is None:
        pc.error_type = "simple_function_checker:wrong_func_name" if gt is not None else "unknown_function"
        pc.error = f"function {name!r} is not among the tools" + (f" (expected {gt[0]!r})" if gt else "")
        pc.req_reason = pc.unexpected_reason = pc.type_reason = f"unknown_function: {name!r}"
        pc.value_reason = f"wrong_func_name: {name!r} (expected {gt[0]!r})" if gt else None
        return pc
    first_arg_err: tuple[str, str] | None = None
    pc.req_total = len(doc.required)
    for r in doc.required:
        if r in args:
            pc.req_ok += 1
        elif pc.req_reason is None:
            pc.req_reason = f"missing_required: {name}.{r}"
    pc.n_args = len(args)
    params = doc.params
    for p, v in args.items():
        spec = params.get(p)
        if spec is None or (gtp is not None and p not in gtp):
            pc.n_unexpected += 1
            why = "not in the schema" if spec is None else "not in the possible answer"
            msg = f"{name}.{p} ({why})"
            if pc.unexpected_reason is None:
                pc.unexpected_reason = "unexpected_param: " + msg
            if gtp is not None and pc.value_reason is None:
                pc.value_reason = "unexpected_param: " + msg
            if first_arg_err is None:
                first_arg_err = ("simple_function_checker:unexpected_param", f"Unexpected parameter: {msg}.")
            continue
        pc.n_typed += 1
        allowed = gtp[p] if gtp is not None else ()
        terr, is_var, v = type_check(v, allowed, spec, opts)
        if terr is not None:
            msg = f"{name}.{p}: expected {spec.type_name}, got {type(v).__name__} {v!r}"
            if pc.type_reason is None:
                pc.type_reason = f"{terr}: {msg}"
            if gtp is not None and pc.value_reason is None:
                pc.value_reason = f"{terr}: {msg}"
            if first_arg_err is None:
                first_arg_err = (terr, msg)
            continue
        pc.n_type_ok += 1
        if gtp is None:
            continue
        verr = value_check(v, allowed, spec, is_var)
        if verr is not None:
            msg = f"{name}.{p}={v!r} not in {allowed!r}"
            if pc.value_reason is None:
                pc.value_reason = f"{verr}: {msg}"
            if first_arg_err is None:
                first_arg_err = (verr, msg)
            continue
        pc.n_value_ok += 1
    if gtp is not None:
        pc.n_slots = len(gtp)  # |possible-answer params ∪ model args|
        if pc.n_unexpected:
            pc.n_slots += pc.n_unexpected - sum(1 for p in args if p in gtp and p not in params)
        first_missing_opt = None
        for p, allowed in gtp.items():
            if p in args:
                continue
            if "" in allowed:
                pc.n_value_ok += 1
            elif first_missing_opt is None:
                first_missing_opt = p
                if pc.value_reason is None:
                    pc.value_reason = f"missing_optional: {name}.{p} omitted, allowed {allowed!r}"
        if pc.req_reason is not None:
            pc.error_type, pc.error = "simple_function_checker:missing_required", pc.req_reason
        elif first_arg_err is not None:
            pc.error_type, pc.error = first_arg_err
        elif first_missing_opt is not None:
            pc.error_type = "simple_function_checker:missing_optional"
            pc.error = f"Optional parameter {name}.{first_missing_opt} not provided and not marked as optional."
    elif gt is not None:
        pc.error_type = "simple_function_checker:wrong_func_name"
        pc.error = f"Function name {gt[0]!r} not found in model output (got {name!r})."
    return pc


CHECKER_PREFIX = {
    "simple": "simple_function_checker",
    "multiple": "multiple_function_checker",
    "parallel": "parallel_function_checker_no_order",
    "parallel_multiple": "parallel_function_checker_no_order",
}


def resolve_mode(mode: str, gt: list | None, docs: dict[str, FuncDoc]) -> str:
    """The checker to use: the declared mode, or from the ground truth's cardinality when ``mode == "auto"``
    (1 call: ``multiple`` when several tools else ``simple``; more: ``parallel`` / ``parallel_multiple``).
    Never from a category name (BFCL's ``ast_checker`` tests ``"parallel" in test_category``)."""
    if mode != "auto":
        return mode
    if not gt or len(gt) == 1:
        return "multiple" if len(docs) > 1 else "simple"
    return "parallel_multiple" if len({name for name, _ in gt}) > 1 else "parallel"


def ast_check(
    calls: list[dict[str, Any]],
    gt: list[tuple[str, dict[str, list]]],
    docs: dict[str, FuncDoc],
    mode: str = "auto",
    opts: CheckOptions = BFCL_OPTIONS,
    pair: Any = None,
) -> tuple[bool, str | None, str | None]:
    """BFCL ``ast_checker`` on decoded calls: ``(valid, error_type, error)``.

    ``gt``: ground-truth calls as ``(name, {param: [allowed]})``; ``[]`` means no call is expected (BFCL
    irrelevance: valid iff no call). ``mode``: ``simple`` / ``multiple`` (exactly one call, checked against
    the ground truth) or ``parallel`` / ``parallel_multiple`` (same count, matched regardless of order by
    BFCL's greedy: each ground-truth call takes the first unused model call that passes); ``auto`` resolves
    with :func:`resolve_mode`. ``pair(i, j)`` optionally memoizes ``check_pair(calls[j], gt[i], ...)``.
    """
    if pair is None:
        def pair(i: int, j: int) -> PairCheck:
            return check_pair(calls[j], gt[i], docs, opts)
    n_calls, n_gt = len(calls), len(gt)
    if n_gt == 0:
        if n_calls == 0:
            return True, None, None
        return False, "irrelevance_error:decoder_success", "Valid syntax. Successfully decode AST when it should not."
    resolved = resolve_mode(mode, gt, docs)
    prefix = CHECKER_PREFIX[resolved]
    if n_calls != n_gt or (resolved in ("simple", "multiple") and n_calls != 1):
        return False, f"{prefix}:wrong_count", f"Wrong number of functions: {n_calls}, expected {n_gt}."
    if resolved in ("simple", "multiple"):
        r = pair(0, 0)
        return r.error_type is None, r.error_type, r.error
    used = [False] * n_calls
    for i in range(n_gt):
        errs = []
        for j in range(n_calls):
            if used[j]:
                continue
            r = pair(i, j)
            if r.error_type is None:
                used[j] = True
                break
            errs.append(f"model call {j}: {r.error_type}: {r.error}")
        else:
            return (
                False,
                f"{prefix}:cannot_find_match",
                f"Could not find a matching function for index {i} of possible answers ({gt[i][0]}): " + "; ".join(errs),
            )
    return True, None, None
