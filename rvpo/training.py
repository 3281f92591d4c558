"""`rvpo train CONFIG.yaml` and the demo's training stage: RVPOTrainer on the built-in tool-calling task.

The config (rvpo/train_config.py: every key, type and default) is checked, the TRL arguments built and the
gateway probed before anything slow starts. Then: warm start (unless ``model.path``), held-out evaluation,
RVPO training with rewards from the gateway (or the in-process rules library), held-out evaluation again. A run
whose reward batches come back unscored (``rewards.stop_after_unscored_batches`` in a row, each with at least
``rewards.stop_unscored_fraction`` of its cells NaN) stops with the reason instead of training on NaN.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from rvpo.train_config import TrainConfigError, TrainFile, load_config, parse_config

__all__ = ["TrainConfigError", "TrainingStopped", "UnscoredStop", "load_config", "run_training", "run_from_yaml",
           "demo_training", "plot_reward_curves", "reward_figure"]

TRL_DEFAULTS: dict[str, Any] = {
    "advantage_method": "rvpo", "risk_schedule": "linear", "risk_start": 0.5, "risk_end": 2.0,
    "max_steps": 8, "per_device_train_batch_size": 16, "num_generations": 8, "max_completion_length": 48,
    "learning_rate": 5e-4, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
    "temperature": 1.0, "beta": 0.0, "seed": 0, "disable_tqdm": True,
    "pass_threshold": 1 - 1e-6,  # a rules channel passes only when fully satisfied (they give partial credit)
}
DEMO_STEPS = 40  # the demo's RL steps: enough for the held-out mean reward to move (see rvpo/demo/verdicts.py)
EVAL_SEED = 1234  # fixed sampling seed of the held-out evaluation: before and after see the same draws


class TrainingStopped(RuntimeError):
    """Training stopped early because its rewards came back unscored; the message says how and why."""


class UnscoredStop:
    """Wraps TRL reward functions (one per channel, called in order on each generation batch) and raises
    :class:`TrainingStopped` once ``batches`` batches in a row had at least ``fraction`` of their
    ``[N, K]`` reward cells NaN (None), before TRL turns them into advantages. ``batches`` = 0 never stops.
    ``reasons()`` gives the reason kinds of the last batch's NaN cells, for the message."""

    def __init__(self, funcs: list[Callable], *, fraction: float = 1.0, batches: int = 2,
                 reasons: Callable[[], Counter] | None = None):
        self.funcs, self.fraction, self.batches, self.reasons = list(funcs), fraction, batches, reasons
        self.in_a_row = 0
        self._nan = self._cells = 0

    def reward_funcs(self) -> list[Callable]:
        return [self._wrap(k, f) for k, f in enumerate(self.funcs)]

    def _wrap(self, k: int, func: Callable) -> Callable:
        def reward(prompts, completions, **kwargs):
            values = func(prompts, completions, **kwargs)
            if k == 0:
                self._nan = self._cells = 0
            self._nan += sum(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)
            self._cells += len(values)
            if k == len(self.funcs) - 1:
                self._end_of_batch()
            return values

        reward.__name__ = reward.__qualname__ = getattr(func, "__name__", f"reward_{k}")
        return reward

    def _end_of_batch(self) -> None:
        share = self._nan / max(self._cells, 1)
        self.in_a_row = self.in_a_row + 1 if share >= self.fraction else 0
        if self.batches and self.in_a_row >= self.batches:
            why = self.reasons() if self.reasons else Counter()
            kinds = ", ".join(f"{k} x{n}" for k, n in why.most_common(4)) or "no reasons reported"
            raise TrainingStopped(f"{self.in_a_row} reward batches in a row unscored ({share:.0%} of the last "
                                  f"batch's {self._cells} reward cells NaN: {kinds}); stopped instead of training "
                                  "on NaN")


def _reward_source(cfg: TrainFile):
    """(reward functions, gateway client or None, reasons of the last batch)."""
    from contracts.results import reason_kind
    from rvpo.demo.tooltask import CHANNELS

    r = cfg.rewards
    channels = list(r.channels or CHANNELS)
    if r.source == "gateway":
        from trainer.reward_client import RemoteRewardClient

        # URL: rewards.gateway_url, else RVPO_GATEWAY_URL; token: RVPO_API_TOKEN (GatewayClientSettings)
        client = RemoteRewardClient(r.gateway_url, rubric_slots=0, rule_channels=channels, timeout_s=r.timeout_s)

        def reasons() -> Counter:
            last = client.last
            return Counter(reason_kind(w) for row in (last.reasons if last else []) for w in row if w)

        return client.reward_funcs(), client, reasons
    from trainer.rewards import RulesScorer

    scorer = RulesScorer(channels, format="hermes")

    def local_reasons() -> Counter:
        return Counter(reason_kind(w) for row in scorer.last_reasons for w in row.values() if w)

    return scorer.reward_funcs(), None, local_reasons


