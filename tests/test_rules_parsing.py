"""Completion parsing: every format to ``[{name, arguments}]``, machine-readable errors, auto-detection, and the
fast Python-call reader agreeing with the ast reader. Expected values are written out by hand."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.rules.parsing import ParseError, parse_completion, parse_python

EXPECTED = [{"name": "calc.area", "arguments": {"base": 10, "unit": "cm"}}, {"name": "g", "arguments": {}}]


@pytest.mark.parametrize(
    "completion, fmt",
    [
        ("[calc.area(base=10, unit='cm'), g()]", "python"),
        ('calc.area(base=10, unit="cm"), g()', "python"),  # BFCL adds the brackets
        ("```python\n[calc.area(base=10, unit='cm'), g()]\n```", "python"),
        (
            '<tool_call>\n{"name": "calc.area", "arguments": {"base": 10, "unit": "cm"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>',
            "hermes",
        ),
        (
            '<think>need both</think>\n<tool_call>\n{"name": "calc.area", "parameters": {"base": 10, "unit": "cm"}}\n'
            '{"name": "g", "parameters": {}}\n</tool_call>',
            "toolrl",
        ),
        (
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "calc.area", "arguments": '{"base": 10, "unit": "cm"}'}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ]},
            "openai",
        ),
    ],
)
def test_each_format_declared_and_detected(completion, fmt):
    for declared in (fmt, "auto"):
        parsed = parse_completion(completion, declared)
        assert parsed.ok, parsed.error
        assert parsed.format == fmt
        assert parsed.calls == EXPECTED


def test_hermes_block_with_a_json_list_and_string_arguments():
    text = '<tool_call>[{"name": "f", "arguments": "{\\"a\\": 1}"}, {"name": "g", "arguments": {"b": [1, 2]}}]</tool_call>'
    assert parse_completion(text, "hermes").calls == [
        {"name": "f", "arguments": {"a": 1}},
        {"name": "g", "arguments": {"b": [1, 2]}},
    ]


def test_python_values_follow_bfcl_resolution():
    calls = parse_python("[f(a=-3, b=3 * 10 ** 2, c=x, d=now(), e=h(z=1), t=(1, 2), n=None, s={'k': [True]})]")
    assert calls == [{"name": "f", "arguments": {
        "a": -3, "b": 300, "c": "x", "d": "now()", "e": {"h": {"z": 1}}, "t": (1, 2), "n": None, "s": {"k": [True]},
    }}]


@pytest.mark.parametrize(
    "completion, fmt, code",
    [
        ("[calculate_triangle_area({'base': 10, 'height': 5})]", "python", "positional_args"),
        ("[f(1, b=2)]", "python", "positional_args"),
        ("[f(**kw)]", "python", "kwargs_unpacking"),
        ("[f(a=1, a=2)]", "python", "duplicate_argument"),
        ("[f(a=1), 3]", "python", "not_a_call"),
        ("[f(a=1]", "python", "syntax_error"),
        ("[f(a=f'{x}')]", "python", "unsupported_value"),
        ("[f(a=2 ** 100000)]", "python", "unsupported_value"),
        ("[f()(a=1)]", "python", "bad_function_name"),
        ("I cannot help with that.", "python", "no_tool_call"),
        ("I cannot help with that.", "auto", "no_tool_call"),
        ('<tool_call>{"name": "f", "arguments": {"a": 1}}', "hermes", "unclosed_tag"),
        ("<tool_call>{'name': 'f'}</tool_call>", "hermes", "invalid_json"),
        ('<tool_call>{"arguments": {}}</tool_call>', "hermes", "bad_call_object"),
        ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "hermes", "bad_call_object"),
        ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}, "openai", "invalid_json"),
        ({"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}, "openai", "bad_call_object"),
        ("just text", "openai", "not_openai_message"),
        ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}, "python",
         "wrong_format"),
        ({"role": "assistant", "content": "x"}, "python", "no_tool_call"),  # parsed from its text
    ],
)
def test_unparseable_completions_get_machine_readable_codes(completion, fmt, code):
    parsed = parse_completion(completion, fmt)
    assert not parsed.ok and parsed.error_code == code and parsed.calls == []
    assert parsed.error  # details for the reason string


def test_positional_error_names_the_function():
    with pytest.raises(ParseError) as exc:
        parse_python("[calculate_triangle_area({'base': 10, 'height': 5})]")
    assert exc.value.code == "positional_args" and "calculate_triangle_area" in exc.value.message


def test_no_call_is_not_an_error_in_tagged_and_openai_formats():
    assert parse_completion("The answer is 4.", "hermes").calls == []
    assert parse_completion({"role": "assistant", "content": "4"}, "auto").calls == []
    assert parse_completion("[]", "python").calls == []


def test_unknown_format_is_a_programming_error():
    with pytest.raises(ValueError):
        parse_completion("x", "xml")


# ---- the fast Python-call reader must agree with the ast reader ------------------------------------------------

_names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s not in {"if", "in", "is", "or", "as"})
_scalars = (
    st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
    | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.integers(0, 9), inner, max_size=3),
    max_leaves=8,
)
_call = st.tuples(
    st.lists(_names, min_size=1, max_size=3).map(".".join),
    st.dictionaries(_names, _values, max_size=4),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_call, max_size=3), st.sampled_from([", ", ",", " ,\n "]))
def test_fast_reader_equals_ast_reader(calls, sep):
    text = "[" + sep.join(f"{n}({sep.join(f'{k}={v!r}' for k, v in a.items())})" for n, a in calls) + "]"
    try:
        slow = parse_python(text, fast=False)
    except ParseError as exc:
        with pytest.raises(ParseError) as fast_exc:
            parse_python(text)
        assert fast_exc.value.code == exc.code
        return
    fast = parse_python(text)
    assert fast == slow
    assert [type(v) for c in fast for v in c["arguments"].values()] == [type(v) for c in slow for v in c["arguments"].values()]


@pytest.mark.parametrize(
    "text",
    ["[f(a=007)]", "[f(a=00)]", "[f(a=1_000)]", '[f(a="x" "y")]', "[f(a={1, 2})]", "[f(a=\u00a01)]",
     "[f(a='it\\'s')]", "[f(a=0x1F)]", "[f(a=1e5, b=.5, c=5.)]", "[f(a=True, b=None, c=(1))]", "[f(lambda=1)]",
     "[f(a=1)][0]", "[f(a=-x)]", "[f(a=[1,])]", "[f(a={'k': 1,},)]", "[f(a=1j)]"],
)
def test_fast_reader_edge_cases_agree(text):
    def run(fast):
        try:
            return parse_python(text, fast=fast)
        except ParseError as exc:
            return exc.code

    assert run(True) == run(False)


def test_openai_arguments_may_be_an_object_and_json_text_message():
    msg = {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}
    assert parse_completion(msg, "openai").calls == [{"name": "f", "arguments": {"a": 1}}]
    assert parse_completion(json.dumps(msg), "openai").calls == [{"name": "f", "arguments": {"a": 1}}]


def test_message_without_tool_calls_is_parsed_from_its_text():
    """A chat message whose tool call is written in its content (Hermes / Python text, as many servers return
    them) is parsed from that text in auto mode; in explicit openai mode it has zero calls."""
    from services.rules.parsing import parse_completion

    msg = {"role": "assistant", "content": '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'}
    parsed = parse_completion(msg, "auto")
    assert (parsed.format, parsed.calls) == ("hermes", [{"name": "f", "arguments": {"a": 1}}])
    assert parse_completion({"role": "assistant", "content": "[g(b='x')]"}).calls == [
        {"name": "g", "arguments": {"b": "x"}}]
    assert parse_completion(msg, "openai").calls == []
