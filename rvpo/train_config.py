"""The `rvpo train` YAML config: every key, its type and default, checked before anything is built.

An unknown key, a value of the wrong type or an argument TRL does not know is a :class:`TrainConfigError` naming
the key (``task.n_function: unknown key (did you mean n_functions?)``), raised before the warm start.

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
  n_eval_per_fn: 8                # held-out prompts per function, evaluated before and after (0: none)
  eval_samples: 4                 # sampled completions per held-out prompt
  value_low: 1                    # argument values are integers in [value_low, value_high]
  value_high: 99
  seed: 0
rewards:
  source: gateway                 # gateway (REST -> Celery -> rules) or local (in-process rules library)
  gateway_url: http://127.0.0.1:8000   # default: RVPO_GATEWAY_URL
  channels: [rules/format, rules/function_name, rules/required_args, rules/arg_values]  # default: the task's 7
  timeout_s: 300                  # longest wait for one batch's rewards
  stop_unscored_fraction: 1.0     # a batch is "unscored" when at least this share of its reward cells is NaN
  stop_after_unscored_batches: 2  # stop after this many unscored batches in a row (0: never)
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

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator


class TrainConfigError(ValueError):
    """The training config is invalid; the message names the key at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WarmStart(_Strict):
    base_steps: int = Field(150, ge=0, description="Supervised steps on clean demonstrations (the copy skill).")
    noisy_steps: int = Field(30, ge=0, description="Supervised steps on noisy ones (sets the starting mixture).")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)
    p_wrong_value: float = Field(0.5, ge=0, le=1, description="Chance a demonstration's argument value is wrong.")


class ModelSection(_Strict):
    path: str | None = Field(None, description="A local HF causal LM; None: build and warm-start a tiny Qwen2.")
    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    warm_start: WarmStart = Field(default_factory=WarmStart)


class TaskSection(_Strict):
    n_functions: int = Field(4, ge=1)
    n_train_per_fn: int = Field(32, ge=1)
    n_eval_per_fn: int = Field(8, ge=0, description="Held-out prompts per function (0: no held-out evaluation).")
    eval_samples: int = Field(4, ge=1, description="Sampled completions per held-out prompt.")
    value_low: int = 1
    value_high: int = 99
    seed: int = 0

    @model_validator(mode="after")
    def _value_range(self) -> "TaskSection":
        if self.value_low > self.value_high:  # was `task.empty range for randrange() (10, 2, -8)` at build time
            raise ValueError(f"value_low ({self.value_low}) must be <= value_high ({self.value_high})")
        return self


class RewardsSection(_Strict):
    source: Literal["gateway", "local"] = "gateway"
    gateway_url: str | None = None
    channels: list[str] | None = None
    timeout_s: float = Field(300.0, gt=0)
    stop_unscored_fraction: float = Field(1.0, gt=0, le=1)
    stop_after_unscored_batches: int = Field(2, ge=0)

    @field_validator("channels")
    @classmethod
    def _known(cls, v):
        from contracts.channels import check_rule_channels

        if v is not None and not v:  # [] used to train on the default channels, silently
            raise ValueError("empty list: no reward channel to train on; omit `channels` for the task's seven")
        return None if v is None else check_rule_channels(v)


class TrainFile(_Strict):
    output_dir: str = "runs/train"
    model: ModelSection = Field(default_factory=ModelSection)
    task: TaskSection = Field(default_factory=TaskSection)
    rewards: RewardsSection = Field(default_factory=RewardsSection)
    trl: dict[str, Any] = Field(default_factory=dict)


def _close(name: str, choices) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _section_fields(loc: tuple) -> dict:
    model: type[BaseModel] = TrainFile
    for part in loc[:-1]:
        ann = model.model_fields[part].annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return {}
        model = ann
    return model.model_fields


def _pydantic_error(exc: ValidationError) -> TrainConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if isinstance(p, str))
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            fields = _section_fields(loc)
            lines.append(f"{key}: unknown key{_close(loc[-1], fields)}; expected one of {', '.join(fields)}")
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return TrainConfigError("; ".join(lines))


def _trl_fields() -> dict[str, Any]:
    """RVPOConfig's fields (TRL's GRPOConfig and transformers' TrainingArguments included) and their types."""
    from trainer.config import RVPOConfig

    try:
        hints = typing.get_type_hints(RVPOConfig)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: names are still checked
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(RVPOConfig) if f.init}


def _scalar(tp: Any) -> bool:
    """Whether ``tp`` is int / float / bool, or one of them or None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return len(args) == 1 and args[0] in (int, float, bool)


def check_trl(trl: dict[str, Any]) -> dict[str, Any]:
    """``trl`` with numbers written as strings converted (YAML reads ``5e-4`` as a string). Raises
    TrainConfigError for a key that is no RVPOConfig / GRPOConfig argument or a value of the wrong type."""
    fields = _trl_fields()
    out = dict(trl)
    for key, value in trl.items():
        if key not in fields:
            raise TrainConfigError(f"trl.{key}: not an RVPOConfig / TRL GRPOConfig argument{_close(key, fields)}")
        try:
            adapter = TypeAdapter(fields[key])
        except Exception:  # noqa: BLE001 - a type pydantic cannot build a check for: TRL checks it
            continue
        try:
            checked = adapter.validate_python(value)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"] if exc.errors() else str(exc)
            raise TrainConfigError(f"trl.{key}: {msg} (got {value!r})") from None
        if _scalar(fields[key]):
            out[key] = checked
    return out


def parse_config(cfg: Any, source: str = "config") -> TrainFile:
    """Check a config mapping (what the YAML holds); returns it with every default filled in.

    Raises TrainConfigError naming the key: a non-mapping, a HealthBench or any other ``task.dataset`` (the task
    is built in), an unknown key (with the closest known one), a wrong type, an unknown TRL argument.
    """
    if not isinstance(cfg, dict):
        raise TrainConfigError(f"{source}: the config must be a mapping (key: value), got {type(cfg).__name__}")
    dataset = (cfg.get("task") or {}).get("dataset") if isinstance(cfg.get("task"), dict) else None
    if dataset is not None:
        if "healthbench" in str(dataset).lower():
            raise TrainConfigError("task.dataset: HealthBench rows carry a canary and are for evaluation only")
        raise TrainConfigError("task.dataset: `rvpo train` trains on its built-in tool-calling task; for your own "
                               "dataset use RVPOTrainer from Python (README, 'Training with RVPO in TRL')")
    try:
        parsed = TrainFile.model_validate({k: v for k, v in cfg.items() if v is not None})
    except ValidationError as exc:
        raise _pydantic_error(exc) from None
    parsed.trl = check_trl(parsed.trl)
    return parsed


def load_config(path: str | Path) -> TrainFile:
    """Read and check a YAML config (see :func:`parse_config`). Raises TrainConfigError."""
    data = Path(path).read_bytes()
    try:
        cfg = yaml.safe_load(data.decode("utf-8-sig")) or {}
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _file_error(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {col}); save the "
                          "config as UTF-8") from None
    except yaml.YAMLError as exc:  # one line: file:line:column and the problem, not PyYAML's multi-line text
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        ctx = getattr(exc, "context", None)
        raise _file_error(f"{where}: not valid YAML ({what}{', ' + ' '.join(ctx.split()) if ctx else ''})") from None
    return parse_config(cfg, str(path))


def _file_error(message: str) -> TrainConfigError:
    """A TrainConfigError for a config that is not a YAML file at all: exit code 2 (wrong usage)."""
    err = TrainConfigError(message)
    err.exit_code = 2
    return err
