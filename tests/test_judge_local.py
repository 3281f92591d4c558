"""Local transformers backend (judge.backends.local_hf) on a tiny random Qwen2 built in the test session:
batched forward passes give the same yes/no probabilities as one prompt at a time, one pass per batch, and
concurrent requests to the service are merged into shared forward passes by the micro-batcher."""

from __future__ import annotations

import asyncio

import pytest

from judge import prompt
from judge.backends.base import GradeJob
from judge.schemas import JudgeItem
from judge.service import JudgeService
from judge.settings import JudgeSettings


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from judge.backends.local_hf import LocalHFBackend

    return LocalHFBackend(tiny_model_dir, device="cpu")


def _jobs(n: int) -> list[GradeJob]:
    jobs = []
    for i in range(n):
        conv = prompt.render_conversation([{"role": "user", "content": "Find the area of a triangle" + "!" * i}],
                                          "The area is " + "5 " * (3 * i + 1), prompt.new_nonce())
        jobs.append(GradeJob(prompt.grader_messages(conv, f"States the base {i}", 5 - i, yes_no=True)))
    return jobs


def test_batched_probabilities_equal_one_at_a_time(backend):
    texts = [backend.render(j.messages) for j in _jobs(4)]
    lengths = {len(backend.tokenizer.encode(t)) for t in texts}
    assert len(lengths) > 1, "prompts of different lengths exercise the left padding"
    calls0 = backend.forward_calls
    batched = backend.yes_probabilities(texts)
    assert backend.forward_calls == calls0 + 1  # one forward pass for the four prompts
    for text, (p_yes, p_no) in zip(texts, batched):
        (s_yes, s_no), = backend.yes_probabilities([text])
        assert p_yes == pytest.approx(s_yes, rel=1e-4, abs=1e-6)
        assert p_no == pytest.approx(s_no, rel=1e-4, abs=1e-6)
        assert 0.0 < p_yes < 1.0 and 0.0 < p_no < 1.0


def test_grade_batch_threshold_and_too_long(backend):
    jobs = _jobs(3)
    outs = asyncio.run(backend.grade_batch(jobs))
    pairs = backend.yes_probabilities([backend.render(j.messages) for j in jobs])
    for o, (p_yes, p_no) in zip(outs, pairs):
        p = p_yes / (p_yes + p_no)
        assert o.criteria_met is (p > 0.5) and o.error is None
        assert o.explanation == f"P(yes)={p:.4f}"
    backend.max_length, saved = 16, backend.max_length
    try:
        outs = asyncio.run(backend.grade_batch(jobs[:1]))
    finally:
        backend.max_length = saved
    assert outs[0].criteria_met is None and outs[0].error.startswith("judge_too_long")


def test_service_merges_concurrent_requests_into_forward_passes(tiny_model_dir):
    settings = JudgeSettings(judge_backend="local", judge_local_model_path=str(tiny_model_dir),
                             judge_local_device="cpu", judge_cache_enabled=False, judge_max_batch_size=64,
                             judge_max_wait_ms=50)
    items = [JudgeItem.model_validate({
        "id": f"e{k}", "prompt": [{"role": "user", "content": f"question {k}"}], "completion": f"answer {k}",
        "rubrics": [{"criterion": f"criterion {k}.{j}", "points": 1 + j} for j in range(2)]}) for k in range(6)]

    async def main():
        svc = JudgeService.from_settings(settings)
        try:
            results = await asyncio.gather(*(svc.judge([it]) for it in items))  # 6 concurrent requests
            return results, svc.backend.forward_calls, svc.template_version, svc.backend.model_id
        finally:
            await svc.aclose()

    results, calls, version, model = asyncio.run(main())
    assert calls < len(items)  # 12 rubric items of 6 requests in fewer than 6 forward passes
    for [res] in results:
        assert res["n_errors"] == 0
        for rr in res["rubric_results"]:
            assert rr["criteria_met"] in (True, False)
            assert rr["template_version"] == version == prompt.TEMPLATE_VERSION_YES_NO
            assert rr["model"] == model == f"local:{tiny_model_dir}"
