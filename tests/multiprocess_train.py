"""One short `RVPOTrainer` run per advantage method, under `accelerate launch` with 2 processes (CPU, gloo).

Run by tests/test_trainer_multiprocess.py as

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        --main_process_port PORT -m tests.multiprocess_train MODEL_DIR OUT_DIR rvpo gdpo

Each process writes ``OUT_DIR/<method>.rank<process_index>.json`` with, per generation batch: the rewards its
own reward functions returned (``local``, before TRL gathers them), the gathered ``[N_global, K]`` matrix TRL
aggregates, its prompts, the ``[N_local]`` advantages RVPOTrainer handed it, the (row key, advantage) pairs that
reached its loss, and its ``rvpo/*`` log entries. The test checks them against ``compute_advantages`` itself.
Nothing here asserts: the process records, the test judges.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tests.test_rvpo_trainer import recording
from tests.trainer_fixtures import digit_reward, length_reward, prompt_dataset, tiny_args, vowel_reward

G = 4                  # completions per prompt
PER_DEVICE = 3         # rows per loss step on each process
STEPS_PER_GENERATION = 2  # one generation feeds 2 steps: each process holds 6 rows = 1.5 prompts
MAX_STEPS = 4          # 2 generation batches (risk 0.5 and 2.0 on the linear schedule below)
WEIGHTS = [1.0, 2.0, 0.5]
RISK_START, RISK_END = 0.5, 2.0


def _nan_to_none(rows):
    return [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows]


def _recorded(func, sink: list):
    """``func`` as a TRL reward function that also appends what it returned on this process to ``sink``."""
    def reward(prompts, completions, **kwargs):
        out = func(prompts, completions, **kwargs)
        sink.append({"prompts": list(prompts), "values": [math.nan if v is None else float(v) for v in out]})
        return out

    reward.__name__ = func.__name__
    return reward


def run(model_dir: str, out_dir: Path, method: str) -> None:
    import torch

    from trainer import RVPOConfig, RVPOTrainer

    calls: list[list[dict]] = [[], [], []]
    funcs = [_recorded(f, calls[j]) for j, f in enumerate((length_reward, digit_reward, vowel_reward))]

    class Recording(recording(RVPOTrainer)):  # + what this process's own reward functions returned
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            self.generations[-1]["local"] = torch.tensor([calls[j][-1]["values"] for j in range(3)]).T
            self.generations[-1]["prompts"] = calls[0][-1]["prompts"]
            return out

    args = tiny_args(RVPOConfig, out_dir / f"run-{method}", per_device_train_batch_size=PER_DEVICE,
                     steps_per_generation=STEPS_PER_GENERATION, num_generations=G, max_steps=MAX_STEPS,
                     advantage_method=method, risk_schedule="linear", risk_start=RISK_START, risk_end=RISK_END,
                     reward_weights=WEIGHTS)
    trainer = Recording(model=model_dir, reward_funcs=funcs, args=args, train_dataset=prompt_dataset(6))
    trainer.train()
    acc = trainer.accelerator
    generations = [{"prompts": g["prompts"], "local": _nan_to_none(g["local"].tolist()),
                    "gathered": _nan_to_none(g["gathered"].tolist()), "advantages": g["advantages"].tolist(),
                    "keys": g["keys"]} for g in trainer.generations]
    loss_inputs = [{"keys": li["keys"], "advantages": li["advantages"].tolist()} for li in trainer.loss_inputs]
    record = {"process_index": acc.process_index, "num_processes": acc.num_processes,
              "backend": str(getattr(acc.state, "backend", None)), "generations": generations,
              "loss_inputs": loss_inputs,
              "logs": [{k: v for k, v in h.items() if k.startswith("rvpo/")} | {"step": h.get("step")}
                       for h in trainer.state.log_history if "rvpo/risk" in h]}
    (out_dir / f"{method}.rank{acc.process_index}.json").write_text(json.dumps(record))
    acc.wait_for_everyone()


def main(argv: list[str]) -> None:
    model_dir, out_dir, *methods = argv
    for method in methods:
        run(model_dir, Path(out_dir), method)


if __name__ == "__main__":
    main(sys.argv[1:])
