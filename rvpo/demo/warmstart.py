"""Warm start: build the tiny Qwen2 policy and its tokenizer locally, then supervised passes (plain torch loop,
loss on completion tokens only): stage 1 (`build_base`, once, shared by all seeds) on demonstrations with clean
argument values, which teaches the copy skill; stage 2 (`finetune`, once per seed) on the noisy demonstrations
of `tooltask.sft_pairs`, which sets the warm-start mixture (easy channels mostly right, values often wrong)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch


def encode_pair(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of chat(prompt) + completion + EOS and the number of prompt tokens (masked out of the loss)."""
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return list(prompt_ids) + completion_ids, len(prompt_ids)


def supervised_pass(model, tokenizer, pairs: list[tuple[str, str]], *, steps: int, batch_size: int, lr: float,
                    seed: int, log_every: int = 0, callback=None) -> list[float]:
    """Train `model` in place for `steps` AdamW steps on batches of `pairs`; returns the loss per step.

    Loss: mean token cross-entropy (nats) over completion tokens (prompt tokens and padding are masked with -100).
    Linear warm-up over the first 5% of steps, then cosine decay to 10% of `lr`. `callback(step, model)`, when
    given, is called after every `log_every` steps.
    """
    encoded = [encode_pair(tokenizer, p, c) for p, c in pairs]
    rng = random.Random(seed)
    order: list[int] = []
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return lr * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(t * torch.pi)).item()))

    pad = tokenizer.pad_token_id
    model.train()
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        if len(order) < batch_size:
            more = list(range(len(encoded)))
            rng.shuffle(more)
            order += more
        batch = [encoded[order.pop()] for _ in range(batch_size)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        attention = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (ids, n_prompt) in enumerate(batch):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            labels[i, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
            attention[i, :len(ids)] = 1
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"sft step {step + 1}/{steps} loss {sum(losses[-log_every:]) / log_every:.4f} "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
            if callback is not None:
                callback(step + 1, model)
                model.train()
    model.eval()
    return losses


def build_base(out_dir: str | Path, corpus: list[str], pairs: list[tuple[str, str]], *, seed: int,
               hidden_size: int, num_layers: int, steps: int, batch_size: int, lr: float, log_every: int = 0) -> dict:
    """Stage 1 (shared by every seed): a tiny Qwen2 (random init from `seed`) with a tokenizer trained on `corpus`,
    trained by `supervised_pass` on `pairs` (clean argument values: this is where the copy skill is learned);
    model + tokenizer saved to `out_dir`. Returns {"path", "losses", "seconds"}."""
    from rvpo.demo.tinymodel import build_tiny_qwen2

    out_dir = Path(out_dir)
    build_tiny_qwen2(out_dir, corpus=corpus, seed=seed, hidden_size=hidden_size, num_layers=num_layers)
    return finetune(out_dir, out_dir, pairs, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                    log_every=log_every)


def finetune(base_dir: str | Path, out_dir: str | Path, pairs: list[tuple[str, str]], *, seed: int, steps: int,
             batch_size: int, lr: float, log_every: int = 0) -> dict:
    """Load model + tokenizer from `base_dir`, run `supervised_pass` on `pairs` with `seed`, save to `out_dir`.
    Returns {"path", "losses", "seconds"}."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = Qwen2ForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    losses = supervised_pass(model, tokenizer, pairs, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                             log_every=log_every)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"path": str(out_dir), "losses": losses, "seconds": time.perf_counter() - t0}
