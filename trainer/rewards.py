"""In-process rules reward functions for TRL: one callable per rules channel, one scoring pass per batch.

`rules_reward_funcs(channels)` returns a list of TRL reward functions `f(prompts, completions, **kwargs) ->
list[float | None]` whose `__name__` is the channel name (`rules/format`, ...; see docs/contracts.md). They share
one `RulesScorer`: the first function TRL calls on a generation batch scores every completion with
`services.rules.score_item` (the rules service's library entry point) and the others read the cached results, so
a batch is parsed and checked once however many channels are trained on.

Per-row inputs come from the dataset columns, which TRL passes as keyword lists (one entry per completion):
`tools` (BFCL / OpenAI function docs), `ground_truth` (BFCL possible-answer calls), optional `mode` and
`format`. `tools` and `ground_truth` may be JSON strings: store them that way in a `datasets.Dataset`, whose
Arrow schema would otherwise merge the parameter names of different functions into one struct (adding `None`
for the missing ones, which changes the ground truth).

A channel that could not be computed is `None` (TRL turns it into NaN), never 0; its NaN fraction and reasons
go to TRL's logs (trainer/reward_logging.py) and the reasons are kept in `RulesScorer.last_reasons`: the rules
library's null channels (e.g. `no_ground_truth` for a row whose `ground_truth` is None: its ground-truth channels
are NaN) and items the library rejects (`invalid_item: ...`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from contracts.channels import RULE_CHANNELS, check_rule_channels
from trainer.reward_logging import RewardReporter

log = logging.getLogger(__name__)

#: The rules channels (contracts.channels.RULE_CHANNELS), under the name this module has always exported.
RULES_CHANNELS = RULE_CHANNELS

RewardFunc = Callable[..., list[float | None]]


class RulesScorer:
    """Scores a batch of completions once with `services.rules.score_item` and serves every channel from it.

    Args:
        channels: channel names to serve (subset of `RULES_CHANNELS`, in the order the reward functions get).
        format: completion format sent to the rules library when a row has no `format` column
            ("auto", "openai", "hermes", "toolrl", "python").
        mode: tool-call mode when a row has no `mode` column ("auto", "simple", "multiple", "parallel",
            "parallel_multiple").
        options: rules options (`nested_int_to_float`, `fill_defaults`, `unicode_nfc`); BFCL defaults when None.
        on_batch: called once per scoring pass with the `[N][K]` channel values (NaN for uncomputed) and the
            channel names, e.g. to record reward matrices.

    Raises:
        ValueError: naming the argument, for an unknown or repeated channel.
    """

    def __init__(self, channels: Sequence[str] = RULES_CHANNELS, *, format: str = "auto", mode: str = "auto",
                 options: dict[str, Any] | None = None,
                 on_batch: Callable[[list[list[float]], tuple[str, ...]], None] | None = None):
        try:
            channels = tuple(check_rule_channels(channels))
        except ValueError as exc:
            raise ValueError(f"channels: {exc}") from None
        if not channels:
            raise ValueError("channels: at least one rules channel is needed")
        self.channels = channels
        self.format = format
        self.mode = mode
        self.options = options
        self.on_batch = on_batch
        self.n_scoring_passes = 0
        self.last_values: list[dict[str, float | None]] = []
        self.last_reasons: list[dict[str, str]] = []
        self._key: tuple | None = None
        self._reporter = RewardReporter()

    def reward_funcs(self) -> list[RewardFunc]:
        """One TRL reward function per channel, `__name__` = channel name."""
        return [self._make(ch) for ch in self.channels]

    def score(self, completions: Sequence[Any], **kwargs) -> list[dict[str, float | None]]:
        """Channel values for each completion (None = not computed); rescoring only when the batch changed.

        `kwargs` are TRL's per-row columns: `tools` and `ground_truth` (required columns; a row's ground truth may
        be None), `mode` and `format` (optional). Raises ValueError naming the column when `tools` or
        `ground_truth` is missing or a column has the wrong length.
        """
        n = len(completions)
        cols = {}
        for name in ("tools", "ground_truth", "mode", "format"):
            col = kwargs.get(name)
            if col is None:
                if name in ("tools", "ground_truth"):
                    raise ValueError(f"{name}: the rules reward functions need a '{name}' dataset column")
                continue
            if len(col) != n:
                raise ValueError(f"{name}: {len(col)} rows for {n} completions")
            cols[name] = col
        key = (completions, cols.get("tools"), cols.get("ground_truth"), cols.get("mode"), cols.get("format"))
        if self._key is not None and all(a is b for a, b in zip(key, self._key[0])) and \
                list(completions) == self._key[1]:
            return self.last_values
        values, reasons = [], []
        for i, completion in enumerate(completions):
            v, r = self._score_one(completion, cols["tools"][i], cols["ground_truth"][i],
                                   cols["mode"][i] if "mode" in cols else None,
                                   cols["format"][i] if "format" in cols else None)
            values.append(v)
            reasons.append(r)
        self.last_values, self.last_reasons = values, reasons
        self._key = (key, list(completions))
        self.n_scoring_passes += 1
        if self.on_batch is not None:
            self.on_batch([[math.nan if v[c] is None else v[c] for c in self.channels] for v in values],
                          self.channels)
        return values

    def _score_one(self, completion, tools, ground_truth, mode, fmt) -> tuple[dict, dict]:
        from services.rules import score_item

        item: dict[str, Any] = {
            "id": "trl", "completion": completion_payload(completion), "tools": _load(tools),
            "ground_truth": _load(ground_truth), "mode": mode or self.mode, "format": fmt or self.format,
        }
        if self.options is not None:
            item["options"] = self.options
        try:
            result = score_item(item)
        except (ValueError, TypeError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
            why = f"invalid_item: {type(exc).__name__}: {str(exc)[:300]}"
            log.warning("rules reward: %s", why)
            return {c: None for c in self.channels}, {c: why for c in self.channels}
        channels = _field(result, "channels") or {}
        all_reasons = _field(result, "reasons") or {}
        values, reasons = {}, {}
        for c in self.channels:
            v = channels.get(c)
            values[c] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
            if c in all_reasons:
                reasons[c] = all_reasons[c]
            elif values[c] is None:
                reasons[c] = "not_computed: the rules library returned no value"
        return values, reasons

    def _make(self, channel: str) -> RewardFunc:
        def reward(prompts, completions, **kwargs) -> list[float | None]:
            values = self.score(completions, **kwargs)
            column = [v[channel] for v in values]
            rows = [[v[c] for c in self.channels] for v in values]
            why = [[r.get(c) for c in self.channels] for r in self.last_reasons]
            self._reporter.report(kwargs, values, channel, column, self.channels, rows, why)
            return column

        reward.__name__ = channel
        reward.__qualname__ = channel
        reward.__doc__ = f"Rules channel {channel!r} per completion (None when it could not be computed)."
        return reward


def rules_reward_funcs(channels: Sequence[str] = RULES_CHANNELS, **kwargs) -> list[RewardFunc]:
    """TRL reward functions for `channels` sharing one `RulesScorer(channels, **kwargs)` (see its arguments).

    Use: `GRPOTrainer(..., reward_funcs=rules_reward_funcs(["rules/format", "rules/arg_values"]))`.
    Raises ValueError for an unknown channel.
    """
    return RulesScorer(channels, **kwargs).reward_funcs()


def completion_payload(completion: Any) -> str | dict[str, Any]:
    """The rules-library completion for one TRL completion.

    A plain string stays as it is. A conversational completion (list of messages) gives its last assistant
    message: its text, or, when it carries `tool_calls` (TRL's parsed tool calls, arguments possibly a dict), an
    OpenAI assistant message whose arguments are JSON strings. Raises TypeError for anything else.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list):
        assistant = [m for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        if not assistant:
            return ""
        msg = assistant[-1]
        content = msg.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                fn = call.get("function", call)
                args = fn.get("arguments", {})
                calls.append({"type": "function", "function": {
                    "name": fn.get("name"), "arguments": args if isinstance(args, str) else json.dumps(args)}})
            return {"role": "assistant", "content": content, "tool_calls": calls}
        return content or ""
    raise TypeError(f"completions: expected str or a list of messages, got {type(completion).__name__}")


def _load(value):
    return json.loads(value) if isinstance(value, str) else value


def _field(obj, name):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
