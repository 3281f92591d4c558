"""Render normalized tool calls in each supported completion format (for SFT targets, tests and benchmarks).

The inverse of :mod:`services.rules.parsing`: ``parse_completion(render(calls, fmt), fmt).calls == calls``
for JSON-representable arguments (the ``python`` format keeps tuples as tuples).
"""

from __future__ import annotations

import json
from typing import Any

from services.rules.bfcl import reference_calls


def calls_from_ground_truth(ground_truth: list[dict[str, dict[str, list]]]) -> list[dict[str, Any]]:
    """BFCL possible answers -> the reference calls ``[{"name", "arguments"}]`` (first allowed value of every
    parameter, ``""``-first parameters omitted; see :func:`services.rules.bfcl.reference_calls`)."""
    return [{"name": name, "arguments": args} for name, args in reference_calls(ground_truth)]


def render(calls: list[dict[str, Any]], fmt: str, think: str = "I will call the tools.") -> Any:
    """``calls`` (``[{"name", "arguments"}]``) as a completion in ``fmt``: ``python`` text
    ``[f(a=1), g(b='x')]``, ``hermes`` text with one ``<tool_call>`` block per call, ``toolrl`` text
    (``<think>`` + one ``<tool_call>`` block, one ``{"name", "parameters"}`` per line), or an ``openai``
    assistant message dict. Raises ``ValueError`` for another ``fmt``."""
    if fmt == "python":
        parts = [f"{c['name']}({', '.join(f'{k}={v!r}' for k, v in c['arguments'].items())})" for c in calls]
        return "[" + ", ".join(parts) + "]"
    if fmt == "hermes":
        return "\n".join(
            "<tool_call>\n" + json.dumps({"name": c["name"], "arguments": c["arguments"]}) + "\n</tool_call>" for c in calls
        )
    if fmt == "toolrl":
        lines = "\n".join(json.dumps({"name": c["name"], "parameters": c["arguments"]}) for c in calls)
        return f"<think>{think}</think>\n<tool_call>\n{lines}\n</tool_call>"
    if fmt == "openai":
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": f"call_{i}", "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                for i, c in enumerate(calls)
            ],
        }
    raise ValueError(f"unknown format {fmt!r}")
