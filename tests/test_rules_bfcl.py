"""BFCL AST-checker semantics. Every expected verdict / error type below is derived by hand from the rules of
``bfcl_eval/eval_checker/ast_eval/ast_checker.py`` (see services/rules/bfcl.py); none is copied from output.

Part 1: the cases from public bug reports named in the issue. Part 2: every record of rvpo/data/bfcl_*: the reference
call (first allowed value of every argument) rendered in each format is valid, and each mutation gets the error
type the rules give.
"""

from __future__ import annotations

import copy
import json

import pytest
from pydantic import ValidationError

from rvpo.data import DATA_DIR
from services.rules import score_item

DATA = DATA_DIR


def tool(name: str, props: dict, required: list[str]) -> dict:
    return {"name": name, "description": "", "parameters": {"type": "dict", "properties": props, "required": required}}


def run(completion, tools, gt, **kw):
    options = kw.pop("options", {})
    return score_item({"id": "t", "completion": completion, "tools": tools, "ground_truth": gt, "options": options, **kw})


# ------------------------------------------------------------------------------------------- issue cases

AVG = tool("calculate_average", {"numbers": {"type": "array", "items": {"type": "float"}}}, ["numbers"])


def test_ints_in_a_float_array_are_a_nested_type_error_unless_the_flag_is_set():
    gt = [{"calculate_average": {"numbers": [[12.0, 15.0, 18.0]]}}]
    # BFCL: the outer list passes, the items are checked one level deep without int->float -> type_error:nested
    r = run("[calculate_average(numbers=[12, 15, 18])]", [AVG], gt)
    assert (r.valid, r.error_type) == (False, "type_error:nested")
    assert r.channels["rules/arg_types"] == 0.0 and r.reasons["rules/arg_types"].startswith("type_error:nested")
    r = run("[calculate_average(numbers=[12, 15, 18])]", [AVG], gt, options={"nested_int_to_float": True})
    assert (r.valid, r.error_type) == (True, None)
    # floats in the array were always fine
    assert run("[calculate_average(numbers=[12.0, 15.0, 18.0])]", [AVG], gt).valid


def test_simple_python_82_from_the_sample_is_the_same_case():
    q = json.loads((DATA / "bfcl_simple_python_sample.jsonl").read_text().splitlines()[54])
    a = json.loads((DATA / "bfcl_simple_python_possible_answer.jsonl").read_text().splitlines()[54])
    assert q["id"] == a["id"] == "simple_python_82"
    text = "[calculate_average(numbers=[12, 15, 18, 20, 21, 26, 30])]"
    assert run(text, q["function"], a["ground_truth"]).error_type == "type_error:nested"
    assert run(text, q["function"], a["ground_truth"], options={"nested_int_to_float": True}).valid


SCALARS = [
    tool("f", {"x": {"type": "float"}}, ["x"]),
    tool("g", {"n": {"type": "integer"}}, ["n"]),
    tool("h", {"flag": {"type": "boolean"}}, ["flag"]),
]


@pytest.mark.parametrize(
    "completion, gt, expected",
    [
        ("[f(x=5)]", [{"f": {"x": [5.0]}}], (True, None)),  # int accepted for a top-level float
        ("[f(x='5')]", [{"f": {"x": [5.0]}}], (False, "type_error:simple")),
        ("[f(x=5.0)]", [{"f": {"x": [5.0]}}], (True, None)),
        ("[g(n=5.0)]", [{"g": {"n": [5]}}], (False, "type_error:simple")),  # no float for an integer
        ("[h(flag=1)]", [{"h": {"flag": [True]}}], (False, "type_error:simple")),  # no int for a boolean
        ("[g(n=True)]", [{"g": {"n": [1]}}], (False, "type_error:simple")),  # no boolean for an integer
        ('<tool_call>{"name": "f", "arguments": {"x": "5"}}</tool_call>', [{"f": {"x": [5.0]}}], (False, "type_error:simple")),
        ('<tool_call>{"name": "f", "arguments": {"x": 5}}</tool_call>', [{"f": {"x": [5.0]}}], (True, None)),
    ],
)
def test_float_int_bool_typing(completion, gt, expected):
    r = run(completion, SCALARS, gt)
    assert (r.valid, r.error_type) == expected


