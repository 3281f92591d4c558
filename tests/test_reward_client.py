"""The trainer's reward pull: RemoteRewardClient against the real stack, and RVPOTrainer training 2 steps on CPU
with a tiny local model whose rewards come through gateway -> Celery -> rules service.

Expected values: the fake LLM's published rule times the points (rubric channels), the rules library
(`services.rules.score_item`, in this process) and the rules service answering directly (rule channels)."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from services.rules import score_item
from tests.fake_llm import keyword, rule_verdict
from tests.gateway_fixtures import bfcl_rows, correct_call_text, running_stack
from tests.procs import free_port
from trainer.reward_client import RemoteRewardClient, RewardClientError, max_rubric_count

RULES = ["rules/format", "rules/function_name", "rules/required_args", "rules/no_unexpected_args", "rules/arg_types",
         "rules/arg_values", "rules/call_count", "rules/toolrl_format", "rules/toolrl_correctness"]
# synthetic criteria (HealthBench rows are for evaluation only, never for training)
RUBRICS = [{"criterion": "Mentions hydration", "points": 5, "tags": []},
           {"criterion": "Recommends a doctor visit", "points": 3, "tags": []},
           {"criterion": "Suggests antibiotics", "points": -4, "tags": []}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url):
    with running_stack(tmp_path_factory.mktemp("rc-logs")) as s:
        yield s


def jobs_submitted(stack) -> float:
    text = httpx.get(stack.urls["gateway"] + "/metrics").text
    return float(re.search(r"^rvpo_gateway_jobs_total (\S+)$", text, re.M).group(1))


def trl_batch():
    """What TRL hands a reward function: conversational prompts/completions and every dataset column as a list
    (tools / ground_truth as JSON strings, as they are stored in a datasets.Dataset)."""
    rows = bfcl_rows("simple_python", 2)
    good = correct_call_text(rows[0]["ground_truth"])
    prompts = [rows[0]["question"][0], rows[0]["question"][0], rows[1]["question"][0],
               [{"role": "user", "content": "I have a fever."}], [{"role": "user", "content": "Hello"}]]
    texts = [good, "I cannot help.", "[wrong_fn(a=1)]", "Drink water for hydration; maybe see a doctor.", "Hi!"]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {
        "tools": [json.dumps(rows[0]["function"])] * 2 + [json.dumps(rows[1]["function"]), None, None],
        "ground_truth": [json.dumps(rows[0]["ground_truth"])] * 2 + [json.dumps(rows[1]["ground_truth"]), None, None],
        "rubrics": [None, None, None, json.dumps(RUBRICS), None],
    }
    return prompts, completions, columns, texts, rows


def test_reward_funcs_share_one_job_and_match_the_services(stack):
    prompts, completions, columns, texts, rows = trl_batch()
    client = RemoteRewardClient(stack.urls["gateway"], rubric_slots=4, timeout_s=60, poll_s=5)
    funcs = client.reward_funcs()
    assert [f.__name__ for f in funcs] == [f"rubric/{j:02d}" for j in range(4)] + RULES
    before = jobs_submitted(stack)
    metrics, extra = [], []
    out = {f.__name__: f(prompts=prompts, completions=completions, completion_ids=None, trainer_state=None,
                         log_metric=lambda name, value: metrics.append((name, value)),
                         log_extra=lambda column, values: extra.append((column, values)), **columns) for f in funcs}
    assert jobs_submitted(stack) - before == 1  # one gateway job for all 13 channels
    assert all(len(v) == len(prompts) for v in out.values())

    # rubric channels: points * met by the fake LLM's rule; slot 3 does not exist; rows without rubrics are NaN
    for j, r in enumerate(RUBRICS):
        assert r["points"] * rule_verdict(r["criterion"], texts[3]) == out[f"rubric/{j:02d}"][3]
    assert keyword(RUBRICS[0]["criterion"]) in texts[3].lower() and out["rubric/00"][3] == 5  # by hand
    assert out["rubric/03"][3] is None
    assert all(out[f"rubric/{j:02d}"][i] is None for j in range(4) for i in (0, 1, 2, 4))
    # rule channels: the rules service directly, on the same items
    direct = httpx.post(stack.urls["rules"] + "/v1/rules/score", json={"items": [
        {"id": str(i), "completion": texts[i],
         "tools": rows[0 if i < 2 else 1]["function"], "ground_truth": rows[0 if i < 2 else 1]["ground_truth"]}
        for i in range(3)]}).json()["items"]
    for i in range(3):
        for name in RULES:
            assert out[name][i] == direct[i]["channels"][name], (i, name)
    assert out["rules/function_name"][0] == 1.0 and out["rules/function_name"][2] == 0.0  # by hand
    assert all(out[name][i] is None for name in RULES for i in (3, 4))  # no tools: NaN, never 0
    assert client.last.reasons[4][0].startswith("unscorable")
    assert client.last.reasons[3][3] == "absent: prompt has only 3 rubric criteria"
    assert max_rubric_count(columns["rubrics"]) == 3

    # TRL's logs: each channel's NaN fraction, by hand from the batch layout (rows 0-2 have tools, row 3 three
    # rubric criteria, row 4 neither), and the null cells' reasons counted once per batch
    fractions = {name[len("rewards/"):-len("/nan_fraction")]: v for name, v in metrics if name.endswith("nan_fraction")}
    assert fractions == {"rubric/00": 4 / 5, "rubric/01": 4 / 5, "rubric/02": 4 / 5, "rubric/03": 1.0,
                         **{name: 2 / 5 for name in RULES}}
    counts = {name.rsplit("/", 1)[1]: v for name, v in metrics if name.startswith("rewards/nan_reasons/")}
    # row 4: all 13 channels unscorable; row 3: rubric/03 + 9 rule channels absent; rows 0-2: 4 rubric slots absent
    assert counts == {"unscorable": 13, "absent": 1 + 9 + 3 * 4}
    assert len(extra) == 1 and extra[0][0] == "unscored"
    assert extra[0][1][:4] == [None] * 4 and extra[0][1][4].count("=unscorable") == 13
    client.close()


def test_unreachable_gateway_gives_nan_or_raises():
    prompts, completions, columns, *_ = trl_batch()
    dead = f"http://127.0.0.1:{free_port()}"
    client = RemoteRewardClient(dead, max_retries=1, rubric_slots=2, timeout_s=5)
    values = [f(prompts, completions, **columns) for f in client.reward_funcs()]
    assert all(v is None for column in values for v in column)
    assert client.last.reasons[0][0].startswith("gateway_error: ConnectError")
    with pytest.raises(RewardClientError, match="ConnectError"):
        RemoteRewardClient(dead, max_retries=1, on_error="raise").score(prompts, completions, **columns)


def test_rejected_batch_raises_naming_the_field(stack):
    prompts, completions, columns, *_ = trl_batch()
    columns["rubrics"][3] = [{"criterion": "x", "points": "many"}]
    client = RemoteRewardClient(stack.urls["gateway"], rubric_slots=2)
    with pytest.raises(RewardClientError, match=r"422.*points"):
        client.score(prompts, completions, **columns)


def test_rvpo_trainer_two_steps_with_rewards_from_the_gateway(stack, tiny_model_dir, tmp_path):
    from datasets import Dataset

    from tests.trainer_fixtures import tiny_args
    from trainer import RVPOConfig, RVPOTrainer

    rows = bfcl_rows("simple_python", 4)
    dataset = Dataset.from_dict({
        "prompt": [r["question"][0] for r in rows],
        "tools": [json.dumps(r["function"]) for r in rows],
        "ground_truth": [json.dumps(r["ground_truth"]) for r in rows],
    })
    client = RemoteRewardClient(stack.urls["gateway"], rubric_slots=0, timeout_s=60, poll_s=5)
    seen = []

    def recorded(f):
        def g(prompts, completions, **kwargs):
            values = f(prompts, completions, **kwargs)
            seen.append((f.__name__, [c[-1]["content"] for c in completions], kwargs["tools"],
                         kwargs["ground_truth"], values))
            return values

        g.__name__ = f.__name__
        return g

    before = jobs_submitted(stack)
    args = tiny_args(RVPOConfig, tmp_path, per_device_train_batch_size=4, num_generations=2, max_steps=2,
                     advantage_method="rvpo")
    trainer = RVPOTrainer(model=str(tiny_model_dir), reward_funcs=[recorded(f) for f in client.reward_funcs()],
                          args=args, train_dataset=dataset)
    trainer.train()
    assert trainer.state.global_step == 2
    assert jobs_submitted(stack) - before == 2  # one gateway job per generation batch, not one per channel
    assert len(seen) == 2 * len(RULES)
    # every value TRL got is what the rules library says for that completion (None = NaN)
    for name, texts, tools, gts, values in seen:
        for text, t, gt, v in zip(texts, tools, gts, values):
            expected = score_item({"id": "x", "completion": text,
                                   "tools": json.loads(t), "ground_truth": json.loads(gt)}).channels[name]
            assert (v is None and expected != expected) or v == pytest.approx(expected), (name, text)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
    client.close()


def test_rewards_beyond_float32_are_nan_with_a_reason(stack):
    """Rubric points of 1e308 are valid at the gateway, but TRL stores rewards as float32: 1e308 became inf and
    `compute_advantages` raised `rewards: contains +-inf` mid-run. Through the real stack (the fake LLM's rule:
    the criterion's keyword in the completion = met), the met 1e308 criterion is None (NaN) with the reason
    `out_of_range`; the float32 max itself (3.4028234663852886e38) still fits and is kept; -5 * met = -5."""
    import torch

    assert torch.isinf(torch.tensor([1e308], dtype=torch.float32)).all()  # what TRL would have made of it
    f32_max = 3.4028234663852886e38
    rubrics = [{"criterion": "Mentions hydration", "points": 1e308, "tags": []},
               {"criterion": "Advises restfulness", "points": f32_max, "tags": []},
               {"criterion": "Suggests antibiotics", "points": -5, "tags": []}]
    completion = "Hydration, restfulness and antibiotics."
    assert all(rule_verdict(r["criterion"], completion) for r in rubrics)  # every criterion met, by the rule
    client = RemoteRewardClient(stack.urls["gateway"], rubric_slots=3, rule_channels=[], timeout_s=60, poll_s=5)
    try:
        batch = client.score([[{"role": "user", "content": "I feel unwell."}]], [completion],
                             rubrics=[json.dumps(rubrics)])
    finally:
        client.close()
    assert batch.rewards == [[None, f32_max, -5.0]]
    assert batch.reasons[0][0].startswith("out_of_range: 1e+308") and batch.reasons[0][1:] == [None, None]
