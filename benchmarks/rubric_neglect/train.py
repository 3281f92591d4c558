"""One RL run: a warm-started policy trained with `RVPOTrainer` under one advantage method on the lenient (gameable)
rule judge, evaluated on held-out prompts with the strict judge every few steps; every training batch's reward
matrix is recorded with the slot of its bottleneck and whether each completion used the template hack."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from benchmarks.constraint_neglect.train import EvalCallback
from benchmarks.rubric_neglect.evaluate import evaluate
from benchmarks.rubric_neglect.rewards import RubricScorer
from benchmarks.rubric_neglect.task import HACK, MAX_CRITERIA, words

# The methods compared (fixed before any run).
METHOD_SPECS: dict[str, dict[str, Any]] = {
    "grpo": {"advantage_method": "grpo"},
    "gdpo": {"advantage_method": "gdpo"},
    "gdpo_mean": {"advantage_method": "gdpo_mean"},
    "rvpo": {"advantage_method": "rvpo", "risk_schedule": "linear", "risk_start": 0.5, "risk_end": 2.0},
    "rvpo_k5": {"advantage_method": "rvpo", "risk": 5.0, "risk_schedule": "constant"},
    "rvpo_dropconst": {"advantage_method": "rvpo", "risk_schedule": "linear", "risk_start": 0.5, "risk_end": 2.0,
                       "drop_constant_channels": True},
}


def rl_run(method: str, seed: int, warm_dir: str | Path, train_rows: list[dict], eval_rows: list[dict], *,
           out_dir: str | Path, steps: int, prompts_per_step: int, num_generations: int, learning_rate: float,
           max_completion_length: int, eval_every: int, eval_samples: int, eval_seed: int) -> dict[str, Any]:
    """Train the warm start in `warm_dir` with `METHOD_SPECS[method]`; returns {"method", "seed", "evals",
    "train_log", "batches": [{"step", "rewards" [N][17], "bottleneck_slot" [N], "hack" [N]}], "seconds"}.
    Raises KeyError for an unknown method."""
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback, Qwen2ForCausalLM

    from trainer.config import RVPOConfig
    from trainer.trainer import RVPOTrainer

    spec = METHOD_SPECS[method]
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(warm_dir)
    model = Qwen2ForCausalLM.from_pretrained(warm_dir)
    data = Dataset.from_list([{"prompt": r["prompt"], "rubrics": r["rubrics"]} for r in train_rows])
    holder: dict[str, Any] = {"trainer": None, "batches": []}

    def on_batch(rows, texts, items):
        if holder["trainer"] is None:
            return
        slot = [next(j for j, it in enumerate(its) if it["rule"]["role"] == "rare") for its in items]
        holder["batches"].append({"step": holder["trainer"].state.global_step, "rewards": rows,
                                  "bottleneck_slot": slot, "hack": [bool(words(t)[:1] == [HACK]) for t in texts]})

    scorer = RubricScorer(lenient=True, slots=MAX_CRITERIA, on_batch=on_batch)
    config = RVPOConfig(
        output_dir=str(out_dir), report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
        disable_tqdm=True, log_completions=False, bf16=False, dataloader_num_workers=0, seed=seed,
        max_steps=steps, per_device_train_batch_size=prompts_per_step * num_generations,
        num_generations=num_generations, max_completion_length=max_completion_length, learning_rate=learning_rate,
        lr_scheduler_type="constant", warmup_steps=0, temperature=1.0, beta=0.0, pass_threshold=0.0, **spec)
    trainer = RVPOTrainer(model=model, args=config, processing_class=tokenizer, train_dataset=data,
                          reward_funcs=scorer.reward_funcs())
    holder["trainer"] = trainer
    trainer.remove_callback(PrinterCallback)
    callback = EvalCallback(model, tokenizer, eval_rows, eval_every,
                            {"samples_per_prompt": eval_samples, "max_new_tokens": max_completion_length,
                             "seed": eval_seed}, evaluate_fn=evaluate)
    trainer.add_callback(callback)
    trainer.train()
    keep = ("step", "loss", "entropy", "completions/mean_length", "rvpo/risk", "rvpo/advantage_std",
            "rvpo/disagreement")
    train_log = {k: [] for k in keep}
    for entry in trainer.state.log_history:
        if "step" in entry and "loss" in entry:
            for k in keep:
                v = entry.get(k)
                train_log[k].append(None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    return {"method": method, "seed": seed, "evals": callback.results, "train_log": train_log,
            "batches": holder["batches"], "seconds": time.perf_counter() - t0}