TRIANGLE = tool(
    "calculate_triangle_area",
    {"base": {"type": "integer"}, "height": {"type": "integer"}, "unit": {"type": "string", "default": "units"}},
    ["base", "height"],
)


def test_unit_with_a_schema_default():
    text = "[calculate_triangle_area(base=10, height=5)]"
    r = run(text, [TRIANGLE], [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}])
    assert (r.valid, r.error_type) == (True, None)  # "" in the list: may be omitted
    strict = [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units"]}}]
    r = run(text, [TRIANGLE], strict)
    assert (r.valid, r.error_type) == (False, "simple_function_checker:missing_optional")
    # arg_values over {base, height, unit}: base ok, height ok, unit omitted without "" -> 2/3
    assert r.channels["rules/arg_values"] == pytest.approx(2 / 3)
    assert r.reasons["rules/arg_values"].startswith("missing_optional")
    r = run(text, [TRIANGLE], strict, options={"fill_defaults": True})
    assert (r.valid, r.error_type) == (True, None)


def test_scalar_values_are_compared():
    gt = [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
    r = run("[calculate_triangle_area(base=999, height=5)]", [TRIANGLE], gt)
    assert (r.valid, r.error_type) == (False, "value_error:others")
    # slots {base, height, unit}: base wrong, height right, unit omitted with "" -> 2/3
    assert r.channels["rules/arg_values"] == pytest.approx(2 / 3)
    assert r.reasons["rules/arg_values"].startswith("value_error:others")
    assert r.channels["rules/arg_types"] == 1.0 and r.channels["rules/function_name"] == 1.0


def test_positional_arguments_are_a_clear_parse_error():
    gt = [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
    r = run("[calculate_triangle_area({'base': 10, 'height': 5})]", [TRIANGLE], gt)
    assert (r.valid, r.error_type) == (False, "ast_decoder:decoder_failed")
    assert "positional_args" in r.error and r.calls == []
    for name in ("rules/format", "rules/function_name", "rules/required_args", "rules/no_unexpected_args",
                 "rules/arg_types", "rules/arg_values", "rules/call_count"):
        assert r.channels[name] == 0.0 and r.reasons[name].startswith("positional_args:")
    assert r.toolrl.correctness == -3.0 and r.channels["rules/toolrl_correctness"] == -3.0


def test_two_call_answer_is_parallel_whatever_the_item_is_called():
    play = tool("spotify.play", {"artist": {"type": "string"}, "duration": {"type": "integer"}}, ["artist", "duration"])
    gt = [{"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
          {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}}]
    reversed_order = "[spotify.play(artist='Maroon 5', duration=15), spotify.play(artist='Taylor Swift', duration=20)]"
    for item_id in ("simple_7", "multiple_3", "live_simple_1"):
        r = score_item({"id": item_id, "completion": reversed_order, "tools": [play], "ground_truth": gt})
        assert (r.valid, r.error_type) == (True, None)  # the simple checker would say wrong_count
    r = run("[spotify.play(artist='Maroon 5', duration=15), spotify.play(artist='Taylor Swift', duration=25)]", [play], gt)
    assert (r.valid, r.error_type) == (False, "parallel_function_checker_no_order:cannot_find_match")
    assert "value_error:others" in r.error
    r = run("[spotify.play(artist='Maroon 5', duration=15)]", [play], gt)
    assert r.error_type == "parallel_function_checker_no_order:wrong_count"
    with pytest.raises(ValidationError, match="mode"):
        run(reversed_order, [play], gt, mode="simple")


# ------------------------------------------------------------------------------------------- more hand cases

EVENT = tool(
    "find_event",
    {
        "date": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "where": {"type": "dict", "properties": {}},
        "guests": {"type": "array", "items": {"type": "dict"}},
        "note": {"type": "string"},
    },
    ["date"],
)
EVENT_GT = [{"find_event": {
    "date": ["April 1, 2024"],
    "tags": [["Jazz", "live-music"], ""],
    "where": [{"city": ["New York", "NYC"], "state": ["NY", ""]}, ""],
    "guests": [[{"name": ["Ann"]}], ""],
}}]


@pytest.mark.parametrize(
    "args, expected",
    [
        ("date='april 1 2024'", (True, None)),  # standardize: drop " ,./-_*^", lowercase
        ("date='April 2, 2024'", (False, "value_error:string")),
        ("date='APRIL 1,2024', tags=['jazz', 'Live Music']", (True, None)),  # list items standardized too
        ("date='April 1, 2024', tags=['Jazz']", (False, "value_error:list/tuple")),
        ("date='April 1, 2024', tags=[]", (True, None)),  # BFCL quirk: "" iterates as the empty list
        ("date='April 1, 2024', where={'city': 'nyc'}", (True, None)),  # state may be omitted
        ("date='April 1, 2024', where={'city': 'LA'}", (False, "value_error:dict_value")),
        ("date='April 1, 2024', where={'city': 'NYC', 'zip': 1}", (False, "value_error:dict_key")),
        ("date='April 1, 2024', where={'state': 'NY'}", (False, "value_error:dict_key")),  # city missing
        ("date='April 1, 2024', guests=[{'name': 'ann'}]", (True, None)),
        # list_dict_checker returns the error of the LAST candidate: here "" (length 0 != 1) -> list_dict_count
        ("date='April 1, 2024', guests=[{'name': 'Bo'}]", (False, "value_error:list_dict_count")),
        ("date='April 1, 2024', guests=[{'name': 'Ann'}, {'name': 'Ann'}]", (False, "value_error:list_dict_count")),
        ("date='April 1, 2024', note='x'", (False, "simple_function_checker:unexpected_param")),  # not in answer
        ("date='April 1, 2024', extra=1", (False, "simple_function_checker:unexpected_param")),  # not in schema
        ("tags=['Jazz', 'live-music']", (False, "simple_function_checker:missing_required")),
        ("date=20240401", (False, "type_error:simple")),
        # type_checker: the "" candidate is not a list, so the nested check passes on it; the value check fails
        ("date='April 1, 2024', tags=['Jazz', 3]", (False, "value_error:list/tuple")),
    ],
)
def test_string_list_dict_rules(args, expected):
    r = run(f"[find_event({args})]", [EVENT], EVENT_GT)
    assert (r.valid, r.error_type) == expected


def test_first_failure_in_bfcl_order_decides_the_error_type():
    # missing_required is checked before any argument; arguments in the model's order after that
    r = run("[find_event(extra=1, tags=['Jazz'])]", [EVENT], EVENT_GT)
    assert r.error_type == "simple_function_checker:missing_required"
    r = run("[find_event(date='x', extra=1)]", [EVENT], EVENT_GT)
    assert r.error_type == "value_error:string"
    r = run("[find_event(extra=1, date='x')]", [EVENT], EVENT_GT)
    assert r.error_type == "simple_function_checker:unexpected_param"


def test_unicode_nfc_flag():
    unit = tool("density", {"unit": {"type": "string"}}, ["unit"])
    gt = [{"density": {"unit": ["kg/m\u00b3", "caf\u00e9"]}}]
    decomposed = "[density(unit='cafe\u0301')]"  # e + combining acute: NFC gives \u00e9
    assert run(decomposed, [unit], gt).error_type == "value_error:string"
    assert run(decomposed, [unit], gt, options={"unicode_nfc": True}).valid


def test_irrelevance_ground_truth_expects_no_call():
    r = run("I can't do that with these tools.", [TRIANGLE], [])
    assert (r.valid, r.error_type) == (True, None)
    r = run("[calculate_triangle_area(base=1, height=2)]", [TRIANGLE], [])
    assert (r.valid, r.error_type) == (False, "irrelevance_error:decoder_success")
    assert r.channels["rules/function_name"] == 0.0 and r.channels["rules/call_count"] == 0.0


def test_openai_tool_docs_with_json_schema_types():
    oa = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "number"}, "o": {"type": "object"}, "s": {"type": ["string", "null"]}}, "required": ["x"]}}}
    r = run('<tool_call>{"name": "f", "arguments": {"x": 2, "o": {"k": 1}, "s": "a"}}</tool_call>', [oa],
            [{"f": {"x": [2.0], "o": [{"k": [1]}], "s": ["A"]}}])
    assert (r.valid, r.error_type) == (True, None)


