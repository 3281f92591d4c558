"""trainer.rewards: in-process rules reward functions for TRL (one callable per channel, one scoring pass).

Expected channel values are derived by hand from the channel definitions in docs/contracts.md and the rules
library's docstring (fraction of arguments, 0 for an unparseable completion, NaN without ground truth), never
read off the code.
"""

from __future__ import annotations

import json
import math

import pytest

import services.rules
from trainer.rewards import RULES_CHANNELS, RulesScorer, completion_payload, rules_reward_funcs

SEVEN = RULES_CHANNELS[:7]
DOC = {"name": "calculate_triangle_area", "description": "Area of a triangle.",
       "parameters": {"type": "dict", "required": ["base", "height"], "properties": {
           "base": {"type": "integer", "description": "base"}, "height": {"type": "integer", "description": "h"}}}}
TRUTH = [{"calculate_triangle_area": {"base": [10], "height": [5]}}]
RIGHT = '<tool_call>{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}</tool_call>'
ONE_WRONG = '<tool_call>{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 6}}</tool_call>'
BROKEN = '<tool_call>{"name": "calculate_triangle_area", "arguments": {"base": 10'


def _call_all(funcs, completions, **cols):
    return {f.__name__: f(prompts=["p"] * len(completions), completions=completions, **cols) for f in funcs}


def test_one_function_per_channel_named_after_it():
    funcs = rules_reward_funcs(["rules/arg_values", "rules/format"])
    assert [f.__name__ for f in funcs] == ["rules/arg_values", "rules/format"]
    assert len(rules_reward_funcs()) == 9


@pytest.mark.parametrize("bad", [["rules/nope"], [], ["rules/format", "rules/format"]])
def test_bad_channel_list_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="channels"):
        rules_reward_funcs(bad)


def test_values_match_the_channel_definitions():
    funcs = rules_reward_funcs(SEVEN + ("rules/toolrl_correctness",), format="hermes")
    comps = [RIGHT, ONE_WRONG, BROKEN]
    out = _call_all(funcs, comps, tools=[[DOC]] * 3, ground_truth=[TRUTH] * 3, mode=["simple"] * 3)
    for ch in SEVEN:
        assert out[ch][0] == 1.0                       # the exact call satisfies every check
        assert out[ch][2] == 0.0                       # unparseable: lowest value, never NaN
    # one of the two arguments has a wrong value: arg_values = 1/2, every other check still passes
    assert out["rules/arg_values"][1] == pytest.approx(0.5)
    assert all(out[ch][1] == 1.0 for ch in SEVEN if ch != "rules/arg_values")
    # ToolRL correctness: exact match +3; unparseable -3 (ToolRL's definition)
    assert out["rules/toolrl_correctness"][0] == 3.0 and out["rules/toolrl_correctness"][2] == -3.0


def test_one_scoring_pass_per_batch(monkeypatch):
    calls = []
    real = services.rules.score_item
    monkeypatch.setattr(services.rules, "score_item", lambda item: calls.append(item) or real(item))
    scorer = RulesScorer(SEVEN, format="hermes")
    funcs = scorer.reward_funcs()
    comps, tools, truth = [RIGHT, ONE_WRONG], [[DOC]] * 2, [TRUTH] * 2
    for f in funcs:  # TRL calls every function with the same lists
        f(prompts=["p", "p"], completions=comps, tools=tools, ground_truth=truth)
    assert len(calls) == 2 and scorer.n_scoring_passes == 1   # 2 completions, not 2 x 7
    funcs[0](prompts=["p", "p"], completions=[ONE_WRONG, RIGHT], tools=tools, ground_truth=truth)
    assert len(calls) == 4 and scorer.n_scoring_passes == 2   # a new batch is scored again


def test_json_string_columns_and_conversational_completions():
    funcs = rules_reward_funcs(["rules/arg_values"], format="hermes")
    conv = [[{"role": "assistant", "content": ONE_WRONG}]]
    out = funcs[0](prompts=[[{"role": "user", "content": "p"}]], completions=conv, tools=[json.dumps([DOC])],
                   ground_truth=[json.dumps(TRUTH)], mode=["simple"])
    assert out == [pytest.approx(0.5)]


