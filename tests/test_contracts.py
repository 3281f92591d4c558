"""The wire contract (contracts/): one model per item, the strictest rule of every service at the gateway, finite
numbers and valid Unicode everywhere, and the import graph that keeps a request flowing one way.

Expected outcomes are the services' documented rules (docs/contracts.md): the judge grades a conversation whose
every message has text and whose last turn is the user's; the rules service needs every ground-truth function
among the tools; JSON cannot carry NaN, infinities or lone surrogates.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys

import pytest
from pydantic import ValidationError

from contracts.gateway import ScoreRequest
from contracts.judge import JudgeItem
from contracts.results import job_status, null_result, result_record, source_state
from contracts.rules import RulesItem
from contracts.values import sanitize, wire_value
from tests.procs import REPO_ROOT

DOC = {"name": "area", "parameters": {"type": "dict", "required": ["b"], "properties": {"b": {"type": "integer"}}}}
RULES_ITEM = {"id": "r", "prompt": "Area for b=1?", "completion": "[area(b=1)]", "tools": [DOC],
              "ground_truth": [{"area": {"b": [1]}}]}
JUDGE_ITEM = {"id": "j", "prompt": [{"role": "user", "content": "I have a fever."}], "completion": "Rest.",
              "rubrics": [{"criterion": "Advises rest", "points": 5}]}

# (name, item change, loc inside the item, words in the message, the service that would reject it too)
INVALID = [
    ("prompt ends with an assistant turn",
     {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, ("prompt",),
     "last prompt message", "judge"),
    ("null content in a graded prompt", {"prompt": [{"role": "user", "content": None}]}, ("prompt",), "null",
     "judge"),
    ("unknown role", {"prompt": [{"role": "narrator", "content": "a"}]},
     ("prompt", "messages", 0, "role"), "'user'", "judge"),
    ("NaN points", {"rubrics": [{"criterion": "c", "points": math.nan}]}, ("rubrics", 0, "points"), "finite",
     "judge"),
    ("infinite points", {"rubrics": [{"criterion": "c", "points": math.inf}]}, ("rubrics", 0, "points"), "finite",
     "judge"),
    ("lone surrogate in a criterion", {"rubrics": [{"criterion": "c\ud800", "points": 1}]},
     ("rubrics", 0, "criterion"), "Unicode", "judge"),
    ("lone surrogate in the completion", {"completion": "x\ud800"}, ("completion", "text"), "Unicode", "judge"),
]
INVALID_RULES = [
    ("ground-truth function not among the tools", {"ground_truth": [{"volume": {"b": [1]}}]}, ("ground_truth",),
     "not among the tools", "rules"),
    ("NaN in the ground truth", {"ground_truth": [{"area": {"b": [math.nan]}}]}, ("ground_truth",),
     "ground_truth[0].area.b[0]: not a finite number", "rules"),
    ("-inf in the ground truth", {"ground_truth": [{"area": {"b": [-math.inf]}}]}, ("ground_truth",), "finite",
     "rules"),
    ("NaN in a tool doc", {"tools": [dict(DOC, default=math.nan)]}, ("tools",), "tools[0].default", "rules"),
    ("lone surrogate in a tool-call argument",
     {"completion": {"role": "assistant", "content": None,
                     "tool_calls": [{"function": {"name": "area", "arguments": {"b": "\udc00"}}}]}},
     ("completion", "message", "tool_calls", 0), "function.arguments.b: not valid Unicode", "rules"),
    ("a user message as completion", {"completion": {"role": "user", "content": "x"}},
     ("completion", "message", "role"), "'assistant'", "rules"),
    ("unreadable tool doc", {"tools": [{"name": "area", "parameters": {"properties": {"b": {"type": "int64"}}}}]},
     ("tools",), "unsupported type", "rules"),
    ("simple mode with two calls", {"mode": "simple", "tools": [DOC, dict(DOC, name="b2")],
                                    "ground_truth": [{"area": {"b": [1]}}, {"b2": {"b": [1]}}]},
     ("mode",), "exactly one", "rules"),
]


def _errors(model, body) -> list[dict]:
    with pytest.raises(ValidationError) as err:
        model.model_validate(body)
    return err.value.errors()


@pytest.mark.parametrize("name, change, loc, words, service", INVALID + INVALID_RULES, ids=lambda v: v
                         if isinstance(v, str) and " " in v else "")
def test_gateway_rejects_what_a_service_would_reject(name, change, loc, words, service):
    base = JUDGE_ITEM if service == "judge" else RULES_ITEM
    item = {**base, **change}
    errors = _errors(ScoreRequest, {"items": [base, dict(item, id="second")]})
    assert any(tuple(e["loc"]) == ("items", 1, *loc) and words.lower() in e["msg"].lower() for e in errors), errors
    # ... and the service itself, with the same model family, rejects the same item
    if service == "judge":
        judge_item = {**item, "prompt": item["prompt"] if isinstance(item["prompt"], list)
                      else [{"role": "user", "content": item["prompt"]}]}
        assert _errors(JudgeItem, judge_item)
    else:
        assert _errors(RulesItem, {k: v for k, v in item.items() if k != "prompt"})


def test_rules_only_items_keep_their_conversation_shape():
    """The judge's prompt rule applies to items it grades; a tool-use conversation ending with a tool result
    (content null in an assistant tool-call turn) is a valid prompt for the rules service."""
    prompt = [{"role": "user", "content": "area?"},
              {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "area"}}]},
              {"role": "tool", "content": "42", "tool_call_id": "1"}]
    ScoreRequest.model_validate({"items": [dict(RULES_ITEM, prompt=prompt)]})
    with pytest.raises(ValidationError, match="content is null"):
        ScoreRequest.model_validate({"items": [dict(RULES_ITEM, prompt=prompt, rubrics=JUDGE_ITEM["rubrics"])]})


def test_documented_rules_options_are_accepted():
    req = ScoreRequest.model_validate({"items": [dict(RULES_ITEM, options={"toolrl_response": True})]})
    assert req.items[0].options.toolrl_response is True
    rules_item = {k: v for k, v in RULES_ITEM.items() if k != "prompt"}
    assert RulesItem.model_validate(dict(rules_item, options={"toolrl_response": True})).options.toolrl_response


def test_duplicate_ids_name_both_items():
    errors = _errors(ScoreRequest, {"items": [RULES_ITEM, RULES_ITEM]})
    assert errors[0]["msg"] == "items[1].id 'r' repeats items[0].id", errors  # no "{id!r}" template left


def test_empty_prompt_is_rejected_and_the_schema_says_so():
    assert _errors(ScoreRequest, {"items": [dict(RULES_ITEM, prompt="")]})[0]["loc"] == ("items", 0, "prompt", "text")
    schema = ScoreRequest.model_json_schema()
    text = [s for s in schema["$defs"]["ScoreItem"]["properties"]["prompt"]["oneOf"] if s.get("type") == "string"]
    assert text and text[0]["minLength"] == 1


def test_wire_values_and_error_bodies_are_json():
    assert math.copysign(1.0, wire_value(-0.0)) == 1.0 and wire_value(-0.0) == 0.0
    assert wire_value(math.nan) is None and wire_value(math.inf) is None and wire_value(2) == 2.0
    assert sanitize({"a": [math.nan, math.inf, -math.inf, "x\ud800", 1.5]}) == \
        {"a": ["NaN", "Infinity", "-Infinity", "x\\ud800", 1.5]}


def test_job_status_tells_all_some_and_none_scored_apart():
    ok = result_record("rules", {"rules/format": 1.0, "rules/arg_values": -0.0}, {}, None)
    judged = result_record("judge", {"rubric/00": 5.0, "rubric/01": None}, {"rubric/01": "judge_timeout: x"}, None)
    dead = result_record("judge", {"rubric/00": None}, {"rubric/00": "judge_transport_error: refused"}, None)
    no_gt = result_record("rules", {"rules/format": 1.0, "rules/function_name": None},
                          {"rules/function_name": "no_ground_truth: not given"}, None)
    failed = null_result("rules", 0, "rules_unreachable: x")
    assert ok["channels"]["rules/arg_values"] == 0.0 and math.copysign(1, ok["channels"]["rules/arg_values"]) == 1
    assert [source_state(r) for r in (ok, judged, dead, no_gt, failed, None)] == \
        ["ok", "partial", "error", "ok", "error", "pending"]
    assert job_status(2, {"0:rules": ok, "1:rules": no_gt}, True, False) == "done"
    assert job_status(2, {"0:rules": ok, "1:judge": judged}, True, False) == "partial"
    assert job_status(2, {"0:judge": dead, "1:rules": failed}, True, False) == "failed"
    assert job_status(2, {"0:rules": ok}, True, False) == "running"
    assert job_status(2, {}, False, False) == "queued"
    assert job_status(2, {"0:rules": ok}, True, True) == "partial"  # deadline passed, one result missing


# -- the import graph ------------------------------------------------------------------------------------------
def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def _package_imports(package: str) -> dict[str, set[str]]:
    root = REPO_ROOT / package.replace(".", "/")
    return {str(p.relative_to(REPO_ROOT)): _imports(p) for p in sorted(root.rglob("*.py"))}


@pytest.mark.parametrize("package, forbidden", [
    ("services.gateway", ("services.worker",)),
    ("services.worker", ("services.gateway",)),
    ("contracts", ("services", "judge", "trainer", "rvpo", "torch", "httpx", "redis", "celery", "fastapi")),
    ("trainer", ("rvpo", "benchmarks", "tests")),
    ("services", ("rvpo", "trainer", "benchmarks", "tests")),
    ("judge", ("rvpo", "trainer", "services.gateway", "services.worker", "services.rules")),
])
def test_import_graph(package, forbidden):
    bad = {f: sorted(m for m in mods if any(m == x or m.startswith(x + ".") for x in forbidden))
           for f, mods in _package_imports(package).items()}
    assert not {f: m for f, m in bad.items() if m}, bad


def test_reward_client_and_contracts_load_without_torch():
    code = ("import sys, trainer.reward_client, trainer.rewards, contracts.gateway, services.gateway.client\n"
            "heavy = sorted(m for m in ('torch', 'trl', 'transformers', 'services.worker', 'services.gateway.app',"
            " 'judge', 'rvpo') if m in sys.modules)\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=120)


def test_openapi_documents_the_answers_the_services_give():
    """The schemas say what the services send: null channels, a non-empty prompt, and every error code."""
    from judge.app import app as judge_app
    from services.gateway.app import app as gateway_app
    from services.rules.app import app as rules_app

    gw = gateway_app.openapi()
    codes = set(gw["paths"]["/v1/score"]["post"]["responses"])
    assert {"200", "202", "400", "401", "409", "413", "422", "503"} <= codes
    for path in ("/v1/jobs/{job_id}", "/v1/jobs/{job_id}/rewards"):
        assert {"200", "400", "401", "404", "422"} <= set(gw["paths"][path]["get"]["responses"])
    assert "idempotency-key" in {p["name"] for p in gw["paths"]["/v1/score"]["post"]["parameters"]}
    for app, path in ((rules_app, "/v1/rules/score"), (judge_app, "/v1/judge")):
        assert {"200", "400", "401", "413", "422"} <= set(app.openapi()["paths"][path]["post"]["responses"])
    rules = rules_app.openapi()["components"]["schemas"]
    null = {"type": "null"}
    assert null in rules["RulesResult"]["properties"]["channels"]["additionalProperties"]["anyOf"]
    assert null in rules["ToolRLValues"]["properties"]["format"]["anyOf"]


@pytest.mark.parametrize("blank", [" ", "   ", "\t\n", "\u3000"])
def test_a_whitespace_only_item_id_is_rejected_naming_the_field(blank):
    errors = _errors(ScoreRequest, {"items": [dict(RULES_ITEM, id=blank)]})
    assert [tuple(e["loc"]) for e in errors] == [("items", 0, "id")], errors
    assert "other than whitespace" in errors[0]["msg"], errors
    # an id with whitespace around a visible character stays valid, as it is
    assert ScoreRequest.model_validate({"items": [dict(RULES_ITEM, id=" r 1 ")]}).items[0].id == " r 1 "