# ------------------------------------------------------------------------------------------- all sample records

MODE = {"simple_python": "simple", "multiple": "multiple", "parallel": "parallel"}
SCALAR_TYPES = {"integer": int, "float": float, "string": str, "boolean": bool}


def load_records() -> list[tuple[str, dict, dict]]:
    out = []
    for cat in MODE:
        qs = (DATA / f"bfcl_{cat}_sample.jsonl").read_text().splitlines()
        ans = (DATA / f"bfcl_{cat}_possible_answer.jsonl").read_text().splitlines()
        assert len(qs) == len(ans)
        for ql, al in zip(qs, ans):
            q, a = json.loads(ql), json.loads(al)
            assert q["id"] == a["id"]
            out.append((cat, q, a))
    return out


RECORDS = load_records()


def first_value(allowed):
    v = allowed[0]
    if isinstance(v, dict):  # dict answers hold allowed lists per key
        return {k: a[0] for k, a in v.items() if a[0] != ""}
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return [first_value([d]) for d in v]
    return v


def reference(gt):
    return [{"name": n, "arguments": {p: first_value(a) for p, a in params.items() if a[0] != ""}}
            for call in gt for n, params in call.items()]


def as_python(calls):
    return "[" + ", ".join(f"{c['name']}(" + ", ".join(f"{k}={v!r}" for k, v in c["arguments"].items()) + ")"
                           for c in calls) + "]"


