"""The rules service as a real uvicorn process on loopback: scoring, 401 / 413 / 422, probes and metrics."""

from __future__ import annotations

import httpx
import pytest

from tests.procs import uvicorn_server

TOKEN = "rules-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRIANGLE = {"name": "calculate_triangle_area", "description": "", "parameters": {"type": "dict", "properties": {
    "base": {"type": "integer"}, "height": {"type": "integer"}, "unit": {"type": "string"}}, "required": ["base", "height"]}}
GT = [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"RVPO_API_TOKEN": TOKEN, "RVPO_RULES_MAX_ITEMS": "3", "RVPO_RULES_MAX_BODY_BYTES": "100000"}
    with uvicorn_server("services.rules.app:app", tmp_path_factory.mktemp("rules"), env) as proc:
        yield proc.url


def item(i, completion, **kw):
    return {"id": f"i{i}", "completion": completion, "tools": [TRIANGLE], "ground_truth": GT, **kw}


def test_scores_a_batch_in_order(server):
    items = [
        item(0, "[calculate_triangle_area(base=10, height=5)]"),
        item(1, {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "calculate_triangle_area", "arguments": '{"base": 999, "height": 5}'}}]}),
        {"id": "i2", "completion": "[calculate_triangle_area({'base': 10})]", "tools": [TRIANGLE]},  # no ground truth
    ]
    r = httpx.post(f"{server}/v1/rules/score", json={"items": items}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["items"]
    assert [o["id"] for o in out] == ["i0", "i1", "i2"]
    assert (out[0]["valid"], out[0]["error_type"], out[0]["format"]) == (True, None, "python")
    assert out[0]["calls"] == [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}]
    assert out[0]["channels"]["rules/arg_values"] == 1.0
    assert (out[1]["valid"], out[1]["error_type"], out[1]["format"]) == (False, "value_error:others", "openai")
    assert out[1]["channels"]["rules/arg_values"] == pytest.approx(2 / 3)  # base wrong; height right; unit omitted ok
    # unparseable without ground truth: lowest values where computable, null (NaN) where not
    assert out[2]["error_type"] == "ast_decoder:decoder_failed" and out[2]["channels"]["rules/format"] == 0.0
    assert out[2]["channels"]["rules/arg_values"] is None
    assert out[2]["reasons"]["rules/arg_values"].startswith("no_ground_truth")
    assert out[2]["toolrl"] == {"format": None, "correctness": None}


def test_token_required(server):
    body = {"items": [item(0, "[calculate_triangle_area(base=10, height=5)]")]}
    assert httpx.post(f"{server}/v1/rules/score", json=body, timeout=30).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{server}/v1/rules/score", json=body, headers=bad, timeout=30).status_code == 401


@pytest.mark.parametrize(
    "bad_item, loc_field, text",
    [
        ({"completion": None}, "completion", "Field required"),  # None here: drop the field
        ({"tools": [{"name": "f", "parameters": {"properties": {"x": {"type": "complex"}}}}]}, "tools",
         "tools[0].parameters.properties.x.type"),
        ({"ground_truth": [{"other_function": {"x": [1]}}]}, "ground_truth", "other_function"),
        ({"mode": "sequential"}, "mode", "simple"),
    ],
)
def test_malformed_item_is_a_422_naming_the_field(server, bad_item, loc_field, text):
    bad = {k: v for k, v in {**item(1, "[f()]"), **bad_item}.items() if v is not None}
    body = {"items": [item(0, "[f()]"), bad]}
    r = httpx.post(f"{server}/v1/rules/score", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 422
    errors = r.json()["detail"]
    hit = [e for e in errors if e["loc"][:4] == ["body", "items", 1, loc_field]]
    assert hit and text in str(hit), errors


def test_batch_over_the_limits_is_a_413(server):
    four = {"items": [item(i, "[calculate_triangle_area(base=10, height=5)]") for i in range(4)]}
    r = httpx.post(f"{server}/v1/rules/score", json=four, headers=AUTH, timeout=30)
    assert r.status_code == 413 and r.json()["detail"][0]["type"] == "too_many_items"
    big = {"items": [item(0, "[calculate_triangle_area(base=10, height=5)]" + " " * 120_000)]}
    r = httpx.post(f"{server}/v1/rules/score", json=big, headers=AUTH, timeout=30)
    assert r.status_code == 413 and r.json()["detail"][0]["type"] == "too_large"


def test_probes_and_metrics_need_no_token(server):
    assert httpx.get(f"{server}/livez", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz", timeout=10).status_code == 200
    httpx.post(f"{server}/v1/rules/score", json={"items": [item(0, "[calculate_triangle_area(base=10, height=5)]")]},
               headers=AUTH, timeout=30)
    metrics = httpx.get(f"{server}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert 'rvpo_rules_items_total{valid="true"}' in metrics.text
    assert "rvpo_rules_request_seconds_count" in metrics.text


def raw_post(url: str, headers: dict[str, str], body_start: bytes, timeout: float = 10.0) -> bytes:
    """Send a POST's headers and only the START of its body, then read the answer. A server that waited for the
    rest of the body would never answer: ``socket.timeout`` fails the test."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": u.netloc, **headers}.items())
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(f"POST {u.path} HTTP/1.1\r\n{head}\r\n".encode() + body_start)
        return s.recv(65536)


@pytest.mark.parametrize("headers", [
    {"Content-Length": "65000000"},  # over the body limit: still 401 first, never 413
    {"Content-Length": "50000"},  # under the limit: answered before the 50 kB arrive
    {"Transfer-Encoding": "chunked"},
    {"Content-Length": "50000", "Authorization": f"Basic {TOKEN}"},
    {"Content-Length": "50000", "Authorization": "Bearer wrong-token"},
])
def test_token_is_checked_before_the_body_is_read(server, headers):
    start = b"2000\r\n" + b"{" * 100 if "Transfer-Encoding" in headers else b'{"items": [' + b" " * 100
    answer = raw_post(f"{server}/v1/rules/score", {"Content-Type": "application/json", **headers}, start)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"www-authenticate: bearer" in answer.lower()


def test_malformed_json_without_token_is_401_and_with_token_422(server):
    url = f"{server}/v1/rules/score"
    headers = {"content-type": "application/json"}
    assert httpx.post(url, content=b'{"items": [', headers=headers, timeout=10).status_code == 401
    r = httpx.post(url, content=b'{"items": [', headers={**headers, **AUTH}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
