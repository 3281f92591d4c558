"""RVPOTrainer: real GRPO training on CPU (tiny local Qwen2, no hub), 2 steps, three reward functions (two return
None for some completions); the advantages in the loss are compute_advantages of the logged rewards, the metrics
are in TRL's log, gdpo reproduces TRL's own normalize_then_sum run; and TRL's private API is still what we use."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from tests.trainer_fixtures import digit_reward, length_reward, prompt_dataset, tiny_args
from trainer.aggregation import compute_advantages

G = 4


def odd_none_reward(prompts, completions, **kwargs):
    """Share of vowels; None when the completion has an odd number of characters (a stand-in for 'unscorable')."""
    return [None if len(c) % 2 else sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


FUNCS = [length_reward, digit_reward, odd_none_reward]
NAMES = [f.__name__ for f in FUNCS]


def recording(cls):
    """`cls` plus a record of each generation batch (gathered rewards, logged table, output) and each loss input."""

    class Recording(cls):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.generations, self.loss_inputs = [], []

        def _calculate_rewards(self, *a, **kw):
            rewards = super()._calculate_rewards(*a, **kw)
            self._seen_rewards = rewards.clone()
            return rewards

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            self.generations.append({
                "gathered": self._seen_rewards,
                "logged_rewards": torch.tensor([list(self._logs["rewards"][n]) for n in self.reward_func_names]).T,
                "logged_advantages": torch.tensor(list(self._logs["advantages"])),
                "advantages": out["advantages"].clone(),
                "keys": _row_keys(out),
            })
            return out

        def _compute_loss(self, model, inputs):
            self.loss_inputs.append({"keys": _row_keys(inputs), "advantages": inputs["advantages"].clone()})
            return super()._compute_loss(model, inputs)

    return Recording


def _row_keys(batch):
    """One hashable key per row: its prompt and completion token ids (padding removed)."""
    keys = []
    for pi, pm, ci, cm in zip(batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"],
                              batch["completion_mask"]):
        keys.append((tuple(pi[pm.bool()].tolist()), tuple(ci[cm.bool()].tolist())))
    return keys


def _train(cls, config_cls, model_dir, out_dir, **overrides):
    args = tiny_args(config_cls, out_dir, per_device_train_batch_size=8, num_generations=G, max_steps=2,
                     **overrides)
    trainer = recording(cls)(model=str(model_dir), reward_funcs=FUNCS, args=args, train_dataset=prompt_dataset(4))
    trainer.train()
    return trainer


def test_rvpo_training_uses_compute_advantages(tiny_model_dir, tmp_path):
    from trainer import RVPOConfig, RVPOTrainer

    trainer = _train(RVPOTrainer, RVPOConfig, tiny_model_dir, tmp_path, advantage_method="rvpo",
                     risk_schedule="linear", risk_start=0.5, risk_end=2.0, reward_weights=[1.0, 2.0, 0.5])
    assert len(trainer.generations) == 2 and len(trainer.loss_inputs) == 2
    history = [h for h in trainer.state.log_history if "rvpo/risk" in h]
    assert [h["rvpo/risk"] for h in history] == pytest.approx([0.5, 2.0])  # progress 0/1 and 1/1: start, end
    for gen, loss_in, log, k in zip(trainer.generations, trainer.loss_inputs, history, [0.5, 2.0]):
        rewards = gen["logged_rewards"]
        assert rewards.shape == (8, 3) and torch.isnan(rewards).any()  # None channels arrived as NaN
        assert torch.equal(rewards.isnan(), gen["gathered"].isnan())
        expected = compute_advantages(rewards, G, "rvpo", risk=k, weights=[1.0, 2.0, 0.5])
        assert torch.allclose(gen["advantages"], expected, atol=1e-6)
        assert torch.allclose(gen["logged_advantages"], expected, atol=1e-6)  # completions table fixed
        by_key = dict(zip(gen["keys"], expected.tolist()))  # TRL shuffles rows before the loss
        used = [by_key[key] for key in loss_in["keys"]]
        assert loss_in["advantages"].tolist() == pytest.approx(used, abs=1e-6)
        _check_metrics(log, rewards, expected)


def _check_metrics(log, rewards, advantages):
    """Metrics in TRL's log against values computed by hand from the logged rewards."""
    rows = rewards.tolist()
    assert log["rvpo/advantage_std"] == pytest.approx(advantages.std().item(), abs=1e-5)
    worst = []
    for start in range(0, len(rows), G):
        means = []
        for j in range(3):
            vals = [r[j] for r in rows[start:start + G] if not math.isnan(r[j])]
            if vals:
                means.append(sum(vals) / len(vals))
        if means:
            worst.append(min(means))
    assert log["rvpo/bottleneck_reward"] == pytest.approx(sum(worst) / len(worst), abs=1e-5)
    for j, name in enumerate(NAMES):
        vals = [r[j] for r in rows if not math.isnan(r[j])]
        if not vals:  # channel absent from the whole batch (no digit prompt drawn): NaN, never 0
            assert all(log[k] is None or math.isnan(log[k]) for k in (f"rewards/{name}/mean",
                                                                      f"rvpo/pass_rate/{name}"))
            assert log[f"rvpo/softmin_share/{name}"] == 0.0
            continue
        assert log[f"rewards/{name}/mean"] == pytest.approx(sum(vals) / len(vals), abs=1e-5)  # TRL's own
        assert log[f"rvpo/pass_rate/{name}"] == pytest.approx(sum(v > 0 for v in vals) / len(vals), abs=1e-6)
        assert 0.0 <= log[f"rvpo/softmin_share/{name}"] <= 1.0
    assert sum(log[f"rvpo/softmin_share/{n}"] for n in NAMES) <= 1.0 + 1e-6  # at most one channel holds > 1/2
    assert log["rvpo/disagreement"] >= 0.0