def as_hermes(calls):
    return "\n".join(f'<tool_call>\n{json.dumps({"name": c["name"], "arguments": c["arguments"]})}\n</tool_call>'
                     for c in calls)


def as_toolrl(calls):
    lines = "\n".join(json.dumps({"name": c["name"], "parameters": c["arguments"]}) for c in calls)
    return f"<think>the user wants this</think>\n<tool_call>\n{lines}\n</tool_call>"


def as_openai(calls):
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
        for i, c in enumerate(calls)]}


RENDER = {"python": as_python, "hermes": as_hermes, "toolrl": as_toolrl, "openai": as_openai}


@pytest.mark.parametrize("fmt", list(RENDER))
def test_every_reference_call_is_valid_in_every_format(fmt):
    assert len(RECORDS) == 100
    for cat, q, a in RECORDS:
        for mode in (MODE[cat], "auto"):
            r = score_item({"id": q["id"], "completion": RENDER[fmt](reference(a["ground_truth"])), "tools": q["function"],
                            "ground_truth": a["ground_truth"], "mode": mode, "format": fmt if mode == "auto" else "auto"})
            assert (r.valid, r.error_type, r.format) == (True, None, fmt), (q["id"], r.error)
            assert all(r.channels[n] == 1.0 for n in list(r.channels)[:7]), (q["id"], r.reasons)
            # ToolRL's ground truth is the same reference call -> exact match
            assert r.toolrl.correctness == 3.0, (q["id"], r.reasons)
            assert r.toolrl.format == (1.0 if fmt == "toolrl" else 0.0)


