"""Values every boundary accepts: finite numbers and valid Unicode, anywhere in a request.

JSON parsers (Python's included) read ``NaN``, ``Infinity`` and ``1e999`` (→ inf) as floats and ``"\\ud800"`` as a
string holding a lone surrogate. Neither can be sent on (httpx refuses NaN, UTF-8 cannot encode a surrogate), so
every wire model rejects them at validation with the path of the value at fault:

- :data:`FiniteFloat`: a float that is not NaN or ±inf;
- :data:`Text`: a string without lone surrogates (:data:`NonEmptyText`: and not empty; :data:`Identifier`: and not
  only whitespace);
- :data:`Json`: any JSON value (objects, arrays, numbers, strings, booleans, null) whose numbers are finite and
  whose strings (keys included) are valid Unicode — for free-form fields such as ``tools``, ``ground_truth``
  and tool-call ``arguments``.

:func:`wire_value` is the one rule for a reward value on the wire: NaN / inf -> ``None``, ``-0.0`` -> ``0.0``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, Field


def _surrogate_at(s: str) -> int | None:
    """Index of the first lone surrogate in ``s``, or None (fast path: ASCII, or encodable as UTF-8)."""
    if s.isascii():
        return None
    try:
        s.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return exc.start


def valid_text(s: str) -> str:
    """``s`` unchanged. Raises ValueError when it holds a lone surrogate (not valid Unicode, not UTF-8 encodable)."""
    at = _surrogate_at(s)
    if at is not None:
        raise ValueError(f"not valid Unicode: lone surrogate {s[at]!r} at position {at}")
    return s


def _find_bad(value: Any, path: str) -> str | None:
    """Path and problem of the first non-finite number or invalid string in ``value`` (depth first), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path + ': ' if path else ''}not a finite number ({value!r})"
    if isinstance(value, str):
        at = _surrogate_at(value)
        where = f"{path}: " if path else ""
        return None if at is None else f"{where}not valid Unicode (lone surrogate at position {at})"
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and _surrogate_at(k) is not None:
                return f"{path + ': ' if path else ''}key {sanitize(k)!r} is not valid Unicode"
            bad = _find_bad(v, f"{path}.{k}" if path else str(k))
            if bad:
                return bad
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            bad = _find_bad(v, f"{path}[{i}]")
            if bad:
                return bad
    return None


_PLAIN = frozenset({int, bool, type(None)})


def _clean(value: Any) -> bool:
    """True when every float in ``value`` is finite and every string (keys included) valid Unicode (iterative)."""
    stack = [value]
    while stack:
        x = stack.pop()
        kind = type(x)
        if kind is str:
            if not x.isascii() and _surrogate_at(x) is not None:
                return False
        elif kind is float:
            if not math.isfinite(x):
                return False
        elif kind is dict:
            for k in x:
                if type(k) is str and not k.isascii() and _surrogate_at(k) is not None:
                    return False
            stack.extend(x.values())
        elif kind is list or kind is tuple:
            stack.extend(x)
        elif kind in _PLAIN:
            continue
        elif isinstance(x, (str, float, dict, list, tuple)):  # subclasses: the slow, general path
            return _find_bad(x, "") is None
    return True


def check_json(value: Any, root: str = "") -> Any:
    """``value`` unchanged when every number in it is finite and every string (dict keys too) valid Unicode.

    One quick pass decides (about 2 µs for a BFCL tool doc); only a failure walks the value again to name the
    path under ``root`` (``ground_truth[0].calc.base[0]: not a finite number (nan)``). Other types (bytes, sets
    from in-process callers) are left to the field's own type. Raises ValueError naming the path.
    """
    if _clean(value):
        return value
    raise ValueError(_find_bad(value, root) or f"{root or 'value'}: not finite / not valid Unicode")


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, AfterValidator(valid_text)]
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(valid_text)]


def not_blank(s: str) -> str:
    """``s`` unchanged. Raises ValueError when it is only whitespace (an id nobody can tell apart in a log)."""
    if not s.strip():
        raise ValueError(f"must contain a character other than whitespace, got {s!r}")
    return s


#: an identifier: valid Unicode with at least one character that is not whitespace
Identifier = Annotated[str, Field(min_length=1), AfterValidator(valid_text), AfterValidator(not_blank)]
Json = Annotated[Any, AfterValidator(check_json)]


def json_field(tp: Any, name: str) -> Any:
    """``tp`` whose whole value is checked like :data:`Json` in one pass, errors naming paths under ``name``."""
    return Annotated[tp, AfterValidator(lambda v: check_json(v, name))]


def wire_value(v: float | None) -> float | None:
    """A reward value as it goes on the wire: None for NaN / ±inf / None, ``0.0`` for ``-0.0``, else ``float(v)``."""
    if v is None:
        return None
    v = float(v)
    return v + 0.0 if math.isfinite(v) else None  # -0.0 + 0.0 == +0.0


def sanitize(obj: Any) -> Any:
    """A JSON-safe copy of ``obj`` for error bodies that echo bad input: non-finite floats become their names
    (``"NaN"``, ``"Infinity"``, ``"-Infinity"``), lone surrogates ``\\udXXX`` escapes; containers are copied."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, str):
        return obj if _surrogate_at(obj) is None else obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, dict):
        return {sanitize(k) if isinstance(k, str) else k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    return obj
