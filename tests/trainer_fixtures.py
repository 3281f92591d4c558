"""Helpers for the trainer tests: tiny GRPO configs, a prompt dataset and reward functions with preset values."""

from __future__ import annotations

import math

PROMPTS = ["Find the area of a triangle.", "Call the tool.", "The quick brown fox.", "0123456789",
           "Height of 5 units.", "lazy dog"]


def prompt_dataset(n: int = 4):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [PROMPTS[i % len(PROMPTS)] for i in range(n)]})


def tiny_args(cls, output_dir, **overrides):
    """A CPU-only GRPO-family config small enough for a step in about a second."""
    kwargs = dict(
        output_dir=str(output_dir), report_to="none", use_cpu=True, logging_steps=1, save_strategy="no",
        per_device_train_batch_size=4, num_generations=2, max_completion_length=8, max_steps=2,
        learning_rate=1e-3, seed=0, bf16=False, dataloader_num_workers=0, disable_tqdm=True,
        log_completions=False,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


class PresetRewards:
    """K reward functions that return, on each call, the next rows of a preset `[N, K]` matrix (NaN -> None).

    They ignore the completions, so TRL's advantages for that matrix can be read off its real code path.
    """

    def __init__(self, matrix: list[list[float]]):
        self.matrix = matrix
        self.calls = [0] * len(matrix[0])
        self.funcs = [self._make(j) for j in range(len(matrix[0]))]

    def _make(self, j: int):
        def reward(prompts, completions, **kwargs):
            start = self.calls[j]
            self.calls[j] += len(completions)
            rows = self.matrix[start:start + len(completions)]
            return [None if math.isnan(row[j]) else row[j] for row in rows]

        reward.__name__ = f"preset_{j}"
        return reward


def length_reward(prompts, completions, **kwargs):
    """Completion length in characters / 10 (always defined)."""
    return [len(c) / 10 for c in completions]


def digit_reward(prompts, completions, **kwargs):
    """Share of digits in the completion; None when the prompt has no digit (so the channel does not exist)."""
    out = []
    for p, c in zip(prompts, completions):
        if not any(ch.isdigit() for ch in p):
            out.append(None)
        else:
            out.append(sum(ch.isdigit() for ch in c) / max(len(c), 1))
    return out


def vowel_reward(prompts, completions, **kwargs):
    """Share of vowels; None for an empty completion (could not be scored)."""
    return [None if not c else sum(ch in "aeiou" for ch in c) / len(c) for c in completions]
