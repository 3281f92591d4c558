"""A tool-calling task built from the BFCL function docs (used by the demo, `rvpo train` and the
constraint-neglect benchmark): prompts, ground truth in BFCL possible-answer form, and noisy Hermes
demonstrations for the warm start.

Design (fixed before any training run; see benchmarks/constraint_neglect/README.md):
- Functions: every function of `rvpo/data/bfcl_simple_python_sample.jsonl` whose required parameters are all
  `integer` and number 1..3 (first occurrence of each name), in file order, the first `n_functions` of them.
- Prompt: the function's BFCL description, then `Inputs: v1, v2.` (values of the required parameters in the
  order the doc lists them, integers in [value_low, value_high]). The model must recall the function name and
  the parameter names (easy: 8 functions, memorised in the warm start) and copy the values (the bottleneck).
- Ground truth: `[{name: {param: [value]}}]` for the required parameters only (BFCL possible-answer form; an
  optional parameter the model adds is an unexpected argument).
- Completion format: Hermes `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
- Demonstrations (warm start): each argument value is replaced by a different random integer with probability
  `p_wrong_value` (so the bottleneck `rules/arg_values` is satisfied for about `(1 - p)^n` of them), and each
  easy-channel defect in `DEFECTS` is applied independently with its probability (so every easy channel is
  satisfied in >= 90% of them).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rvpo.data import data_file

BFCL_DOCS = data_file("bfcl_simple_python_sample.jsonl")

EASY_CHANNELS = ("rules/format", "rules/function_name", "rules/required_args", "rules/no_unexpected_args",
                 "rules/arg_types", "rules/call_count")
BOTTLENECK = "rules/arg_values"
CHANNELS = EASY_CHANNELS + (BOTTLENECK,)

# Easy-channel defects of the demonstrations and their probabilities (independent draws per demonstration).
DEFECTS = {
    "broken_json": 0.06,   # the JSON object is cut short: nothing parses (every channel fails)
    "wrong_name": 0.05,    # another pool function's name (function name)
    "missing_arg": 0.05,   # one required argument left out (required arguments)
    "extra_arg": 0.05,     # an argument the doc does not declare (no unexpected arguments)
    "string_value": 0.05,  # one value written as a JSON string (argument types)
    "two_calls": 0.04,     # the call written twice (call count)
}


@dataclass(frozen=True)
class Function:
    """One BFCL function doc and the names of its required (integer) parameters, in doc order."""

    name: str
    doc: dict[str, Any]
    params: tuple[str, ...]

    @property
    def description(self) -> str:
        return self.doc.get("description", "").strip()


def load_functions(n_functions: int = 8, path: Path = BFCL_DOCS) -> list[Function]:
    """The task's functions, chosen by the fixed rule in the module docstring.

    Raises ValueError when fewer than `n_functions` functions qualify.
    """
    out: list[Function] = []
    seen: set[str] = set()
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        doc = rec["function"][0]
        props = doc["parameters"]["properties"]
        required = doc["parameters"].get("required", [])
        if doc["name"] in seen or not 1 <= len(required) <= 3:
            continue
        if not all(props[p]["type"] == "integer" for p in required):
            continue
        seen.add(doc["name"])
        ordered = tuple(p for p in props if p in required)
        out.append(Function(doc["name"], doc, ordered))
    if len(out) < n_functions:
        raise ValueError(f"n_functions: only {len(out)} BFCL functions qualify, asked for {n_functions}")
    return out[:n_functions]


def prompt_text(fn: Function, values: tuple[int, ...]) -> str:
    """The user prompt for `fn` called with `values` (one per required parameter, doc order)."""
    return f"{fn.description} Inputs: {json.dumps(dict(zip(fn.params, values, strict=True)))}"


def tool_call(name: str, arguments: dict[str, Any]) -> str:
    """A Hermes tool call block."""
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def make_example(fn: Function, values: tuple[int, ...]) -> dict[str, Any]:
    """One prompt row: the chat prompt, the BFCL `tools` doc and `ground_truth` (JSON strings, so that Arrow does
    not merge the per-function schemas), `mode`, the reference completion and the bookkeeping fields."""
    truth = [{fn.name: {p: [v] for p, v in zip(fn.params, values, strict=True)}}]
    return {
        "prompt": [{"role": "user", "content": prompt_text(fn, values)}],
        "tools": json.dumps([fn.doc]),
        "ground_truth": json.dumps(truth),
        "mode": "simple",
        "reference": tool_call(fn.name, dict(zip(fn.params, values, strict=True))),
        "function": fn.name,
        "values": list(values),
    }


def make_splits(functions: list[Function], n_train_per_fn: int, n_eval_per_fn: int, *, low: int = 1,
                high: int = 99, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train and held-out eval rows: distinct value tuples per function, eval tuples never seen in training.

    The rows are interleaved by function (row i uses function i mod F). Raises ValueError when the value range is
    too small for the number of distinct tuples asked for.
    """
    rng = random.Random(seed)
    train, evaluation = [], []
    per_fn = {}
    for fn in functions:
        need = n_train_per_fn + n_eval_per_fn
        if (high - low + 1) ** len(fn.params) < 2 * need:
            raise ValueError(f"high: value range [{low}, {high}] too small for {need} tuples of {fn.name}")
        tuples: set[tuple[int, ...]] = set()
        while len(tuples) < need:
            tuples.add(tuple(rng.randint(low, high) for _ in fn.params))
        ordered = sorted(tuples)
        rng.shuffle(ordered)
        per_fn[fn.name] = ordered
    for i in range(max(n_train_per_fn, n_eval_per_fn)):
        for fn in functions:
            tuples = per_fn[fn.name]
            if i < n_train_per_fn:
                train.append(make_example(fn, tuples[i]))
            if i < n_eval_per_fn:
                evaluation.append(make_example(fn, tuples[n_train_per_fn + i]))
    return train, evaluation


