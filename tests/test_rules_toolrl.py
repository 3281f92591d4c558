"""ToolRL rewards (qiancheng0/ToolRL rlla.py). Every expected number is worked out by hand in the comment."""

from __future__ import annotations

import pytest

from services.rules import score_item
from services.rules.toolrl import correctness_from_calls, correctness_from_text, format_reward, match_score


def c(name, **params):
    return {"name": name, "parameters": params}


@pytest.mark.parametrize(
    "gt, pred, expected",
    [
        ([c("a", x=1, y=2)], [c("a", x=1, y=2)], 3.0),  # exact match
        # names 1 + keys 1 + one equal value = 3 of S_max = 1 + (1 + 2) = 4 -> 6 * 3 / 4 - 3
        ([c("a", x=1, y=2)], [c("a", x=1, y=3)], 1.5),
        # names Jaccard 0, no same-name prediction -> 0 of 4 -> -3
        ([c("a", x=1, y=2)], [c("b", x=1, y=2)], -3.0),
        # names {a,b} vs {a}: 1 / (2 + 1 - 1) = 0.5; a: keys 1 + value 1 = 2; S_max = 1 + 2 + 2 = 5 -> 6 * 2.5 / 5 - 3
        ([c("a", x=1), c("b", y=2)], [c("a", x=1)], 0.0),
        # keys [x] vs [x, z]: 1 / (1 + 2 - 1) = 0.5, value 1, names 1 -> 2.5 of S_max 3 -> 6 * 2.5 / 3 - 3
        ([c("a", x=1)], [c("a", x=1, z=0)], 2.0),
        # frequency-aware names [a, a] vs [a]: 1 / (2 + 1 - 1) = 0.5; first a: 1 + 1 = 2; S_max = 1 + 2 + 2 = 5
        ([c("a", x=1), c("a", x=2)], [c("a", x=1)], 0.0),
        # a function without parameters: keys [] == [] -> 1; names 1 -> 2 of S_max 1 + 1 = 2 -> but exact -> 3
        ([c("a")], [c("a")], 3.0),
        # empty prediction: names [a] vs [] -> 0 -> -3
        ([c("a", x=1)], [], -3.0),
    ],
)
def test_correctness_by_hand(gt, pred, expected):
    assert correctness_from_calls(gt, pred) == pytest.approx(expected)


def test_match_score_is_frequency_aware():
    assert match_score(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(2 / 4)
    assert match_score([], []) == 1.0 and match_score(["a"], []) == 0.0


GT = [c("get_weather", city="Paris", unit="C")]
CALL = '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "C"}}'


@pytest.mark.parametrize(
    "text, expected, reason_prefix",
    [
        (f"<think>x</think>\n<tool_call>\n{CALL}\n</tool_call>", 3.0, None),
        (f"<think>x</think>\n{CALL}", -3.0, "toolrl_missing_tags"),  # tags missing
        (f"<think>x</think>\n<tool_call>\n{CALL}\nnot json\n</tool_call>", -3.0, "toolrl_bad_json"),
        (f"<think>x</think>\n<tool_call>\n{CALL}\n\n</tool_call>", 3.0, None),  # strip() removes the blank line
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', -3.0, "toolrl_bad_call"),
        ('<tool_call>\n{"name": "x", "arguments": {}}\n</tool_call>', -3.0, None),  # ToolRL never reads the args
    ],
)
def test_correctness_on_raw_text(text, expected, reason_prefix):
    value, reason = correctness_from_text(text, GT)
    assert value == pytest.approx(expected)
    assert (reason is None) if reason_prefix is None else reason.startswith(reason_prefix)


def test_no_call_in_ground_truth_gives_zero():
    assert correctness_from_text("anything at all", []) == (0.0, None)


@pytest.mark.parametrize(
    "text, has_call, has_response, expected",
    [
        (f"<think>x</think>\n<tool_call>\n{CALL}\n</tool_call>", True, False, 1.0),
        (f"<think>x</think>\n<tool_call>{CALL}</tool_call>", True, False, 0.0),  # needs the newlines
        (f"<think>x</think>\n<tool_call>\n{CALL}\n</tool_call>\n<tool_call>\n{CALL}\n</tool_call>", True, False, 0.0),
        (f"<think>x</think>\n<tool_call>\n{CALL}\n</tool_call>\n<response>ok</response>", True, False, 0.0),
        (f"<think>x</think>\n<tool_call>\n{CALL}\n</tool_call>\n<response>ok</response>", True, True, 1.0),
        ("<think>x</think>\n<response>ok</response>", False, True, 1.0),
        ("<response>ok</response>", False, True, 0.0),
        ("<think>just thinking</think>", False, False, 1.0),
        (f"preamble <think>x</think>\n<tool_call>\n{CALL}\n</tool_call>", True, False, 0.0),  # ^ anchored
    ],
)
def test_format_reward_by_layout(text, has_call, has_response, expected):
    assert format_reward(text, has_call, has_response) == expected


WEATHER = {"name": "get_weather", "parameters": {"type": "dict", "properties": {
    "city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}


def score(completion, gt, **kw):
    return score_item({"id": "w", "completion": completion, "tools": [WEATHER], "ground_truth": gt, **kw})


def test_channels_carry_the_toolrl_values():
    gt = [{"get_weather": {"city": ["Paris"], "unit": ["C", ""]}}]  # ToolRL ground truth: first values
    r = score(f"<think>x</think>\n<tool_call>\n{CALL}\n</tool_call>", gt)
    assert r.format == "toolrl" and r.valid
    assert (r.toolrl.format, r.toolrl.correctness) == (1.0, 3.0)
    assert (r.channels["rules/toolrl_format"], r.channels["rules/toolrl_correctness"]) == (1.0, 3.0)
    # hermes text: ToolRL's matching on the parsed calls. unit omitted: keys [city, unit] vs [city] -> 1/2,
    # value 1, names 1 -> 2.5 of S_max 1 + (1 + 2) = 4 -> 6 * 2.5 / 4 - 3 = 0.75; the format regex fails
    r = score('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', gt)
    assert r.valid and r.toolrl.correctness == pytest.approx(0.75) and r.toolrl.format == 0.0
    assert r.reasons["rules/toolrl_format"].startswith("toolrl_format")


def test_toolrl_response_option_and_no_call_answers():
    gt = [{"get_weather": {"city": ["Paris"]}}]
    both = '<think>x</think>\n<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n</tool_call>\n<response>Checking.</response>'
    assert score(both, gt).toolrl.format == 0.0
    assert score(both, gt, options={"toolrl_response": True}).toolrl.format == 1.0
    r = score("<think>no tool fits</think>\n<response>I cannot.</response>", [])
    assert (r.toolrl.format, r.toolrl.correctness) == (1.0, 0.0)