def _quiet_transformers() -> None:
    """No per-step dict dumps, shard-writing bars or FutureWarnings in the console (the tables replace them)."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _warm_start(cfg: TrainFile, rows: list[dict], functions, out_dir: Path, console: Console) -> str:
    """The policy: ``model.path``, or a tiny Qwen2 warm-started in two supervised stages as in the
    constraint-neglect benchmark (clean demonstrations teach the copy skill, then noisy ones set a mixture
    where the easy channels are mostly right and the argument values often wrong)."""
    if cfg.model.path:
        return cfg.model.path
    from rvpo.demo.tooltask import sft_pairs, tokenizer_corpus
    from rvpo.demo.warmstart import build_base, finetune

    ws, seed, t = cfg.model.warm_start, cfg.task.seed, cfg.task
    with console.status(f"building a tiny Qwen2 and warm-starting it ({ws.base_steps} + {ws.noisy_steps} "
                        "supervised steps) ..."):
        clean = sft_pairs(rows, functions, ws.base_steps * ws.batch_size, seed, p_wrong_value=0.0,
                          low=t.value_low, high=t.value_high)
        base = build_base(out_dir / "warm-start-base", tokenizer_corpus(functions, rows), clean, seed=seed,
                          hidden_size=cfg.model.hidden_size, num_layers=cfg.model.num_layers,
                          steps=ws.base_steps, batch_size=ws.batch_size, lr=ws.lr)
        noisy = sft_pairs(rows, functions, ws.noisy_steps * ws.batch_size, seed + 1, p_wrong_value=ws.p_wrong_value,
                          low=t.value_low, high=t.value_high)
        info = finetune(base["path"], out_dir / "warm-start", noisy, seed=seed, steps=ws.noisy_steps,
                        batch_size=ws.batch_size, lr=ws.lr)
    losses = base["losses"][-1:] + info["losses"][-1:]
    console.print(f"warm start: {ws.base_steps} clean + {ws.noisy_steps} noisy supervised steps, final loss "
                  f"{' / '.join(f'{x:.3f}' for x in losses) or 'n/a'}, {base['seconds'] + info['seconds']:.0f} s")
    return info["path"]


def _held_out(model, tokenizer, rows: list[dict], cfg: TrainFile, max_new_tokens: int) -> dict[str, float]:
    from rvpo.demo.heldout import evaluate

    res = evaluate(model, tokenizer, rows, samples_per_prompt=cfg.task.eval_samples, max_new_tokens=max_new_tokens,
                   seed=EVAL_SEED)
    return {k: v for k, v in res.items() if k.startswith("pass/") or k in ("mean_reward", "n")}


def run_training(cfg: TrainFile | dict[str, Any], console: Console | None = None,
                 max_steps: int | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says (``max_steps`` overrides ``trl.max_steps``); returns a summary with ``log_path``,
    ``plot_path``, ``held_out`` (``before`` / ``after`` pass rates on ``n`` held-out completions) and
    ``stopped`` (None, or why training stopped early).

    Raises TrainConfigError for a bad key (before anything is built), CLIError when the gateway cannot be
    reached, RewardClientError when it rejects a batch.
    """
    console = console or Console()
    cfg = cfg if isinstance(cfg, TrainFile) else parse_config(cfg)
    _quiet_transformers()
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback

    from rvpo.demo.tooltask import load_functions, make_splits
    from trainer import RVPOConfig, RVPOTrainer

    out_dir = Path(cfg.output_dir)
    trl_kwargs = {**TRL_DEFAULTS, "use_cpu": not torch.cuda.is_available(), **cfg.trl,
                  "output_dir": str(out_dir / "trainer")}
    if max_steps is not None:
        trl_kwargs["max_steps"] = max_steps
    try:
        args = RVPOConfig(**trl_kwargs)
    except (TypeError, ValueError) as exc:
        raise TrainConfigError(f"trl: {exc}") from None
    try:
        functions = load_functions(cfg.task.n_functions)
        rows, held_out_rows = make_splits(functions, cfg.task.n_train_per_fn, cfg.task.n_eval_per_fn,
                                          low=cfg.task.value_low, high=cfg.task.value_high, seed=cfg.task.seed)
    except ValueError as exc:
        raise TrainConfigError(f"task.{exc}") from None
    if cfg.rewards.source == "gateway":
        from rvpo.preflight import check_gateway

        check_gateway(cfg.rewards.gateway_url)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = _warm_start(cfg, rows, functions, out_dir, console)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    reward_funcs, client, reasons = _reward_source(cfg)
    guard = UnscoredStop(reward_funcs, fraction=cfg.rewards.stop_unscored_fraction,
                         batches=cfg.rewards.stop_after_unscored_batches, reasons=reasons)
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "tools", "ground_truth", "mode")} for r in rows])
    t0 = time.monotonic()
    trainer = RVPOTrainer(model=model_path, reward_funcs=guard.reward_funcs(), args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # the summary table below replaces the per-step dict dumps
    held_out: dict[str, Any] = {}
    if held_out_rows:
        with console.status(f"held-out evaluation: {len(held_out_rows)} prompts x {cfg.task.eval_samples} "
                            "samples ..."):
            held_out["before"] = _held_out(trainer.model, tokenizer, held_out_rows, cfg, args.max_completion_length)
    stopped = None
    try:
        with console.status(f"RVPO training: {args.max_steps} steps, {args.advantage_method}, "
                            f"k schedule {args.risk_schedule}, rewards from {cfg.rewards.source} ..."):
            trainer.train()
    except TrainingStopped as exc:
        stopped = str(exc)
    finally:
        if client is not None:
            client.close()
    if held_out_rows and stopped is None:
        with console.status("held-out evaluation after training ..."):
            held_out["after"] = _held_out(trainer.model, tokenizer, held_out_rows, cfg, args.max_completion_length)
        held_out["prompts"], held_out["samples_per_prompt"] = len(held_out_rows), cfg.task.eval_samples
    history = trainer.state.log_history
    names = [getattr(f, "__name__", str(f)) for f in reward_funcs]
    summary = {
        "seconds": round(time.monotonic() - t0, 1), "steps": trainer.state.global_step, "max_steps": args.max_steps,
        "advantage_method": args.advantage_method, "risk_schedule": args.risk_schedule, "channels": names,
        "first": _step_metrics(history, names, 0), "last": _step_metrics(history, names, -1),
        "held_out": held_out, "stopped": stopped,
        "log_path": str(out_dir / "log.json"), "plot_path": str(out_dir / "rewards.png"),
    }
    from rvpo.records import json_safe

    Path(summary["log_path"]).write_text(json.dumps(json_safe({"config": cfg.model_dump(), "summary": summary,
                                                               "log_history": history}),
                                                    indent=2, default=str, allow_nan=False))
    plot_reward_curves(history, names, Path(summary["plot_path"]),
                       title=f"{args.advantage_method} (k {args.risk_schedule})", held_out=held_out)
    _print_metrics(console, summary)
    return summary


def _step_metrics(history: list[dict], names: list[str], which: int) -> dict[str, float | None]:
    """Means over the first (``which`` = 0) or last (-1) few training steps (up to 5, at most half the run: one
    batch of a few prompts is noise); None where no step has a value."""
    rows = [h for h in history if "rvpo/risk" in h]
    if not rows:
        return {}
    w = max(1, min(5, len(rows) // 2))
    window = rows[:w] if which == 0 else rows[-w:]
    keys = [f"rvpo/pass_rate/{n}" for n in names] + ["reward", "rvpo/risk", "rvpo/bottleneck_reward"]
    out: dict[str, float | None] = {}
    for k in keys:
        values = [h[k] for h in window if isinstance(h.get(k), (int, float)) and not math.isnan(h[k])]
        if any(k in h for h in window):
            out[k] = sum(values) / len(values) if values else None
    return out


def _fmt(value: Any) -> str:
    """A metric for a table: 3 decimals, ``n/a`` when missing (None / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def held_out_line(held_out: dict[str, Any], channel: str) -> str:
    """``arg_values pass 0.07 -> 0.19 on 32 held-out prompts x 4 samples`` for one channel (``all``, a channel
    name, or ``mean_reward``)."""
    key = channel if channel == "mean_reward" else f"pass/{channel}"
    before, after = held_out["before"].get(key), held_out["after"].get(key)
    label = channel if channel == "mean_reward" else f"{channel.split('/')[-1]} pass rate"
    return (f"{label} {_fmt(before)} -> {_fmt(after)} on {held_out['prompts']} held-out prompts x "
            f"{held_out['samples_per_prompt']} samples")


def _print_metrics(console: Console, summary: dict[str, Any]) -> None:
    from rich.table import Table

    ho = summary["held_out"]
    if ho.get("after"):
        table = Table(title=f"held-out pass rates: {ho['prompts']} prompts x {ho['samples_per_prompt']} samples",
                      caption="sampled at temperature 1 with a fixed seed, before and after training")
        for col in ("channel", "before", "after"):
            table.add_column(col, justify="left" if col == "channel" else "right")
        for key in ho["after"]:
            if key.startswith("pass/") or key == "mean_reward":
                table.add_row(key.removeprefix("pass/"), _fmt(ho["before"].get(key)), _fmt(ho["after"][key]))
        console.print(table)
    w = max(1, min(5, summary["steps"] // 2))
    table = Table(title=f"training batches ({summary['steps']} steps, {summary['seconds']} s): mean of the first "
                        f"{w} / last {w} steps")
    for col in ("metric", "first", "last"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key in summary["last"]:
        table.add_row(key, _fmt(summary["first"].get(key)), _fmt(summary["last"][key]))
    console.print(table)
    if summary["stopped"]:
        console.print(f"[red]stopped early after {summary['steps']} steps:[/red] {summary['stopped']}")


def plot_reward_curves(history: list[dict], names: list[str], path: Path, title: str = "",
                       held_out: dict[str, Any] | None = None) -> None:
    """Save :func:`reward_figure` as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = reward_figure(history, names, title, held_out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reward_figure(history: list[dict], names: list[str], title: str = "", held_out: dict[str, Any] | None = None):
    """Per reward channel, the training batches' mean reward and pass rate per step, all on one y-scale; then the
    bottleneck reward (same scale), k (its own) and, with ``held_out``, held-out pass rates before / after.
    Returns the matplotlib figure (axes in that order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if "rvpo/risk" in h]
    steps = [h.get("step", i + 1) for i, h in enumerate(rows)]

    def series(key: str) -> list[float]:
        return [math.nan if h.get(key) is None else h[key] for h in rows]

    reward_panels = [(n, [(f"rewards/{n}/mean", "mean", "o"), (f"rvpo/pass_rate/{n}", "pass rate", "x")])
                     for n in names] + [("bottleneck (min channel)", [("rvpo/bottleneck_reward", "reward", "o")])]
    panels = len(reward_panels) + 1 + bool(held_out and held_out.get("after"))
    cols = min(4, panels)
    fig, axes = plt.subplots(-(-panels // cols), cols, figsize=(3.2 * cols, 2.6 * -(-panels // cols)), squeeze=False)
    flat = list(axes.flat)
    values = [v for _, lines in reward_panels for key, *_ in lines for v in series(key) if not math.isnan(v)]
    low, high = min([0.0, *values]), max([1.0, *values])
    pad = 0.05 * (high - low)
    for ax, (name, lines) in zip(flat, reward_panels):
        for key, label, marker in lines:
            ax.plot(steps, series(key), marker=marker, label=label)
        ax.set_ylim(low - pad, high + pad)  # one scale for every reward panel: noise does not look like a spike
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    ax = flat[len(reward_panels)]
    ax.plot(steps, series("rvpo/risk"), marker="o", color="tab:red")
    ax.set_title("risk coefficient k", fontsize=9)
    ax.set_xlabel("step")
    if held_out and held_out.get("after"):
        ax = flat[len(reward_panels) + 1]
        keys = [k for k in held_out["after"] if k.startswith("pass/")]
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], [held_out["before"][k] for k in keys], width=0.4, label="before")
        ax.bar([x + 0.2 for x in xs], [held_out["after"][k] for k in keys], width=0.4, label="after")
        ax.set_xticks(list(xs), [k.split("/")[-1] for k in keys], rotation=60, fontsize=6)
        ax.set_ylim(low - pad, high + pad)  # a pass rate: the reward panels' scale
        ax.set_title(f"held-out pass rate ({held_out['prompts']} prompts)", fontsize=9)
        ax.legend(fontsize=7)
    for ax in flat[panels:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def run_from_yaml(path: str | Path, console: Console | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """`rvpo train`: load and check the YAML config, then train."""
    return run_training(load_config(path), console, max_steps=max_steps)


def demo_training(gateway_url: str, out_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """The demo's short run: a warm-started tiny model, RVPO with k 0.5 -> 2.0, rewards through the gateway,
    evaluated on held-out prompts before and after."""
    cfg = {
        "output_dir": str(out_dir / "train"),
        "model": {"hidden_size": 64, "num_layers": 2},
        "task": {"n_functions": 4, "n_train_per_fn": 32, "n_eval_per_fn": 16, "seed": 0},
        "rewards": {"source": "gateway", "gateway_url": gateway_url},
        "trl": {"max_steps": DEMO_STEPS},
    }
    summary = run_training(cfg, console)
    import shutil

    shutil.copy(summary["plot_path"], out_dir / "rewards.png")
    return summary
