"""`rvpo train CONFIG.yaml` and the demo's training stage: RVPOTrainer on a tool-calling task.

Config (YAML; every key optional except where noted):

```yaml
output_dir: runs/train            # log.json and rewards.png go here
model:
  path: null                      # a local HF causal-LM dir; null: build a tiny Qwen2 and warm-start it
  hidden_size: 64                 # tiny model only
  num_layers: 2
  warm_start: {base_steps: 150, noisy_steps: 30, batch_size: 32, lr: 0.003, p_wrong_value: 0.5}
task:                             # the synthetic BFCL-doc tool-calling task (rvpo.demo.tooltask)
  n_functions: 4
  n_train_per_fn: 32
  seed: 0
rewards:
  source: gateway                 # gateway (REST -> Celery -> rules) or local (in-process rules library)
  gateway_url: http://127.0.0.1:8000   # default: RVPO_GATEWAY_URL
  channels: [rules/format, rules/function_name, rules/required_args, rules/arg_values]  # default: the task's 7
trl:                              # any RVPOConfig / GRPOConfig field
  advantage_method: rvpo
  risk_schedule: linear
  risk_start: 0.5
  risk_end: 2.0
  max_steps: 8
```
HealthBench rows are evaluation data (they carry a canary) and are refused as a training set.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

TRL_DEFAULTS: dict[str, Any] = {
    "advantage_method": "rvpo", "risk_schedule": "linear", "risk_start": 0.5, "risk_end": 2.0,
    "max_steps": 8, "per_device_train_batch_size": 16, "num_generations": 8, "max_completion_length": 48,
    "learning_rate": 5e-4, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
    "temperature": 1.0, "beta": 0.0, "seed": 0, "disable_tqdm": True,
    "pass_threshold": 1 - 1e-6,  # a rules channel passes only when fully satisfied (they give partial credit)
}


class TrainConfigError(ValueError):
    """The training config is invalid; the message names the key at fault."""


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; raises TrainConfigError for a non-mapping file or a HealthBench training set."""
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(cfg, dict):
        raise TrainConfigError(f"{path}: the config must be a mapping")
    data = str((cfg.get("task") or {}).get("dataset", ""))
    if "healthbench" in data.lower():
        raise TrainConfigError("task.dataset: HealthBench rows carry a canary and are for evaluation only")
    return cfg


def _reward_funcs(rewards_cfg: dict[str, Any]):
    from rvpo.demo.tooltask import CHANNELS

    channels = list(rewards_cfg.get("channels") or CHANNELS)
    source = rewards_cfg.get("source", "gateway")
    if source == "gateway":
        from trainer.reward_client import RemoteRewardClient

        # URL: rewards.gateway_url, else RVPO_GATEWAY_URL; token: RVPO_API_TOKEN (GatewayClientSettings)
        client = RemoteRewardClient(rewards_cfg.get("gateway_url"), rubric_slots=0,
                                    rule_channels=channels, timeout_s=float(rewards_cfg.get("timeout_s", 300)))
        return client.reward_funcs(), client
    if source == "local":
        from trainer.rewards import rules_reward_funcs

        return rules_reward_funcs(channels, format="hermes"), None
    raise TrainConfigError(f"rewards.source: expected 'gateway' or 'local', got {source!r}")


def _model_path(cfg: dict[str, Any], rows: list[dict], functions, out_dir: Path, console: Console) -> str:
    """The policy: ``model.path``, or a tiny Qwen2 warm-started in two supervised stages as in the
    constraint-neglect benchmark (clean demonstrations teach the copy skill, then noisy ones set a mixture
    where the easy channels are mostly right and the argument values often wrong)."""
    model_cfg = cfg.get("model") or {}
    if model_cfg.get("path"):
        return str(model_cfg["path"])
    from rvpo.demo.tooltask import sft_pairs, tokenizer_corpus
    from rvpo.demo.warmstart import build_base, finetune

    ws = {"base_steps": 150, "noisy_steps": 30, "batch_size": 32, "lr": 3e-3, "p_wrong_value": 0.5,
          **(model_cfg.get("warm_start") or {})}
    seed = int((cfg.get("task") or {}).get("seed", 0))
    bs = int(ws["batch_size"])
    with console.status(f"building a tiny Qwen2 and warm-starting it ({ws['base_steps']} + {ws['noisy_steps']} "
                        "supervised steps) ..."):
        clean = sft_pairs(rows, functions, int(ws["base_steps"]) * bs, seed, p_wrong_value=0.0)
        base = build_base(out_dir / "warm-start-base", tokenizer_corpus(functions, rows), clean, seed=seed,
                          hidden_size=int(model_cfg.get("hidden_size", 64)),
                          num_layers=int(model_cfg.get("num_layers", 2)), steps=int(ws["base_steps"]),
                          batch_size=bs, lr=float(ws["lr"]))
        noisy = sft_pairs(rows, functions, int(ws["noisy_steps"]) * bs, seed + 1,
                          p_wrong_value=float(ws["p_wrong_value"]))
        info = finetune(base["path"], out_dir / "warm-start", noisy, seed=seed, steps=int(ws["noisy_steps"]),
                        batch_size=bs, lr=float(ws["lr"]))
    console.print(f"warm start: loss {base['losses'][-1]:.3f} (clean) then {info['losses'][-1]:.3f} (noisy), "
                  f"{base['seconds'] + info['seconds']:.0f} s")
    return info["path"]


