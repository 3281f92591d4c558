"""Held-out evaluation: fixed-seed sampling on a fixed prompt set, scored by the rules library.

Sampling (temperature 1, the training distribution) rather than greedy decoding: the warm-start policy puts about
half of its mass on copying each value and spreads the rest over ~100 wrong values, so greedy decoding would
report the copy mode only and hide the very probability the RL stage moves.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rvpo.demo.tooltask import BOTTLENECK, CHANNELS


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[str], *, samples_per_prompt: int, max_new_tokens: int,
                       seed: int, temperature: float = 1.0, batch_size: int = 64) -> list[list[str]]:
    """`samples_per_prompt` completions for each prompt (text, special tokens removed), drawn with a private RNG
    seeded by `seed`, so the same weights give the same completions and the global RNG is left untouched."""
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in prompts]
    flat = [t for t in texts for _ in range(samples_per_prompt)]
    outs: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(flat), batch_size):
            enc = tokenizer(flat[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False)
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            outs += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    tokenizer.padding_side = old_side
    if was_training:
        model.train()
    return [outs[i * samples_per_prompt:(i + 1) * samples_per_prompt] for i in range(len(prompts))]


def score_rows(rows: list[dict[str, Any]], completions: list[list[str]]) -> list[dict[str, float]]:
    """Channel values (NaN when the rules library could not compute one) for every completion, flattened."""
    from services.rules import score_item

    out = []
    for row, comps in zip(rows, completions, strict=True):
        for c in comps:
            res = score_item({"id": "eval", "completion": c, "tools": _json(row["tools"]),
                              "ground_truth": _json(row["ground_truth"]), "mode": row["mode"], "format": "hermes"})
            channels = _get(res, "channels")
            out.append({ch: math.nan if channels.get(ch) is None else float(channels[ch]) for ch in CHANNELS})
    return out


def summarize(scores: list[dict[str, float]], *, pass_threshold: float = 1.0) -> dict[str, float]:
    """Pass rate (value >= threshold; NaN counts as a fail and is counted separately) and mean per channel, the
    all-channels pass rate, the mean reward (mean over completions of the channel mean) and the NaN count."""
    n = len(scores)
    out: dict[str, float] = {"n": n}
    all_pass = [True] * n
    for ch in CHANNELS:
        vals = [s[ch] for s in scores]
        passed = [not math.isnan(v) and v >= pass_threshold - 1e-9 for v in vals]
        all_pass = [a and p for a, p in zip(all_pass, passed)]
        finite = [v for v in vals if not math.isnan(v)]
        out[f"pass/{ch}"] = sum(passed) / n
        out[f"mean/{ch}"] = sum(finite) / len(finite) if finite else math.nan
        out[f"nan/{ch}"] = n - len(finite)
    out["pass/all"] = sum(all_pass) / n
    row_means = [sum(v for v in s.values() if not math.isnan(v)) / max(1, sum(not math.isnan(v) for v in s.values()))
                 for s in scores]
    out["mean_reward"] = sum(row_means) / n
    out["bottleneck_pass"] = out[f"pass/{BOTTLENECK}"]
    return out


def evaluate(model, tokenizer, rows: list[dict[str, Any]], *, samples_per_prompt: int, max_new_tokens: int,
             seed: int) -> dict[str, float]:
    """Sample, score and summarize on the held-out rows."""
    prompts = [r["prompt"][0]["content"] for r in rows]
    comps = sample_completions(model, tokenizer, prompts, samples_per_prompt=samples_per_prompt,
                               max_new_tokens=max_new_tokens, seed=seed)
    return summarize(score_rows(rows, comps))


def _json(value):
    import json

    return json.loads(value) if isinstance(value, str) else value


def _get(obj, key):
    return obj[key] if isinstance(obj, dict) else getattr(obj, key)
