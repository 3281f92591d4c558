"""Adversarial inputs for the rules service: hostile completions must be *scored* (lowest values + a reason), never
raise, never fail the batch; lenient flags must not turn a correct call into a wrong one; ToolRL agrees with
qiancheng0/ToolRL ``rlla.py`` even on odd predictions. Expected values are worked out by hand in each test."""

from __future__ import annotations

import gc
import json
import math
import tracemalloc
import unicodedata

import httpx
import pytest

from services.rules import score_item
from services.rules.toolrl import correctness_from_text, format_reward
from tests.procs import uvicorn_server

F = {"name": "f", "description": "", "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}},
                                                     "required": ["a"]}}
GT = [{"f": {"a": [1]}}]
SEVEN = ("rules/format", "rules/function_name", "rules/required_args", "rules/no_unexpected_args", "rules/arg_types",
         "rules/arg_values", "rules/call_count")


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _openai(arguments) -> dict:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "f", "arguments": arguments}}]}


# ------------------------------------------------------------------------------------- nesting / recursion bombs
DEEP_JSON = 5000  # deeper than json.loads can go at any stack depth
DEEP_OK_JSON = 600  # json.loads manages, but recursive post-processing would not


@pytest.mark.parametrize("label, completion, code", [
    ("hermes, json too deep", '<tool_call>{"name": "f", "arguments": {"a": %s}}</tool_call>' % _deep(DEEP_JSON),
     "invalid_json"),
    ("hermes, nested 600", '<tool_call>{"name": "f", "arguments": {"a": %s}}</tool_call>' % _deep(DEEP_OK_JSON),
     "invalid_json"),
    ("openai string, json too deep", _openai('{"a": %s}' % _deep(DEEP_JSON)), "invalid_json"),
    ("openai string, nested 600", _openai('{"a": %s}' % _deep(DEEP_OK_JSON)), "invalid_json"),
    ("openai dict, nested 600", _openai({"a": json.loads(_deep(DEEP_OK_JSON))}), "invalid_json"),
    ("python, 700-term sum", "[f(a=%s)]" % "+".join(["1"] * 700), "unsupported_value"),
])
def test_nesting_bombs_are_scored_not_raised(label, completion, code):
    """A completion nested too deeply to handle is an unparseable completion: the BFCL verdict decoder_failed,
    0 on the seven rules channels, ToolRL correctness -3 (no ToolRL tags), the parse error as the reason."""
    r = score_item({"id": label, "completion": completion, "tools": [F], "ground_truth": GT})
    assert (r.valid, r.error_type) == (False, "ast_decoder:decoder_failed")
    assert [r.channels[c] for c in SEVEN] == [0.0] * 7
    assert r.reasons["rules/format"].startswith(code)
    assert r.toolrl.correctness == -3.0
    json.loads(r.model_dump_json())  # and it serializes


def test_toolrl_text_too_deep_is_minus_three_like_toolrl():
    """ToolRL's ``customize_correctness_reward_tool`` wraps json.loads in a bare ``except`` -> the -3 floor."""
    text = '<think>t</think>\n<tool_call>\n{"name": "f", "parameters": {"a": %s}}\n</tool_call>' % _deep(DEEP_JSON)
    assert correctness_from_text(text, [{"name": "f", "parameters": {"a": 1}}])[0] == -3.0
    r = score_item({"id": "x", "completion": text, "tools": [F], "ground_truth": GT})
    assert r.error_type == "ast_decoder:decoder_failed" and r.channels["rules/toolrl_correctness"] == -3.0
    assert r.channels["rules/toolrl_format"] == 1.0  # the layout itself is ToolRL's


# ------------------------------------------------------------------------------------- ToolRL edge cases
@pytest.mark.timeout(30)
def test_toolrl_format_on_a_repetition_loop_is_fast_and_zero():
    """A degenerate rollout repeating ``</think>\\n<tool_call>\\n``: 20,000 <tool_call> tags, so ToolRL's format
    rule (each tag exactly once) gives 0. The rule's regex alone is quadratic on this text (minutes at this size);
    the tag counts decide first."""
    text = "<think>" + "</think>\n<tool_call>\n" * 20_000 + "x"
    assert format_reward(text, has_tool_call=True, has_response=False) == 0.0
    assert format_reward(text, has_tool_call=True, has_response=True) == 0.0


def test_toolrl_unhashable_predicted_name_is_minus_three():
    """ToolRL's ``match_score`` builds ``Counter(pred names)``; a name that is a JSON list or object raises
    TypeError inside its bare ``except`` -> -3, whatever the other predicted lines are worth."""
    gt = [{"name": "f", "parameters": {"a": 1}}]
    for odd in ('["g"]', '{"g": 1}'):
        text = ('<think>t</think>\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n'
                '{"name": %s, "parameters": {}}\n</tool_call>' % odd)
        assert correctness_from_text(text, gt)[0] == -3.0