def run_training(cfg: dict[str, Any], console: Console | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says; returns a summary with ``log_path`` and ``plot_path``.

    Raises TrainConfigError for a bad key, RewardClientError when the gateway rejects a batch.
    """
    import warnings

    from datasets import Dataset
    from transformers import PrinterCallback
    from transformers.utils import logging as hf_logging

    from trainer import RVPOConfig, RVPOTrainer

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    hf_logging.disable_progress_bar()
    from rvpo.demo.tooltask import load_functions, make_splits

    console = console or Console()
    out_dir = Path(cfg.get("output_dir", "runs/train"))
    out_dir.mkdir(parents=True, exist_ok=True)
    task = cfg.get("task") or {}
    functions = load_functions(int(task.get("n_functions", 4)))
    rows, _ = make_splits(functions, int(task.get("n_train_per_fn", 32)), 0, seed=int(task.get("seed", 0)))
    model_path = _model_path(cfg, rows, functions, out_dir, console)
    reward_funcs, client = _reward_funcs(cfg.get("rewards") or {})
    import torch

    trl_kwargs = {**TRL_DEFAULTS, "use_cpu": not torch.cuda.is_available(), **(cfg.get("trl") or {}),
                  "output_dir": str(out_dir / "trainer")}
    try:
        args = RVPOConfig(**trl_kwargs)
    except TypeError as exc:
        raise TrainConfigError(f"trl: {exc}") from exc
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "tools", "ground_truth", "mode")} for r in rows])
    t0 = time.monotonic()
    trainer = RVPOTrainer(model=model_path, reward_funcs=reward_funcs, args=args, train_dataset=dataset)
    trainer.remove_callback(PrinterCallback)  # the summary table below replaces the per-step dict dumps
    with console.status(f"RVPO training: {args.max_steps} steps, {args.advantage_method}, "
                        f"k schedule {args.risk_schedule} ..."):
        trainer.train()
    if client is not None:
        client.close()
    history = trainer.state.log_history
    names = [getattr(f, "__name__", str(f)) for f in reward_funcs]
    summary = {
        "seconds": round(time.monotonic() - t0, 1), "steps": trainer.state.global_step,
        "advantage_method": args.advantage_method, "risk_schedule": args.risk_schedule,
        "channels": names, "first": _step_metrics(history, names, 0), "last": _step_metrics(history, names, -1),
        "log_path": str(out_dir / "log.json"), "plot_path": str(out_dir / "rewards.png"),
    }
    Path(summary["log_path"]).write_text(json.dumps({"config": cfg, "summary": summary, "log_history": history},
                                                    indent=2, default=str))
    plot_reward_curves(history, names, Path(summary["plot_path"]), title=f"{args.advantage_method} "
                       f"(k {args.risk_schedule})")
    _print_metrics(console, summary)
    return summary


def _step_metrics(history: list[dict], names: list[str], which: int) -> dict[str, float]:
    rows = [h for h in history if "rvpo/risk" in h]
    if not rows:
        return {}
    h = rows[which]
    keys = [f"rewards/{n}/mean" for n in names] + [f"rvpo/pass_rate/{n}" for n in names]
    keys += ["reward", "rvpo/risk", "rvpo/advantage_std", "rvpo/bottleneck_reward"]
    return {k: h[k] for k in keys if k in h}


def _print_metrics(console: Console, summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"RVPO training: first vs last step ({summary['steps']} steps, {summary['seconds']} s)")
    table.add_column("metric")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    for key in summary["last"]:
        table.add_row(key, f"{summary['first'].get(key, float('nan')):.4f}", f"{summary['last'][key]:.4f}")
    console.print(table)


def plot_reward_curves(history: list[dict], names: list[str], path: Path, title: str = "") -> None:
    """One panel per reward channel (mean reward and pass rate per step), plus k and the bottleneck reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if "rvpo/risk" in h]
    steps = [h.get("step", i + 1) for i, h in enumerate(rows)]
    panels = names + ["rvpo"]
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, panels):
        if name == "rvpo":
            for key, label in (("rvpo/risk", "risk k"), ("rvpo/bottleneck_reward", "bottleneck reward")):
                ax.plot(steps, [h.get(key, float("nan")) for h in rows], marker="o", label=label)
        else:
            ax.plot(steps, [h.get(f"rewards/{name}/mean", float("nan")) for h in rows], marker="o", label="mean")
            ax.plot(steps, [h.get(f"rvpo/pass_rate/{name}", float("nan")) for h in rows], marker="x",
                    label="pass rate")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_from_yaml(path: str | Path, console: Console | None = None) -> dict[str, Any]:
    """`rvpo train`: load the YAML config and train."""
    return run_training(load_config(path), console)


def demo_training(gateway_url: str, out_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """The demo's short run: a warm-started tiny model, RVPO with k 0.5 -> 2.0, rewards through the gateway."""
    cfg = {
        "output_dir": str(out_dir / "train"),
        "model": {"hidden_size": 64, "num_layers": 2},
        "task": {"n_functions": 4, "n_train_per_fn": 32, "seed": 0},
        "rewards": {"source": "gateway", "gateway_url": gateway_url},
        "trl": {"max_steps": 6},
    }
    summary = run_training(cfg, console)
    import shutil

    shutil.copy(summary["plot_path"], out_dir / "rewards.png")
    return summary
