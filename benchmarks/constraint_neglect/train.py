"""One RL run of the benchmark: a warm-started policy trained with `RVPOTrainer` under one advantage method,
evaluated on the held-out prompts every few steps; the reward matrices it trained on can be recorded."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, TrainerCallback

from benchmarks.constraint_neglect.evaluate import evaluate
from rvpo.demo.tooltask import CHANNELS

# The six methods compared (fixed before any run). rvpo_k1: constant k = 1; rvpo_linear: the paper's 0.5 -> 2.0.
METHOD_SPECS: dict[str, dict[str, Any]] = {
    "grpo": {"advantage_method": "grpo"},
    "gdpo": {"advantage_method": "gdpo"},
    "rvpo_k1": {"advantage_method": "rvpo", "risk": 1.0, "risk_schedule": "constant"},
    "rvpo_linear": {"advantage_method": "rvpo", "risk_schedule": "linear", "risk_start": 0.5, "risk_end": 2.0},
    "variance_penalty": {"advantage_method": "variance_penalty", "risk": 1.0},
    "min": {"advantage_method": "min"},
}

LOG_KEYS = ("loss", "reward", "reward_std", "rvpo/risk", "rvpo/advantage_std", "rvpo/bottleneck_reward",
            "rvpo/disagreement", "completions/mean_length", "entropy")


class EvalCallback(TrainerCallback):
    """Evaluate on the held-out rows at step 0 and every `every` steps (and at the last step) with
    `evaluate_fn(model, tokenizer, rows, **eval_kwargs) -> dict` (this benchmark's `evaluate` by default)."""

    def __init__(self, model, tokenizer, rows, every: int, eval_kwargs: dict, evaluate_fn=evaluate):
        self.model, self.tokenizer, self.rows, self.every, self.eval_kwargs = model, tokenizer, rows, every, eval_kwargs
        self.evaluate_fn = evaluate_fn
        self.results: list[dict] = []

    def _run(self, step: int):
        t0 = time.perf_counter()
        res = self.evaluate_fn(self.model, self.tokenizer, self.rows, **self.eval_kwargs)
        res["step"] = step
        res["eval_seconds"] = time.perf_counter() - t0
        self.results.append(res)

    def on_train_begin(self, args, state, control, **kwargs):
        self._run(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            if not self.results or self.results[-1]["step"] != state.global_step:
                self._run(state.global_step)


def rl_run(method: str, seed: int, warm_dir: str | Path, train_rows: list[dict], eval_rows: list[dict], *,
           out_dir: str | Path, steps: int, prompts_per_step: int, num_generations: int, learning_rate: float,
           max_completion_length: int, eval_every: int, eval_samples: int, eval_seed: int,
           record_rewards: bool = False) -> dict[str, Any]:
    """Train the warm start in `warm_dir` with `METHOD_SPECS[method]` and return its curves.

    Returns {"method", "seed", "evals": [summary per eval step], "train_log": [per-step TRL/rvpo metrics],
    "reward_batches": [{"step", "rewards": [N][K]}] (when `record_rewards`), "channels", "seconds"}.
    Raises KeyError for an unknown method.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from trainer.config import RVPOConfig
    from trainer.rewards import RulesScorer
    from trainer.trainer import RVPOTrainer

    spec = METHOD_SPECS[method]
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(warm_dir)
    model = Qwen2ForCausalLM.from_pretrained(warm_dir)
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "tools", "ground_truth", "mode")} for r in train_rows])

    holder: dict[str, Any] = {"trainer": None, "batches": []}

    def on_batch(matrix, channels):
        if record_rewards and holder["trainer"] is not None:
            holder["batches"].append({"step": holder["trainer"].state.global_step, "rewards": matrix})

    scorer = RulesScorer(CHANNELS, format="hermes", mode="simple", on_batch=on_batch)
    config = RVPOConfig(
        output_dir=str(out_dir), report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
        disable_tqdm=True, log_completions=False, bf16=False, dataloader_num_workers=0, seed=seed,
        max_steps=steps, per_device_train_batch_size=prompts_per_step * num_generations,
        num_generations=num_generations, max_completion_length=max_completion_length, learning_rate=learning_rate,
        lr_scheduler_type="constant", warmup_steps=0, temperature=1.0, beta=0.0, pass_threshold=1.0 - 1e-6,
        **spec,
    )
    trainer = RVPOTrainer(model=model, args=config, processing_class=tokenizer, train_dataset=data,
                          reward_funcs=scorer.reward_funcs())
    holder["trainer"] = trainer
    trainer.remove_callback(PrinterCallback)  # with disable_tqdm TRL would print every log dict
    callback = EvalCallback(model, tokenizer, eval_rows, eval_every,
                             {"samples_per_prompt": eval_samples, "max_new_tokens": max_completion_length,
                              "seed": eval_seed})
    trainer.add_callback(callback)
    trainer.train()
    train_log = []
    for entry in trainer.state.log_history:
        if "step" not in entry or "loss" not in entry:
            continue
        row = {"step": entry["step"]}
        for key, value in entry.items():
            if key in LOG_KEYS or key.startswith(("rewards/", "rvpo/")):
                row[key] = value if not (isinstance(value, float) and math.isnan(value)) else None
        train_log.append(row)
    return {"method": method, "seed": seed, "evals": callback.results, "train_log": train_log,
            "reward_batches": holder["batches"], "channels": list(CHANNELS), "scoring_passes":
            scorer.n_scoring_passes, "seconds": time.perf_counter() - t0}
