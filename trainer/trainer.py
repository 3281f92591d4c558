"""`RVPOTrainer`: TRL's GRPOTrainer with the advantages replaced by `compute_advantages`.

TRL (pinned to 1.16.x in pyproject.toml) computes advantages inline in the private
`GRPOTrainer._generate_and_score_completions`. We rely on three private facts, all checked by
tests/test_rvpo_trainer.py::test_trl_private_api_still_matches:
1. `_generate_and_score_completions(inputs)` calls `_calculate_rewards(inputs, prompts, completions,
   completion_ids_list)` exactly once, which returns the rewards gathered over all processes, `[N_global, K]`,
   rows of a prompt contiguous, None -> NaN;
2. it returns a dict whose `"advantages"` is this process's `[N_local]` slice
   `[process_index * N_local, (process_index + 1) * N_local)` of the global advantages;
3. it appends the `N_global` global advantages to `self._logs["advantages"]` (the completions table).
TRL's reward calling, gathering, loss, logging and everything else are kept; TRL still computes its own
advantages (a few vector ops) and we overwrite them, so aggregation always happens on the gathered batch,
never inside a reward function (one prompt's completions can sit on different processes).
tests/test_trainer_multiprocess.py runs this under `accelerate launch` with 2 processes whose prompt groups
straddle the process boundary and checks facts 1-2 and that every process logs the same `rvpo/*` metrics.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer

from trainer.aggregation import compute_advantages
from trainer.config import RVPOConfig
from trainer.metrics import rvpo_metrics


class RVPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages come from `trainer.aggregation.compute_advantages`.

    Takes the same arguments as `trl.GRPOTrainer` (reward_funcs: any TRL reward functions, e.g. one callable per
    reward channel), but `args` must be an `RVPOConfig`. Logs `rvpo/*` metrics (see `trainer.metrics`).

    Raises:
        TypeError: args is not an RVPOConfig.
        RuntimeError: at the first batch, if the installed TRL no longer matches the private contract above.
    """

    _tag_names = ["trl", "grpo", "rvpo"]

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, RVPOConfig):
            raise TypeError(f"args: RVPOTrainer needs an RVPOConfig, got {type(config).__name__}")
        super().__init__(*args, **kwargs)
        self.risk_schedule = self.args.make_risk_schedule()
        self._rvpo_rewards: torch.Tensor | None = None

    def current_risk(self) -> float:
        """k for the generation batch about to be scored: the schedule at progress `s / (S - g)` for step
        s = `global_step` (0-based) of S = `max_steps`, where TRL generates every g = `steps_per_generation *
        num_iterations` steps (usually g = 1: progress `s / (S - 1)`). So the first step uses the schedule's start
        value and the last its end value (linear 0.5 -> 2.0 over 6 steps: 0.5, 0.8, 1.1, 1.4, 1.7, 2.0). A run with
        a single generation batch (or an unknown length) uses the start value."""
        every = (getattr(self.args, "steps_per_generation", 1) or 1) * (getattr(self.args, "num_iterations", 1) or 1)
        last = (self.state.max_steps or 0) - every  # the step at which the last generation batch is scored
        progress = min(1.0, self.state.global_step / last) if last > 0 else 0.0
        return self.risk_schedule(progress)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rvpo_rewards = rewards  # gathered [N_global, K]
        return rewards

    def _generate_and_score_completions(self, inputs):
        self._rvpo_rewards = None
        output = super()._generate_and_score_completions(inputs)
        rewards, self._rvpo_rewards = self._rvpo_rewards, None
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        local = output.get("advantages")
        n_proc = self.accelerator.num_processes
        if rewards is None or local is None or rewards.dim() != 2 or local.dim() != 1 \
                or rewards.shape != (local.shape[0] * n_proc, len(self.reward_funcs)):
            raise RuntimeError(
                "RVPOTrainer: TRL's private GRPOTrainer internals changed (expected _calculate_rewards -> "
                f"[N_global, K] and output['advantages'] [N_local]; got rewards "
                f"{None if rewards is None else tuple(rewards.shape)}, advantages "
                f"{None if local is None else tuple(local.shape)}); pin trl to the range in pyproject.toml")

        risk = self.current_risk()
        weights = self.reward_weights.to(rewards.device)
        advantages = compute_advantages(rewards, num_generations, self.args.advantage_method, risk=risk,
                                        beta=self.args.risk_beta, weights=weights, eps=self.args.advantage_eps,
                                        drop_constant_channels=self.args.drop_constant_channels)
        start = self.accelerator.process_index * local.shape[0]
        output["advantages"] = advantages[start:start + local.shape[0]].to(local.dtype)

        logged = self._logs["advantages"]  # completions table: show the advantages actually used
        n = min(len(logged), advantages.shape[0])
        for i, value in enumerate(advantages[advantages.shape[0] - n:].tolist()):
            logged[len(logged) - n + i] = value

        metrics = rvpo_metrics(rewards, num_generations, risk, self.reward_func_names, weights=weights,
                               advantages=advantages, pass_threshold=self.args.pass_threshold,
                               eps=self.args.advantage_eps)
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)
        if mode == "train":
            self.risk_schedule.observe(metrics["rvpo/disagreement"])
        return output
