"""Verdict parsing (judge.parsing): a JSON object with a boolean ``criteria_met`` or a clear parse error."""

from __future__ import annotations

import math

import pytest

from judge.parsing import VerdictParseError, parse_verdict, yes_no_probability


@pytest.mark.parametrize("text, met, expl", [
    ('{"explanation": "ok", "criteria_met": true}', True, "ok"),
    ('```json\n{"explanation": "no", "criteria_met": false}\n```', False, "no"),
    ('Sure.\n```json\n{\n  "explanation": "e",\n  "criteria_met": true\n}\n```\n', True, "e"),
    ('```\n{"criteria_met": false}\n```', False, ""),
    ('Verdict: {"explanation": "x", "criteria_met": true} done', True, "x"),
])
def test_valid_verdicts(text, met, expl):
    v = parse_verdict(text)
    assert v.criteria_met is met and v.explanation == expl


@pytest.mark.parametrize("text, reason", [
    ("[]", "list"),
    ('{"verdict": true}', "no 'criteria_met'"),
    ('{"criteria_met": null}', "null"),
    ('{"criteria_met": "true"}', "not a boolean"),
    ('{"criteria_met": 1}', "not a boolean"),
    ("The response meets the criterion.", "no JSON"),
    ("", "empty"),
    (None, "empty"),
    ('```json\n{"criteria_met": tru\n```', "no JSON"),
])
def test_wrong_shapes_are_errors(text, reason):
    with pytest.raises(VerdictParseError, match=reason):
        parse_verdict(text)


def test_yes_no_probability():
    top = [{"token": "Yes", "logprob": math.log(0.6)}, {"token": " yes", "logprob": math.log(0.1)},
           {"token": "No", "logprob": math.log(0.2)}, {"token": "maybe", "logprob": math.log(0.1)}]
    p_yes, p_no = yes_no_probability(top)
    assert p_yes == pytest.approx(0.7) and p_no == pytest.approx(0.2)
    with pytest.raises(VerdictParseError):
        yes_no_probability([{"token": "maybe", "logprob": -0.1}])
