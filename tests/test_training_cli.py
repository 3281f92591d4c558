"""`rvpo train` end to end at toy size: warm start, RVPOTrainer with in-process rules rewards, log and plot."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.procs import REPO_ROOT


def test_rvpo_train_writes_log_and_reward_curves(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"""
output_dir: {tmp_path / 'run'}
model: {{hidden_size: 16, warm_start: {{base_steps: 4, noisy_steps: 2, batch_size: 8}}}}
task: {{n_functions: 2, n_train_per_fn: 2}}
rewards: {{source: local, channels: [rules/format, rules/arg_values]}}
trl: {{max_steps: 2, num_generations: 2, per_device_train_batch_size: 4, max_completion_length: 8,
      advantage_method: rvpo, risk_schedule: linear, risk_start: 0.5, risk_end: 2.0}}
""")
    res = subprocess.run([sys.executable, "-m", "rvpo.cli", "train", str(cfg)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    steps = [h for h in log["log_history"] if "rvpo/risk" in h]
    assert len(steps) == 2
    # linear schedule 0.5 -> 2.0 over 2 steps, evaluated at progress 0/2 and 1/2: 0.5 and 1.25
    assert [round(h["rvpo/risk"], 6) for h in steps] == [0.5, 1.25]
    for name in ("rules/format", "rules/arg_values"):
        assert f"rewards/{name}/mean" in steps[0] and f"rvpo/pass_rate/{name}" in steps[0]
    assert (tmp_path / "run" / "rewards.png").stat().st_size > 1000
