"""RVPOTrainer across two processes: `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo), a tiny local
Qwen2, 3 rows per device and 2 steps per generation, so each process holds 6 rows = 1.5 prompt groups of G = 4
and one prompt's completions sit on both processes.

Each process records what its own reward functions returned, the gathered matrix, the advantages it was handed
and those that reached its loss (tests/multiprocess_train.py). Here, for rvpo and gdpo, we check that the
gathered matrix is the two local blocks in process order, that `compute_advantages` run HERE on it, sliced by
process index, is exactly what each process used, and that the logged `rvpo/*` metrics are identical on both
processes and computed from the gathered batch (pass rates recomputed by hand)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.multiprocess_train import G, MAX_STEPS, RISK_END, RISK_START, STEPS_PER_GENERATION, WEIGHTS
from tests.procs import REPO_ROOT, free_port
from trainer.aggregation import compute_advantages

N_PROC = 2
METHODS = ("rvpo", "gdpo")
NAMES = ("length_reward", "digit_reward", "vowel_reward")


def launch_command(model_dir: Path, out_dir: Path) -> list[str]:
    """The command documented in docs/trainer.md ("Several processes"), with a free rendezvous port."""
    accelerate = Path(sys.executable).with_name("accelerate")
    return [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(N_PROC), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            "-m", "tests.multiprocess_train", str(model_dir), str(out_dir), *METHODS]


@pytest.fixture(scope="module")
def records(tiny_model_dir, tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("mp-train")
    env = os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "",
                        "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(launch_command(tiny_model_dir, out), cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {m: [json.loads((out / f"{m}.rank{r}.json").read_text()) for r in range(N_PROC)] for m in METHODS}


def _tensor(rows) -> torch.Tensor:
    return torch.tensor([[math.nan if v is None else v for v in row] for row in rows], dtype=torch.float32)


def _same(a, b) -> bool:
    """Equal, NaN/None equal to NaN/None (metric values)."""
    def norm(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v
    return norm(a) == norm(b)


@pytest.mark.parametrize("method", METHODS)
def test_each_process_uses_its_slice_of_the_gathered_advantages(records, method):
    ranks = records[method]
    assert [r["process_index"] for r in ranks] == [0, 1]
    assert all(r["num_processes"] == N_PROC and r["backend"] == "gloo" for r in ranks)
    n_gen = MAX_STEPS // STEPS_PER_GENERATION
    assert all(len(r["generations"]) == n_gen and len(r["loss_inputs"]) == MAX_STEPS for r in ranks)
    straddled = 0
    for i in range(n_gen):
        gens = [r["generations"][i] for r in ranks]
        step = i * STEPS_PER_GENERATION  # TRL generates every STEPS_PER_GENERATION optimizer steps
        # the linear schedule, by hand: progress step / (S - g), the last generation batch at S - g uses risk_end
        risk = RISK_START + (RISK_END - RISK_START) * step / (MAX_STEPS - STEPS_PER_GENERATION)
        gathered = _tensor(gens[0]["gathered"])
        n_local = len(gens[0]["advantages"])
        assert gathered.shape == (N_PROC * n_local, len(NAMES)) and n_local % G != 0  # groups do straddle
        # the gathered matrix is the same on both processes and is the local blocks in process order
        assert torch.equal(_tensor(gens[1]["gathered"]).isnan(), gathered.isnan())
        assert torch.allclose(_tensor(gens[1]["gathered"]).nan_to_num(), gathered.nan_to_num(), atol=0)
        local = torch.cat([_tensor(g["local"]) for g in gens])
        assert torch.equal(local.isnan(), gathered.isnan()) and torch.allclose(local.nan_to_num(),
                                                                               gathered.nan_to_num(), atol=0)
        prompts = [p for g in gens for p in g["prompts"]]
        groups = [prompts[s:s + G] for s in range(0, len(prompts), G)]
        assert all(len(set(grp)) == 1 for grp in groups)  # TRL's layout: a prompt's G rows contiguous
        straddled += sum(s < n_local < s + G for s in range(0, len(prompts), G))

        expected = compute_advantages(gathered, G, method, risk=risk, weights=WEIGHTS)
        assert expected.abs().max() > 0.1  # a real signal, not all zeros
        for p, g in enumerate(gens):
            used = torch.tensor(g["advantages"])
            assert torch.allclose(used, expected[p * n_local:(p + 1) * n_local], atol=1e-6), (p, used, expected)
            # what reached the loss: TRL shuffles the process's rows and cuts them into STEPS_PER_GENERATION steps
            by_key = {}
            for key, adv in zip(g["keys"], g["advantages"]):
                by_key.setdefault(json.dumps(key), set()).add(round(adv, 6))
            steps = ranks[p]["loss_inputs"][i * STEPS_PER_GENERATION:(i + 1) * STEPS_PER_GENERATION]
            seen = sorted(json.dumps(k) for s in steps for k in s["keys"])
            assert seen == sorted(json.dumps(k) for k in g["keys"])
            for s in steps:
                for key, adv in zip(s["keys"], s["advantages"]):
                    assert round(adv, 6) in by_key[json.dumps(key)]
    assert straddled >= 1


@pytest.mark.parametrize("method", METHODS)
def test_rvpo_metrics_identical_on_both_processes_and_from_the_gathered_batch(records, method):
    ranks = records[method]
    logs = [r["logs"] for r in ranks]
    assert len(logs[0]) == len(logs[1]) == MAX_STEPS // STEPS_PER_GENERATION
    for a, b in zip(*logs):
        assert a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a), (a, b)
    for i, (log, gen) in enumerate(zip(logs[0], ranks[0]["generations"])):
        step = i * STEPS_PER_GENERATION
        assert log["rvpo/risk"] == pytest.approx(RISK_START + (RISK_END - RISK_START) * step
                                                 / (MAX_STEPS - STEPS_PER_GENERATION))
        rows = gen["gathered"]
        for j, name in enumerate(NAMES):  # share of existing values > 0 over BOTH processes' rows
            vals = [row[j] for row in rows if row[j] is not None]
            got = log[f"rvpo/pass_rate/{name}"]
            if not vals:
                assert _same(got, None)
            else:
                assert got == pytest.approx(sum(v > 0 for v in vals) / len(vals), abs=1e-6)
