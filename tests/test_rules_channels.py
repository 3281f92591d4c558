"""Reward channels: fractional partial credit, reasons naming the first failure, the lowest values for an
unparseable completion, NaN only without ground truth. Expected values are worked out by hand."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from services.rules import CHANNELS, RulesResult, score_item

PLAY = {"name": "spotify.play", "parameters": {"type": "dict", "properties": {
    "artist": {"type": "string"}, "duration": {"type": "integer"}}, "required": ["artist", "duration"]}}
PLAY_GT = [{"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
           {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}}]
A = {"name": "a", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}
B = {"name": "b", "parameters": {"type": "dict", "properties": {"y": {"type": "integer"}}, "required": ["y"]}}


def score(completion, tools, gt, **kw):
    return score_item({"id": "c", "completion": completion, "tools": tools, "ground_truth": gt, **kw})


def test_parallel_partial_credit():
    r = score("[spotify.play(artist='Maroon 5', duration=15), "
              "spotify.play(artist='Taylor Swift', duration=25, loud=True)]", [PLAY], PLAY_GT)
    # BFCL: ground-truth 0 matches neither call (call 0: artist; call 1: duration comes before loud)
    assert (r.valid, r.error_type) == (False, "parallel_function_checker_no_order:cannot_find_match")
    assert "model call 0: value_error:string" in r.error and "model call 1: value_error:others" in r.error
    # pairs: gt1-call0 perfect; gt0-call1: args {artist, duration, loud}, loud not in schema;
    # value slots {artist, duration, loud}: only artist right -> 1/3. S = 2.
    ch = r.channels
    assert ch["rules/format"] == 1.0 and ch["rules/call_count"] == 1.0
    assert ch["rules/function_name"] == 1.0 and ch["rules/required_args"] == 1.0
    assert ch["rules/no_unexpected_args"] == pytest.approx((1 + 2 / 3) / 2)
    assert ch["rules/arg_types"] == 1.0
    assert ch["rules/arg_values"] == pytest.approx((1 + 1 / 3) / 2)
    assert r.reasons["rules/no_unexpected_args"] == "unexpected_param: spotify.play.loud (not in the schema)"
    assert r.reasons["rules/arg_values"].startswith("value_error:others: spotify.play.duration=25")
    assert set(r.reasons) == {"rules/no_unexpected_args", "rules/arg_values", "rules/toolrl_format",
                              "rules/toolrl_correctness"}
    # ToolRL: names equal -> 1; gt0 best is call 1: keys 2/3 + artist 1; gt1 -> call 0: 1 + 2; S_max = 1 + 3 + 3
    assert ch["rules/toolrl_correctness"] == pytest.approx(6 * (1 + 5 / 3 + 3) / 7 - 3)


def test_an_extra_call_halves_the_per_call_channels():
    r = score("[a(x=1), a(x=1)]", [A], [{"a": {"x": [1]}}])
    assert r.error_type == "simple_function_checker:wrong_count"
    for name in ("rules/function_name", "rules/required_args", "rules/no_unexpected_args", "rules/arg_types",
                 "rules/arg_values", "rules/call_count"):
        assert r.channels[name] == 0.5, name
    assert r.reasons["rules/function_name"].startswith("extra_call: model call 1")
    assert r.reasons["rules/call_count"] == "wrong_count: 2 call(s), expected 1"


def test_a_missing_call_counts_zero():
    r = score("[a(x=1)]", [A], [{"a": {"x": [1]}}, {"a": {"x": [2]}}])
    assert r.error_type == "parallel_function_checker_no_order:wrong_count"
    assert r.channels["rules/arg_values"] == 0.5 and r.channels["rules/call_count"] == 0.5
    assert r.reasons["rules/arg_values"].startswith("missing_call: no model call for ground-truth call 1")


def test_wrong_but_existing_function_keeps_schema_credit():
    r = score("[b(y=2)]", [A, B], [{"a": {"x": [1]}}])
    assert (r.valid, r.error_type) == (False, "simple_function_checker:wrong_func_name")
    ch = r.channels
    assert (ch["rules/function_name"], ch["rules/arg_values"]) == (0.0, 0.0)
    # b's own schema is satisfied: y required and present, in the schema, an integer
    assert (ch["rules/required_args"], ch["rules/no_unexpected_args"], ch["rules/arg_types"]) == (1.0, 1.0, 1.0)
    assert r.reasons["rules/function_name"] == "wrong_func_name: 'b', expected 'a'"


def test_unknown_function_gets_nothing():
    r = score("[zzz(x=1)]", [A], [{"a": {"x": [1]}}])
    assert r.error_type == "simple_function_checker:wrong_func_name"
    assert [r.channels[n] for n in CHANNELS[1:6]] == [0.0] * 5 and r.channels["rules/call_count"] == 1.0
    assert r.reasons["rules/arg_types"] == "unknown_function: 'zzz'"


@pytest.mark.parametrize(
    "completion, fmt, code",
    [
        ("<tool_call>{'name': 'a'}</tool_call>", "hermes", "invalid_json"),
        ("[a(1)]", "python", "positional_args"),
        ("I think x is 1.", "auto", "no_tool_call"),
    ],
)
def test_unparseable_completion_scores_the_lowest_values(completion, fmt, code):
    r = score(completion, [A], [{"a": {"x": [1]}}], format=fmt)
    assert (r.valid, r.error_type, r.calls) == (False, "ast_decoder:decoder_failed", [])
    assert [r.channels[n] for n in CHANNELS[:7]] == [0.0] * 7
    assert all(r.reasons[n].startswith(code + ":") for n in CHANNELS[:7])
    assert r.channels["rules/toolrl_format"] == 0.0
    assert r.channels["rules/toolrl_correctness"] == -3.0 and r.reasons["rules/toolrl_correctness"].startswith(code)


def test_text_without_a_call_when_one_is_expected():
    r = score("The weather is fine.", [A], [{"a": {"x": [1]}}], format="hermes")
    assert (r.valid, r.error_type) == (False, "simple_function_checker:wrong_count")
    assert r.channels["rules/format"] == 0.0 and r.reasons["rules/format"].startswith("no_tool_call")
    assert r.channels["rules/call_count"] == 0.0 and r.channels["rules/arg_values"] == 0.0


def test_no_call_expected():
    r = score("I cannot help with that.", [A], [])
    assert r.valid and [r.channels[n] for n in CHANNELS[:7]] == [1.0] * 7
    assert r.channels["rules/toolrl_correctness"] == 0.0  # ToolRL: no call in the ground truth -> 0
    r = score("[a(x=]", [A], [], format="python")  # a broken call attempt: still no call, but bad format
    assert r.valid and r.channels["rules/format"] == 0.0 and r.reasons["rules/format"].startswith("syntax_error")
    r = score("[a(x=1)]", [A], [])
    assert r.error_type == "irrelevance_error:decoder_success"
    assert r.channels["rules/function_name"] == 0.0 and r.channels["rules/required_args"] == 1.0


def test_without_ground_truth_the_ground_truth_channels_are_nan():
    r = score("[a(x='one'), b()]", [A, B], None)
    assert (r.valid, r.error_type) == (False, "rules:no_ground_truth")
    for name in ("rules/function_name", "rules/arg_values", "rules/call_count", "rules/toolrl_format",
                 "rules/toolrl_correctness"):
        assert math.isnan(r.channels[name]) and r.reasons[name].startswith("no_ground_truth")
    # schema channels over the two calls: a: x present, typed wrong; b: y missing, no args
    assert r.channels["rules/required_args"] == 0.5
    assert r.channels["rules/no_unexpected_args"] == 1.0
    assert r.channels["rules/arg_types"] == 0.5
    assert r.reasons["rules/arg_types"].startswith("type_error:simple: a.x")
    wire = json.loads(r.model_dump_json())
    assert wire["channels"]["rules/function_name"] is None and wire["toolrl"]["correctness"] is None
    back = RulesResult.model_validate(wire)
    assert math.isnan(back.channels["rules/function_name"]) and math.isnan(back.toolrl.correctness)
    r = score("no calls here", [A], None, format="hermes")
    assert math.isnan(r.channels["rules/required_args"]) and r.reasons["rules/required_args"].startswith("no_calls")


def test_all_channels_are_present_and_in_range():
    r = score("[a(x=2)]", [A], [{"a": {"x": [1]}}])
    assert list(r.channels) == list(CHANNELS)
    assert all(0.0 <= r.channels[n] <= 1.0 for n in CHANNELS[:8])
    assert -3.0 <= r.channels["rules/toolrl_correctness"] <= 3.0


@pytest.mark.parametrize(
    "item, field",
    [
        ({"tools": [{"name": "a", "parameters": {"type": "dict", "properties": {"x": {"type": "complex"}}}}]}, "tools"),
        ({"ground_truth": [{"nope": {"x": [1]}}]}, "ground_truth"),
        ({"ground_truth": [{"a": {"x": [1]}, "b": {"y": [1]}}]}, "ground_truth"),
        ({"mode": "serial"}, "mode"),
        ({"format": "xml"}, "format"),
        ({"options": {"strict": True}}, "options"),
        ({"completion": {"role": "user", "content": "x"}}, "completion"),
    ],
)
def test_bad_items_raise_naming_the_field(item, field):
    base = {"id": "x", "completion": "[a(x=1)]", "tools": [A], "ground_truth": [{"a": {"x": [1]}}]}
    with pytest.raises(ValidationError) as exc:
        score_item({**base, **item})
    assert any(e["loc"][0] == field for e in exc.value.errors()), exc.value.errors()