# ------------------------------------------------------------------------------------- lenient flags
def test_unicode_nfc_keeps_an_exact_call_valid_with_decomposed_schema_names():
    """Tool and parameter names written in NFD: the exact call is valid in BFCL mode and must stay valid (all
    channels 1) with ``unicode_nfc`` on, which normalizes both sides - the schema included."""
    fname, pname = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFD", "précis")
    assert fname != unicodedata.normalize("NFC", fname)
    tool = {"name": fname, "parameters": {"type": "dict", "properties": {pname: {"type": "string"}}, "required": [pname]}}
    completion = "<tool_call>" + json.dumps({"name": fname, "arguments": {pname: "oui"}}) + "</tool_call>"
    for nfc in (False, True):
        r = score_item({"id": "x", "completion": completion, "tools": [tool], "ground_truth": [{fname: {pname: ["oui"]}}],
                        "options": {"unicode_nfc": nfc}})
        assert (r.valid, r.error_type) == (True, None), (nfc, r.error)
        assert [r.channels[c] for c in SEVEN] == [1.0] * 7


# ------------------------------------------------------------------------------------- memory
def test_long_string_arguments_are_not_retained():
    """BFCL's string standardization was memoized for every string it saw (65,536 entries, any length): a service
    scoring long free-text arguments kept them all (40 distinct 1 MB arguments -> 80 MB, up to 65,536 of them).
    Scoring must not retain memory in proportion to what it has scored."""
    tool = {"name": "f", "parameters": {"type": "dict", "properties": {"q": {"type": "string"}}, "required": ["q"]}}
    item = {"id": "x", "tools": [tool], "ground_truth": [{"f": {"q": ["hello world"]}}]}
    assert score_item({**item, "completion": "[f(q='Hello, World')]"}).valid  # standardized: equal
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20):
            r = score_item({**item, "completion": f"[f(q='{i}{'y' * 1_000_000}')]"})
            assert r.error_type == "value_error:string"
        del r
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 5_000_000, f"{retained / 1e6:.1f} MB retained after scoring 20 x 1 MB arguments"


# ------------------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with uvicorn_server("services.rules.app:app", tmp_path_factory.mktemp("rules-adv"),
                        {"RVPO_RULES_MAX_BODY_BYTES": "50000"}) as proc:
        yield proc.url


def test_bytes_literal_does_not_fail_the_batch(server):
    """``b'\\xff'`` is a Python literal BFCL reads as ``bytes`` (no schema type is bytes: type_error:simple). Its
    invalid UTF-8 must not make the JSON answer fail: both items are scored, in order."""
    items = [{"id": "ok", "completion": "[f(a=1)]", "tools": [F], "ground_truth": GT},
             {"id": "bytes", "completion": "[f(a=b'\\xff')]", "tools": [F], "ground_truth": GT}]
    json.loads(score_item(items[1]).model_dump_json())
    r = httpx.post(f"{server}/v1/rules/score", json={"items": items}, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["items"]
    assert [(o["id"], o["valid"], o["error_type"]) for o in out] == [("ok", True, None),
                                                                      ("bytes", False, "type_error:simple")]
    assert out[1]["channels"]["rules/arg_types"] == 0.0


def test_chunked_body_without_content_length_is_cut_at_the_limit(server):
    """No Content-Length (chunked upload): the middleware counts the stream; 60 kB > 50 kB limit -> 413, and a small
    chunked body still reaches the endpoint (null, never NaN, for a channel without ground truth)."""
    def body(n_chunks):
        yield b'{"items": [{"id": "x", "completion": "[f(a=1)]", "tools": ' + json.dumps([F]).encode() + b', "pad": "'
        for _ in range(n_chunks):
            yield b" " * 10_000
        yield b'"}]}'

    headers = {"content-type": "application/json"}
    big = httpx.post(f"{server}/v1/rules/score", content=body(6), headers=headers, timeout=30)
    assert big.status_code == 413 and big.json()["detail"][0]["type"] == "too_large"
    small = body(1)
    ok = httpx.post(f"{server}/v1/rules/score", content=small, headers=headers, timeout=30)
    assert ok.status_code == 422  # the body arrived whole and was validated: "pad" is not a RulesItem field
    assert ok.json()["detail"][0]["loc"] == ["body", "items", 0, "pad"]
    good = httpx.post(f"{server}/v1/rules/score", content=iter([json.dumps(
        {"items": [{"id": "x", "completion": "[f(a=1)]", "tools": [F]}]}).encode()]), headers=headers, timeout=30)
    assert good.status_code == 200 and "NaN" not in good.text
    assert good.json()["items"][0]["channels"]["rules/arg_values"] is None
    assert math.isnan(score_item({"id": "x", "completion": "[f(a=1)]", "tools": [F]}).channels["rules/arg_values"])