def mutations(cat, q, a):
    """(kind, calls, expected error type, expected sub-error of model call 0 in parallel) for one record."""
    mode, gt = MODE[cat], a["ground_truth"]
    ref = reference(gt)
    name, args = ref[0]["name"], ref[0]["arguments"]
    allowed = gt[0][name]
    schema = next(t for t in q["function"] if t["name"] == name)["parameters"]
    props, required = schema["properties"], schema.get("required", [])

    def with_call0(**changes):
        calls = copy.deepcopy(ref)
        calls[0].update(changes)
        return calls

    def with_args0(new_args):
        return with_call0(arguments=new_args)

    out = []

    def add(kind, calls, simple_error):
        if simple_error is None:
            out.append((kind, calls, None, None))
        elif mode == "parallel":
            out.append((kind, calls, "parallel_function_checker_no_order:cannot_find_match", simple_error))
        else:
            out.append((kind, calls, simple_error, None))

    add("wrong_name", with_call0(name=name + "_x"), "simple_function_checker:wrong_func_name")
    req = [p for p in required if p in args]
    if req:
        add("missing_required", with_args0({k: v for k, v in args.items() if k != req[0]}),
            "simple_function_checker:missing_required")
    add("unexpected_arg", with_args0({**args, "zz_unexpected": 1}), "simple_function_checker:unexpected_param")
    for p, v in args.items():  # wrong type on the first scalar whose answers have the schema's type
        t = props[p]["type"]
        if t in SCALAR_TYPES and type(v) is SCALAR_TYPES[t]:
            add("wrong_type", with_args0({**args, p: 12345 if t == "string" else "wrong"}), "type_error:simple")
            break
    for p, v in args.items():  # wrong value on the first argument we can make wrong
        t, choices = props[p]["type"], allowed[p]
        if t == "integer" and type(v) is int:
            new, err = max(c for c in choices if type(c) is int) + 1000, "value_error:others"
        elif t == "float" and type(v) is float:
            new, err = max(c for c in choices if c != "") + 1000.5, "value_error:others"
        elif t == "boolean" and (not v) not in choices:
            new, err = not v, "value_error:others"
        elif t == "string":
            new, err = "zz wrong value", "value_error:string"
        elif t in ("array", "tuple") and v and not isinstance(v[0], dict):
            new, err = v + [v[0]], "value_error:list/tuple"
        elif t == "dict":
            new, err = {**v, "zz_key": 1}, "value_error:dict_key"
        else:
            continue
        add("wrong_value", with_args0({**args, p: new}), err)
        break
    for p, choices in allowed.items():
        if p in args and "" in choices and p in required:  # "" does not excuse a schema-required parameter
            add("omit_required_marked_optional", with_args0({k: v for k, v in args.items() if k != p}),
                "simple_function_checker:missing_required")
        elif p in args and "" in choices:  # optional the answer marks with "": omitting it stays valid
            add("omit_optional_allowed", with_args0({k: v for k, v in args.items() if k != p}), None)
        elif p not in args and len(choices) > 1:  # first value "": giving the other allowed value is valid too
            add("give_optional", with_args0({**args, p: first_value(choices[1:])}), None)
        elif p in args and p not in required:  # optional without "": omitting it is missing_optional
            add("omit_optional_required_by_answer", with_args0({k: v for k, v in args.items() if k != p}),
                "simple_function_checker:missing_optional")
    if mode == "parallel":
        out.append(("other_order", list(reversed(ref)), None, None))
        out.append(("one_call_short", ref[:-1], "parallel_function_checker_no_order:wrong_count", None))
    else:
        out.append(("one_call_too_many", ref + ref, f"{mode}_function_checker:wrong_count", None))
    return out


@pytest.mark.parametrize("fmt", list(RENDER))
def test_every_mutation_gets_the_error_type_of_the_rules(fmt):
    seen = set()
    for cat, q, a in RECORDS:
        for kind, calls, expected, sub_error in mutations(cat, q, a):
            seen.add(kind)
            r = score_item({"id": q["id"], "completion": RENDER[fmt](calls), "tools": q["function"],
                            "ground_truth": a["ground_truth"], "mode": MODE[cat]})
            assert (r.valid, r.error_type) == (expected is None, expected), (q["id"], kind, r.error)
            if sub_error is not None:
                assert f"model call 0: {sub_error}" in r.error, (q["id"], kind, r.error)
            if expected is not None:
                assert min(r.channels[n] for n in list(r.channels)[:7]) < 1.0, (q["id"], kind)
    assert seen >= {"wrong_name", "missing_required", "unexpected_arg", "wrong_type", "wrong_value",
                    "omit_optional_allowed", "give_optional", "omit_optional_required_by_answer",
                    "other_order", "one_call_short", "one_call_too_many"}
