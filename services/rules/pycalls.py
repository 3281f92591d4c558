"""Fast path for BFCL Python-call text: a one-regex tokenizer and a small recursive-descent reader for the
common subset ``[f(a=1, b='x', c=[1.5, -2], d={'k': (1, 2)}, e=True, g=name)]``.

It returns exactly what :func:`services.rules.parsing.parse_python`'s :mod:`ast` path returns on that subset
(about three times faster than ``ast.parse``), and returns ``None`` for anything outside it - escapes,
string prefixes, comments, nested calls, positional arguments, arithmetic, non-ASCII names, keywords, odd
number forms, errors - so the caller falls back to :mod:`ast`, which gives the exact value or error.
Never evaluates anything.
"""

from __future__ import annotations

import keyword
import re
from typing import Any

_TOKEN = re.compile(
    r"""[ \t\n\r\f]*(?:
    ("[^"\\\n\r\x00]*"|'[^'\\\n\r\x00]*')                          # 1 string without escapes / newlines
    |((?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?)(?![\w.'"])  # 2 number not glued to a name
    |([A-Za-z_][A-Za-z0-9_]*)(?![\w'"])                                 # 3 ASCII name not glued to a string
    |([\[\](){},:=.\-])                                                 # 4 punctuation
    |(\S|\s)                                                             # 5 anything else -> give up
    )""",
    re.VERBOSE,
)
_KEYWORDS = frozenset(keyword.kwlist)
_CONSTS = {"True": True, "False": False, "None": None}


class _GiveUp(Exception):
    pass


def fast_parse_calls(src: str) -> list[dict[str, Any]] | None:
    """Parse the already-wrapped text ``[...]`` into ``[{"name", "arguments"}]``; ``None`` = use :mod:`ast`."""
    toks = _TOKEN.findall(src)
    try:
        calls, pos = _call_list(toks, 0)
    except (_GiveUp, IndexError, ValueError, TypeError, RecursionError):
        return None
    return calls if pos == len(toks) else None


def _punct(tok: tuple) -> str:
    return tok[3]


def _call_list(toks: list, pos: int) -> tuple[list, int]:
    if _punct(toks[pos]) != "[":
        raise _GiveUp
    pos += 1
    calls = []
    if _punct(toks[pos]) == "]":
        return calls, pos + 1
    while True:
        call, pos = _call(toks, pos)
        calls.append(call)
        p = _punct(toks[pos])
        if p == "]":
            return calls, pos + 1
        if p != ",":
            raise _GiveUp
        pos += 1
        if _punct(toks[pos]) == "]":
            return calls, pos + 1


def _name(toks: list, pos: int) -> tuple[str, int]:
    name = toks[pos][2]
    if not name or name in _KEYWORDS:
        raise _GiveUp
    return name, pos + 1


def _call(toks: list, pos: int) -> tuple[dict, int]:
    part, pos = _name(toks, pos)
    parts = [part]
    while _punct(toks[pos]) == ".":
        part, pos = _name(toks, pos + 1)
        parts.append(part)
    if _punct(toks[pos]) != "(":
        raise _GiveUp
    pos += 1
    args: dict[str, Any] = {}
    while _punct(toks[pos]) != ")":
        key, pos = _name(toks, pos)
        if _punct(toks[pos]) != "=" or key in args:
            raise _GiveUp  # positional argument or duplicate: the ast path reports it
        args[key], pos = _value(toks, pos + 1)
        p = _punct(toks[pos])
        if p == ",":
            pos += 1
        elif p != ")":
            raise _GiveUp
    return {"name": ".".join(parts), "arguments": args}, pos + 1


def _number(text: str) -> int | float:
    if "." in text or "e" in text or "E" in text:
        return float(text)
    if len(text) > 1 and text[0] == "0":
        raise _GiveUp  # 007 is a SyntaxError, 00 is 0: let ast decide
    return int(text)


def _value(toks: list, pos: int) -> tuple[Any, int]:
    s, num, name, p, other = toks[pos]
    if s:
        if toks[pos + 1][0]:
            raise _GiveUp  # implicit concatenation "a" "b"
        return s[1:-1], pos + 1
    if num:
        return _number(num), pos + 1
    if name:
        if name in _CONSTS:
            return _CONSTS[name], pos + 1
        if name in _KEYWORDS or _punct(toks[pos + 1]) in ("(", "."):
            raise _GiveUp  # nested call / attribute / keyword
        return name, pos + 1  # BFCL keeps a bare variable name as its string
    if p == "-":
        num = toks[pos + 1][1]
        if not num:
            raise _GiveUp
        return -_number(num), pos + 2
    if p == "[":
        items, pos = _sequence(toks, pos + 1, "]")
        return items, pos
    if p == "(":
        if _punct(toks[pos + 1]) == ")":
            return (), pos + 2
        first, pos = _value(toks, pos + 1)
        q = _punct(toks[pos])
        if q == ")":
            return first, pos + 1  # parenthesized value, not a tuple
        if q != ",":
            raise _GiveUp
        rest, pos = _sequence(toks, pos + 1, ")")
        return (first, *rest), pos
    if p == "{":
        out: dict = {}
        pos += 1
        while _punct(toks[pos]) != "}":
            key, pos = _value(toks, pos)
            if _punct(toks[pos]) != ":" or isinstance(key, (list, dict)):
                raise _GiveUp  # a set, or an unhashable key
            if isinstance(key, tuple) and any(isinstance(k, (list, dict)) for k in key):
                raise _GiveUp
            out[key], pos = _value(toks, pos + 1)
            q = _punct(toks[pos])
            if q == ",":
                pos += 1
            elif q != "}":
                raise _GiveUp
        return out, pos + 1
    raise _GiveUp


def _sequence(toks: list, pos: int, close: str) -> tuple[list, int]:
    items = []
    while _punct(toks[pos]) != close:
        v, pos = _value(toks, pos)
        items.append(v)
        q = _punct(toks[pos])
        if q == ",":
            pos += 1
        elif q != close:
            raise _GiveUp
    return items, pos + 1