def test_tool_call_messages_with_dict_arguments():
    msg = [{"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}}]}]
    payload = completion_payload(msg)
    assert json.loads(payload["tool_calls"][0]["function"]["arguments"]) == {"base": 10, "height": 5}
    out = rules_reward_funcs(["rules/arg_values"], format="openai")[0](
        prompts=["p"], completions=[msg], tools=[[DOC]], ground_truth=[TRUTH])
    assert out == [1.0]
    with pytest.raises(TypeError, match="completions"):
        completion_payload(42)


def test_unscorable_is_none_with_a_reason_never_zero():
    scorer = RulesScorer(["rules/format", "rules/arg_values"], format="hermes")
    f_format, f_values = scorer.reward_funcs()
    cols = dict(tools=[[DOC], [DOC]], ground_truth=[None, TRUTH], mode=["simple", "bogus-mode"])
    values = f_values(prompts=["p", "p"], completions=[RIGHT, RIGHT], **cols)
    # row 0: no ground truth -> arg_values cannot be computed; row 1: the library rejects mode "bogus-mode"
    assert values == [None, None]
    assert scorer.last_reasons[0]["rules/arg_values"].startswith("no_ground_truth")
    assert scorer.last_reasons[1]["rules/arg_values"].startswith("invalid_item")
    assert f_format(prompts=["p", "p"], completions=[RIGHT, RIGHT], **cols)[1] is None


def test_missing_column_names_it():
    f = rules_reward_funcs(["rules/format"])[0]
    with pytest.raises(ValueError, match="ground_truth"):
        f(prompts=["p"], completions=[RIGHT], tools=[[DOC]])
    with pytest.raises(ValueError, match="tools"):
        f(prompts=["p"], completions=[RIGHT], tools=[[DOC], [DOC]], ground_truth=[TRUTH])


def test_inside_a_real_rvpo_training_run(tiny_model_dir, tmp_path):
    """Two real RVPOTrainer steps: TRL calls our functions, scoring happens once per generation batch and the
    rewards TRL logs are the values our scorer produced."""
    from datasets import Dataset

    from tests.trainer_fixtures import tiny_args
    from trainer.config import RVPOConfig
    from trainer.trainer import RVPOTrainer

    seen = []
    scorer = RulesScorer(SEVEN, format="hermes", mode="simple", on_batch=lambda m, names: seen.append(m))
    data = Dataset.from_list([{"prompt": "Find the area of a triangle with base 10 and height 5.",
                               "tools": json.dumps([DOC]), "ground_truth": json.dumps(TRUTH)}] * 4)
    args = tiny_args(RVPOConfig, tmp_path, advantage_method="rvpo")
    trainer = RVPOTrainer(model=str(tiny_model_dir), reward_funcs=scorer.reward_funcs(), args=args,
                          train_dataset=data)
    trainer.train()
    assert scorer.n_scoring_passes == len(seen) == 2
    logged = [e for e in trainer.state.log_history if "rewards/rules/format/mean" in e]
    assert len(logged) == 2
    for entry, matrix in zip(logged, seen):
        for j, ch in enumerate(SEVEN):
            vals = [row[j] for row in matrix if not math.isnan(row[j])]
            assert entry[f"rewards/{ch}/mean"] == pytest.approx(sum(vals) / len(vals), abs=1e-6)


def test_unscored_channels_reach_trls_logs(tiny_model_dir, tmp_path):
    """A real RVPOTrainer run where one of the two prompts has no ground truth: in every generation batch (both
    prompts, two completions each) half the completions have `rules/function_name` NaN (`no_ground_truth`, by
    the channel definitions), `rules/format` never. TRL logs that per step, and the completions table carries
    the reason per completion."""
    import pandas as pd
    from datasets import Dataset

    from tests.trainer_fixtures import tiny_args
    from trainer.config import RVPOConfig
    from trainer.trainer import RVPOTrainer

    channels = ["rules/format", "rules/function_name"]
    data = Dataset.from_list([
        {"prompt": "Find the area of a triangle with base 10 and height 5.", "tools": json.dumps([DOC]),
         "ground_truth": json.dumps(TRUTH)},
        {"prompt": "Find the area of a triangle.", "tools": json.dumps([DOC]), "ground_truth": json.dumps(None)}])
    args = tiny_args(RVPOConfig, tmp_path, advantage_method="rvpo", log_completions=True)
    trainer = RVPOTrainer(model=str(tiny_model_dir), reward_funcs=rules_reward_funcs(channels, format="hermes"),
                          args=args, train_dataset=data)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "rewards/rules/format/mean" in e]
    assert len(logged) == 2
    for entry in logged:
        assert entry["rewards/rules/format/nan_fraction"] == 0.0
        assert entry["rewards/rules/function_name/nan_fraction"] == pytest.approx(0.5)
        assert entry["rewards/nan_reasons/no_ground_truth"] == pytest.approx(2.0)  # 2 completions x 1 channel
    table = pd.read_parquet(tmp_path / "completions" / "completions_00002.parquet")
    assert len(table) == 4 and sum("base 10" in str(p) for p in table["prompt"]) == 2
    for prompt, unscored in zip(table["prompt"], table["unscored"]):
        expected = None if "base 10" in str(prompt) else "rules/function_name=no_ground_truth"
        assert (pd.isna(unscored) if expected is None else unscored == expected), (prompt, unscored)
