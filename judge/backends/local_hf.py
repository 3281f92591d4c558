"""Local Hugging Face transformers grader: yes/no next-token probability in true batched forward passes.

For a batch of B grader prompts (chat template applied, generation prompt added) the backend runs ONE forward
pass over the left-padded (B, T) token matrix with explicit ``position_ids`` (so padding shifts nothing) and
reads the next-token distribution at the last position: P(yes) = sum of the probabilities of the tokens
"yes"/"Yes"/" yes"/" Yes"/"YES" (those that are single tokens; else their distinct first tokens), P(no) likewise; criteria_met = P(yes) / (P(yes) + P(no)) > threshold.
Forward passes run one at a time in a worker thread, so the event loop keeps accepting requests and the
micro-batcher gathers the next batch meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from judge import metrics
from judge.backends.base import BUDGET_EXCEEDED, GradeJob, Outcome
from judge.settings import JudgeSettings

YES_VARIANTS = ("yes", "Yes", " yes", " Yes", "YES")
NO_VARIANTS = ("no", "No", " no", " No", "NO")


class LocalHFBackend:
    """Yes/no grader on a local causal LM. ``max_concurrent_batches = 1``: one forward pass at a time."""

    yes_no = True
    max_concurrent_batches = 1

    def __init__(self, model_path: str | Path, *, model_id: str | None = None, device: str = "auto",
                 threshold: float = 0.5, max_length: int = 8192):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model_id = model_id or f"local:{model_path}"
        self.threshold, self.max_length = threshold, max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path).to(self.device).eval()
        self.yes_ids, self.no_ids = self._answer_token_ids()
        self._lock = threading.Lock()
        self.forward_calls = 0  # number of forward passes run (tests and benchmarks read it)

    @classmethod
    def from_settings(cls, s: JudgeSettings) -> LocalHFBackend:
        return cls(s.judge_local_model_path, model_id=s.model_id(), device=s.judge_local_device,
                   threshold=s.judge_yes_no_threshold, max_length=s.judge_local_max_length)

    def _answer_token_ids(self) -> tuple[list[int], list[int]]:
        """Token ids read as "yes" / "no": the variants that are one token each (a real grader's vocabulary);
        if a side has none, the first tokens of its variants minus those shared with the other side.
        Raises ValueError when no distinguishing token is left."""
        def encode(variants):
            return [self.tokenizer.encode(v, add_special_tokens=False) for v in variants]

        yes, no = encode(YES_VARIANTS), encode(NO_VARIANTS)
        yes1 = list(dict.fromkeys(t[0] for t in yes if len(t) == 1))
        no1 = list(dict.fromkeys(t[0] for t in no if len(t) == 1))
        if yes1 and no1:
            return yes1, no1
        yes_first = list(dict.fromkeys(t[0] for t in yes if t))
        no_first = list(dict.fromkeys(t[0] for t in no if t))
        shared = set(yes_first) & set(no_first)
        yes_ids = [t for t in yes_first if t not in shared]
        no_ids = [t for t in no_first if t not in shared]
        if not yes_ids or not no_ids:
            raise ValueError("the tokenizer has no token that tells 'yes' from 'no'")
        return yes_ids, no_ids

    def render(self, messages: list[dict]) -> str:
        """The prompt text the model sees (chat template with the generation prompt)."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def yes_probabilities(self, texts: list[str]) -> list[tuple[float, float] | None]:
        """(P(yes), P(no)) of the next token for each text, from ONE batched forward pass.

        texts: B prompt strings -> left-padded input_ids (B, T_max), attention_mask (B, T_max),
        position_ids = cumsum(mask) - 1 (B, T_max); logits[:, -1, :] (B, V) -> softmax -> summed over the yes /
        no token ids. A prompt longer than ``max_length`` tokens is left out of the pass and gets None.
        """
        torch = self.torch
        all_enc = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        keep = [i for i, e in enumerate(all_enc) if 0 < len(e) <= self.max_length]
        result: list[tuple[float, float] | None] = [None] * len(texts)
        if not keep:
            return result
        enc = [all_enc[i] for i in keep]
        t_max = max(len(e) for e in enc)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(enc), t_max), pad, dtype=torch.long)
        mask = torch.zeros((len(enc), t_max), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, t_max - len(e):] = torch.tensor(e, dtype=torch.long)
            mask[i, t_max - len(e):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with self._lock, torch.inference_mode():
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=pos.to(self.device), use_cache=False, logits_to_keep=1)
            self.forward_calls += 1
            probs = torch.softmax(out.logits[:, -1, :].float(), dim=-1)
            p_yes = probs[:, self.yes_ids].sum(-1).tolist()
            p_no = probs[:, self.no_ids].sum(-1).tolist()
        for j, i in enumerate(keep):
            result[i] = (p_yes[j], p_no[j])
        return result

    async def grade_batch(self, jobs: list[GradeJob]) -> list[Outcome]:
        """One forward pass for the whole batch (in a worker thread); a null Outcome per job on failure.

        Time budget at batch granularity: a job whose deadline has passed when its batch reaches the model is
        left out of the pass (``judge_budget_exceeded``), and no pass runs when every job's has; a pass, once
        started, runs to its end (the service answers at the deadline without what is still running)."""
        late = {i for i, j in enumerate(jobs) if j.time_left() <= 0}
        run = [i for i in range(len(jobs)) if i not in late]
        outs: list[Outcome] = [Outcome(None, error=f"{BUDGET_EXCEEDED}: the deadline passed before the forward "
                                                   "pass of its batch started")] * len(jobs)
        if run:
            for i, out in zip(run, await self._grade_now([jobs[i] for i in run])):
                outs[i] = out
        return outs

    async def _grade_now(self, jobs: list[GradeJob]) -> list[Outcome]:
        texts = [self.render(j.messages) for j in jobs]
        t0 = time.perf_counter()
        try:
            pairs = await asyncio.to_thread(self.yes_probabilities, texts)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not kill the service
            metrics.BACKEND_CALLS.labels("error").inc()
            return [Outcome(None, error=f"judge_local_error: {type(exc).__name__}: {exc}") for _ in jobs]
        finally:
            metrics.BACKEND_LATENCY.observe(time.perf_counter() - t0)
        metrics.BACKEND_CALLS.labels("ok").inc()
        outs = []
        for pair in pairs:
            if pair is None:
                outs.append(Outcome(None, error=f"judge_too_long: prompt over {self.max_length} tokens"))
                continue
            p_yes, p_no = pair
            if p_yes + p_no <= 0.0:
                outs.append(Outcome(None, error="judge_parse_error: P(yes) + P(no) is 0"))
                continue
            p = p_yes / (p_yes + p_no)
            outs.append(Outcome(p > self.threshold, f"P(yes)={p:.4f}", None,
                                f'{{"p_yes": {p_yes:.6g}, "p_no": {p_no:.6g}}}'))
        return outs

    async def ready(self) -> tuple[bool, str]:
        return True, f"local model on {self.device}"

    async def aclose(self) -> None:
        return None
