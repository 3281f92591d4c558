"""`rvpo train` end to end at toy size: warm start, RVPOTrainer with in-process rules rewards, log and plot; the
config checked before the warm start; a run whose rewards come back unscored stops with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.procs import REDIS_URL, REPO_ROOT, free_port, unique, uvicorn_server

TOY = """
output_dir: {out}
model: {{hidden_size: 16, warm_start: {{base_steps: 4, noisy_steps: 2, batch_size: 8}}}}
task: {{n_functions: 2, n_train_per_fn: 2, n_eval_per_fn: 1, eval_samples: 2}}
rewards: {rewards}
trl: {{max_steps: 2, num_generations: 2, per_device_train_batch_size: 4, max_completion_length: 8,
      advantage_method: rvpo, risk_schedule: linear, risk_start: 0.5, risk_end: 2.0{trl}}}
"""


def train(tmp_path, rewards: str = "{source: local, channels: [rules/format, rules/arg_values]}", trl: str = "",
          args: tuple[str, ...] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TOY.format(out=tmp_path / "run", rewards=rewards, trl=trl))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RVPO_")}
    return subprocess.run([sys.executable, "-m", "rvpo.cli", "train", str(cfg), *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**env, "COLUMNS": "200"})


def test_rvpo_train_writes_log_and_reward_curves(tmp_path):
    res = train(tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    steps = [h for h in log["log_history"] if "rvpo/risk" in h]
    assert len(steps) == 2
    # linear schedule 0.5 -> 2.0 over 2 steps: progress 0/1 and 1/1, so the last step uses risk_end
    assert [round(h["rvpo/risk"], 6) for h in steps] == [0.5, 2.0]
    for name in ("rules/format", "rules/arg_values"):
        assert f"rewards/{name}/mean" in steps[0] and f"rvpo/pass_rate/{name}" in steps[0]
    held_out = log["summary"]["held_out"]
    assert held_out["prompts"] == 2 and held_out["before"]["n"] == held_out["after"]["n"] == 2 * 2
    assert "held-out pass rates: 2 prompts x 2 samples" in res.stdout
    assert (tmp_path / "run" / "rewards.png").stat().st_size > 1000
    assert "Writing model shards" not in res.stdout + res.stderr


@pytest.mark.parametrize("yaml_fix, message", [
    (("n_train_per_fn: 2", "n_train_per_fn: 2, n_function: 3"),
     "task.n_function: unknown key (did you mean n_functions?)"),
    (("max_steps: 2", "max_step: 2"),
     "trl.max_step: not an RVPOConfig / TRL GRPOConfig argument (did you mean max_steps?)"),
    (("max_steps: 2", "max_steps: two"), "trl.max_steps: Input should be a valid integer"),
    (("n_functions: 2", "n_functions: 2, dataset: rvpo/data/healthbench_sample.jsonl"), "canary"),
    (("n_functions: 2", "n_functions: 2, dataset: my.jsonl"), "task.dataset: `rvpo train` trains on its built-in"),
    # `channels: []` trained on the task's seven default channels, silently
    (("{source: local}", "{source: local, channels: []}"), "rewards.channels: Value error, empty list"),
    # was `task.empty range for randrange() (10, 2, -8)`
    (("n_functions: 2", "n_functions: 2, value_low: 10, value_high: 1"), "value_low (10) must be <= value_high (1)"),
])
def test_config_mistakes_are_named_before_the_warm_start(tmp_path, yaml_fix, message):
    cfg = tmp_path / "train.yaml"
    text = TOY.format(out=tmp_path / "run", rewards="{source: local}", trl="")
    assert yaml_fix[0] in text
    cfg.write_text(text.replace(yaml_fix[0], yaml_fix[1], 1))
    res = subprocess.run([sys.executable, "-m", "rvpo.cli", "train", str(cfg)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 1 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()  # nothing was built


def test_gateway_down_is_caught_before_the_warm_start(tmp_path):
    res = train(tmp_path, rewards=f"{{source: gateway, gateway_url: 'http://127.0.0.1:{free_port()}'}}")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cannot reach the gateway" in res.stderr and "rvpo up" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


def test_unscored_batches_stop_training_with_the_reason(tmp_path):
    """A gateway with no worker behind it: every batch's rewards stay pending, so each is all NaN."""
    env = {"RVPO_REDIS_URL": REDIS_URL, "RVPO_KEY_PREFIX": unique("t-stop"), "RVPO_CELERY_QUEUE": unique("t-stop")}
    with uvicorn_server("services.gateway.app:app", tmp_path, env, ready_path="/readyz") as gateway:
        t0 = time.monotonic()
        res = train(tmp_path, rewards=f"{{source: gateway, gateway_url: '{gateway.url}', timeout_s: 1}}",
                    trl=", max_steps: 5")
    assert res.returncode == 4, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "2 reward batches in a row unscored (100% of the last batch's" in out and "pending x" in out, out
    assert "Traceback" not in out and "TypeError" not in out
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["summary"]["stopped"] and log["summary"]["steps"] == 1  # stopped in the second batch, not at 5
    assert time.monotonic() - t0 < 240


def test_max_steps_option_overrides_the_config(tmp_path):
    res = train(tmp_path, args=("--max-steps", "1"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [h["rvpo/risk"] for h in log["log_history"] if "rvpo/risk" in h] == [0.5]  # one step: the start value


def test_unscored_stop_counts_consecutive_batches():
    """Hand-made reward functions: batch 1 all NaN, batch 2 scored, batches 3 and 4 all NaN -> stop at batch 4."""
    from rvpo.training import TrainingStopped, UnscoredStop

    batches = iter([[None, None], [1.0, None], [None, None], [None, None]])
    current: list = []

    def first(prompts, completions, **kw):
        current[:] = next(batches)
        return list(current)

    def second(prompts, completions, **kw):
        return [None, None]

    funcs = UnscoredStop([first, second], fraction=1.0, batches=2).reward_funcs()
    seen = 0
    with pytest.raises(TrainingStopped, match="2 reward batches in a row unscored"):
        for _ in range(4):
            for f in funcs:
                f(["p", "p"], ["c", "c"])
            seen += 1
    assert seen == 3  # batches 1-3 went through, batch 4 stopped (batch 2 had one value: the count restarted)
    lenient = UnscoredStop([first, second], fraction=0.7, batches=1)
    batches = iter([[1.0, None]])  # 3 of 4 cells NaN = 75% >= 70%
    with pytest.raises(TrainingStopped):
        for f in lenient.reward_funcs():
            f(["p", "p"], ["c", "c"])


def test_reward_panels_share_one_y_scale(tmp_path):
    from rvpo.training import reward_figure

    history = [{"step": s, "rvpo/risk": 0.5 + s, "rvpo/bottleneck_reward": 0.1 * s,
                "rewards/a/mean": 0.9 + 0.01 * s, "rvpo/pass_rate/a": 0.9,
                "rewards/b/mean": 0.1 * s, "rvpo/pass_rate/b": 0.0} for s in range(3)]
    fig = reward_figure(history, ["a", "b"])
    ylims = [ax.get_ylim() for ax in fig.axes[:3]]  # a, b, bottleneck
    assert ylims[0] == ylims[1] == ylims[2] and ylims[0][0] < 0 and ylims[0][1] > 1  # [0, 1] padded
    assert fig.axes[3].get_ylim() != ylims[0]  # k has its own scale
