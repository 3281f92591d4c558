"""The tiny policy and its warm start, per seed. The only place this benchmark imports the project's tiny-model and
warm-start helpers (`rvpo.demo.tinymodel`, `rvpo.demo.warmstart`): if they move, change the two imports below.

Stage 1 (`build_base`, once per seed, shared by that seed's two arms): a tiny Qwen2 (random init from the seed)
with a word-level tokenizer, trained on ideal answers (`CLEAN`), which teaches copying the prompt's words.
Stage 2 (`warm_start`, once per seed and arm): a short pass on the arm's demonstration mixture (`ARMS`), which
sets the rates RL starts from. `check_targets` compares the sampled held-out rates with the pre-registered
`TARGETS` (+-`TOLERANCE`) before any method is compared.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rvpo.demo.tinymodel import build_tiny_qwen2
from rvpo.demo.warmstart import finetune

from benchmarks.rubric_neglect import task

VOCAB_SIZE = 1024  # enough merges for every task word to be one token
CLEAN = task.Mixture(p_hack=0.0, p_start=1.0, p_mention=1.0, p_rare=1.0, p_avoid=0.0, p_long=0.0, p_marker=1.0)
ARMS: dict[str, task.Mixture] = {
    # bottleneck (rare word) mostly met, to be protected while the rest improves
    "protect": task.Mixture(p_hack=0.08, p_start=0.9, p_mention=0.95, p_rare=0.9, p_avoid=0.15, p_long=0.1,
                            p_marker=0.95),
    # bottleneck rare, to be learned from rare successes; everything else as in protect
    "learn": task.Mixture(p_hack=0.08, p_start=0.9, p_mention=0.95, p_rare=0.2, p_avoid=0.15, p_long=0.1,
                          p_marker=0.95),
}
# Pre-registered warm-start rates on the held-out evaluation (sampled at temperature 1, fixed seed), fixed before
# any method was compared; every (seed, arm) warm start must be within TOLERANCE of each.
# (The mention rate is 0.70, not 0.80: the stage-2 noise costs the tiny model copy accuracy, see README.md.)
TARGETS: dict[str, dict[str, float]] = {
    "protect": {"bottleneck_pass": 0.75, "fragile_pass": 0.80, "mention_pass": 0.70},
    "learn": {"bottleneck_pass": 0.10, "fragile_pass": 0.80, "mention_pass": 0.70},
}
TOLERANCE = 0.1


def build_base(out_dir: str | Path, train_rows: list[dict[str, Any]], *, seed: int, hidden_size: int,
               num_layers: int, steps: int, batch_size: int, lr: float) -> dict[str, Any]:
    """Stage 1 for one seed: tokenizer + random tiny Qwen2 (init seed `seed`), `steps` supervised steps on ideal
    answers of `train_rows`. Returns {"path", "seconds", "final_loss"}."""
    t0 = time.perf_counter()
    build_tiny_qwen2(out_dir, corpus=task.tokenizer_corpus(), seed=seed, hidden_size=hidden_size,
                     num_layers=num_layers, vocab_size=VOCAB_SIZE)
    pairs = task.sft_pairs(train_rows, CLEAN, steps * batch_size, seed=seed)
    info = finetune(out_dir, out_dir, pairs, seed=seed, steps=steps, batch_size=batch_size, lr=lr)
    return {"path": str(out_dir), "seconds": time.perf_counter() - t0, "final_loss": info["losses"][-1]}


def warm_start(base_dir: str | Path, out_dir: str | Path, train_rows: list[dict[str, Any]], arm: str, *, seed: int,
               steps: int, batch_size: int, lr: float) -> dict[str, Any]:
    """Stage 2 for one (seed, arm): `steps` supervised steps on `ARMS[arm]` demonstrations (drawn with `seed`).
    Returns {"path", "seconds", "final_loss", "demo": metrics of the first 512 demonstrations}.
    Raises KeyError for an unknown arm."""
    from benchmarks.rubric_neglect.evaluate import summarize

    mix = ARMS[arm]
    t0 = time.perf_counter()
    pairs = task.sft_pairs(train_rows, mix, steps * batch_size, seed=10_000 + seed)
    info = finetune(base_dir, out_dir, pairs, seed=seed, steps=steps, batch_size=batch_size, lr=lr)
    by_prompt = {task.spec_of(r).prompt(): r for r in train_rows}
    demo = summarize([(json.loads(by_prompt[p]["rubrics"]), c) for p, c in pairs[:512]])
    return {"path": str(out_dir), "seconds": time.perf_counter() - t0, "final_loss": info["losses"][-1],
            "demo": demo}


def check_targets(arm: str, measured: dict[str, float]) -> dict[str, Any]:
    """{"ok", "checks": {metric: {"target", "measured", "ok"}}} for one warm start's held-out metrics."""
    checks = {m: {"target": t, "measured": measured[m], "ok": abs(measured[m] - t) <= TOLERANCE + 1e-12}
              for m, t in TARGETS[arm].items()}
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}