def test_gdpo_reproduces_trl_normalize_then_sum(tiny_model_dir, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    from trainer import RVPOConfig, RVPOTrainer

    ours = _train(RVPOTrainer, RVPOConfig, tiny_model_dir, tmp_path / "rvpo", advantage_method="gdpo")
    trl = _train(GRPOTrainer, GRPOConfig, tiny_model_dir, tmp_path / "trl",
                 multi_objective_aggregation="normalize_then_sum")
    for a, b in zip(ours.generations, trl.generations, strict=True):
        assert a["keys"] == b["keys"]  # same seed, same completions (step 2 also needs the same update)
        assert torch.equal(a["gathered"].isnan(), b["gathered"].isnan())
        assert (a["advantages"] - b["advantages"]).abs().max().item() < 1e-6
    for a, b in zip(ours.loss_inputs, trl.loss_inputs, strict=True):
        assert (a["advantages"] - b["advantages"]).abs().max().item() < 1e-6
    assert any(g["advantages"].abs().max() > 0.1 for g in ours.generations)  # not a vacuous all-zero match


def test_trl_private_api_still_matches():
    """Fails loudly when the TRL internals RVPOTrainer overrides change (see trainer/trainer.py docstring)."""
    from trl import GRPOConfig, GRPOTrainer

    sig = inspect.signature(GRPOTrainer._calculate_rewards)
    assert list(sig.parameters) == ["self", "inputs", "prompts", "completions", "completion_ids_list"]
    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters) == ["self", "inputs"]
    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert src.count("self._calculate_rewards(") == 1
    assert '"advantages": advantages' in src
    assert 'self._logs["advantages"].extend(all_process_advantages.tolist())' in src
    assert "advantages = advantages[process_slice]" in src
    assert "rewards_per_func = gather(rewards_per_func)" in inspect.getsource(GRPOTrainer._calculate_rewards)
    init_src = inspect.getsource(GRPOTrainer.__init__)
    for attr in ("self.reward_weights", "self.reward_func_names", "self.num_generations_eval", "self._logs",
                 "self._metrics"):
        assert attr in init_src, attr
    assert 'inputs["advantages"]' in inspect.getsource(GRPOTrainer._compute_loss)
    assert {"multi_objective_aggregation", "reward_weights", "num_generations"} <= set(GRPOConfig.__dataclass_fields__)


def test_config_errors(tmp_path):
    from trainer import RVPOConfig, RVPOTrainer

    with pytest.raises(ValueError, match="advantage_method"):
        tiny_args(RVPOConfig, tmp_path, advantage_method="mean")
    with pytest.raises(ValueError, match="risk_schedule"):
        tiny_args(RVPOConfig, tmp_path, risk_schedule="step")
    with pytest.raises(ValueError, match="risk"):
        tiny_args(RVPOConfig, tmp_path, risk=0.0)
    from trl import GRPOConfig

    with pytest.raises(TypeError, match="args"):
        RVPOTrainer(model="unused", reward_funcs=FUNCS, args=tiny_args(GRPOConfig, tmp_path))