def demonstration(fn: Function, values: tuple[int, ...], functions: list[Function], rng: random.Random, *,
                  p_wrong_value: float = 0.5, low: int = 1, high: int = 99,
                  defects: dict[str, float] | None = None) -> str:
    """A noisy Hermes completion for the warm start (see the module docstring for the noise model)."""
    defects = DEFECTS if defects is None else defects
    args: dict[str, Any] = {}
    for p, v in zip(fn.params, values, strict=True):
        if rng.random() < p_wrong_value:
            w = v
            while w == v:
                w = rng.randint(low, high)
            v = w
        args[p] = v
    name = fn.name
    hit = {d for d, p in defects.items() if rng.random() < p}
    if "wrong_name" in hit:
        name = rng.choice([f.name for f in functions if f.name != fn.name])
    if "missing_arg" in hit:
        del args[rng.choice(list(args))]
    if "string_value" in hit and args:
        key = rng.choice(list(args))
        args[key] = str(args[key])
    if "extra_arg" in hit:
        args["verbose"] = True
    body = json.dumps({"name": name, "arguments": args})
    if "broken_json" in hit:
        body = body[:-2]
    call = "<tool_call>" + body + "</tool_call>"
    return call + call if "two_calls" in hit else call


def sft_pairs(train_rows: list[dict], functions: list[Function], n: int, seed: int, **kwargs) -> list[tuple[str, str]]:
    """`n` (prompt text, noisy completion) pairs cycling over the train rows, drawn with `seed`."""
    rng = random.Random(seed)
    by_name = {f.name: f for f in functions}
    out = []
    for i in range(n):
        row = train_rows[i % len(train_rows)]
        fn = by_name[row["function"]]
        out.append((row["prompt"][0]["content"],
                    demonstration(fn, tuple(row["values"]), functions, rng, **kwargs)))
    return out


def tokenizer_corpus(functions: list[Function], rows: list[dict]) -> list[str]:
    """Text the tokenizer is trained on: prompts and reference completions (covers every name and digit)."""
    corpus = [r["prompt"][0]["content"] for r in rows] + [r["reference"] for r in rows]
    corpus += [tool_call(f.name, {p: 0 for p in f.params}) for f in functions]
    corpus += ['"verbose": true', "0123456789"]
    return corpus
