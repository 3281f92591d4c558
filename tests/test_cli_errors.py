"""What a user sees when something is wrong: `rvpo score` / `rvpo eval` / `rvpo settings` as subprocesses, against
a real stack (tests/gateway_fixtures.py: fake LLM, judge, rules, gateway, Celery worker) where one is needed.

Every failure is one or two lines on stderr naming what is wrong and the command or setting that fixes it (no
traceback without --debug); exit codes: 0 all scored, 1 error, 3 some unscored, 4 none scored. Expected counts
are computed by hand from the inputs (BFCL items have the nine rules channels, a HealthBench item one channel
per rubric criterion; the fake LLM answers a criterion marked ``[[fake:400]]`` with HTTP 400).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import httpx
import pytest

from rvpo.records import read_jsonl
from rvpo.settings_table import env_rows
from tests.gateway_fixtures import running_stack
from tests.procs import REPO_ROOT, free_port, uvicorn_server

RVPO = [sys.executable, "-m", "rvpo.cli"]
EXAMPLES = REPO_ROOT / "examples"


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RVPO_")}
    return subprocess.run(RVPO + args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**base, "COLUMNS": "80", **(env or {})})


def no_traceback(res: subprocess.CompletedProcess) -> list[str]:
    """stderr's lines, after checking there is no traceback and at most two lines."""
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 2, res.stderr
    return lines


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("cli-errors")) as s:
        yield s


def test_gateway_down_is_one_line_with_the_fix():
    dead = f"http://127.0.0.1:{free_port()}"
    res = run(["score", str(EXAMPLES / "bfcl.jsonl"), "-o", "/dev/null"], {"RVPO_GATEWAY_URL": dead})
    assert res.returncode == 1
    text = " ".join(no_traceback(res))
    assert f"cannot reach the gateway at {dead}" in text and "rvpo up" in text and "RVPO_GATEWAY_URL" in text
    debug = run(["--debug", "score", str(EXAMPLES / "bfcl.jsonl"), "-o", "/dev/null"], {"RVPO_GATEWAY_URL": dead})
    assert debug.returncode == 1 and "Traceback" in debug.stderr  # --debug: the whole story


def test_a_record_that_cannot_be_scored_names_its_line_before_anything_is_sent(tmp_path):
    src = tmp_path / "in.jsonl"
    first = next(read_jsonl(EXAMPLES / "bfcl.jsonl"))
    src.write_text(json.dumps(first) + "\n\n" + json.dumps({k: v for k, v in first.items() if k != "completion"})
                   + "\n")
    res = run(["score", str(src), "-o", str(tmp_path / "out.jsonl")],
              {"RVPO_GATEWAY_URL": f"http://127.0.0.1:{free_port()}"})  # no gateway: the file is checked first
    assert res.returncode == 1
    assert f"{src}:3: missing `completion`" in " ".join(no_traceback(res))
    res = run(["score", str(REPO_ROOT / "rvpo" / "data" / "healthbench_sample.jsonl"), "-o", str(tmp_path / "o.jsonl")])
    assert res.returncode == 1 and "healthbench_sample.jsonl:1: missing `completion`" in res.stderr
    assert "examples/" in res.stderr


def test_a_422_names_the_input_line_and_the_field(stack, tmp_path):
    bfcl = next(read_jsonl(EXAMPLES / "bfcl.jsonl"))
    hb = next(read_jsonl(EXAMPLES / "healthbench.jsonl"))
    hb["rubrics"][1]["points"] = "five"
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(bfcl) + "\n\n" + json.dumps(hb) + "\n")
    res = run(["score", str(src), "-o", str(tmp_path / "out.jsonl"), "--gateway", stack.urls["gateway"]])
    assert res.returncode == 1
    text = " ".join(no_traceback(res))
    assert "(422)" in text and f"{src}:3: rubrics[1].points: Input should be a valid number" in text, text


def _hb_rows(n: int, fail: str) -> list[dict]:
    """The first n example HealthBench rows; ``fail`` = "all": every criterion answered 400 by the fake LLM,
    "one": only the first criterion of the first row."""
    rows = list(read_jsonl(EXAMPLES / "healthbench.jsonl"))[:n]
    for i, row in enumerate(rows):
        for j, r in enumerate(row["rubrics"]):
            if fail == "all" or (i == 0 and j == 0):
                r["criterion"] += " [[fake:400]]"
    return rows


def test_exit_codes_tell_all_some_and_none_scored(stack, tmp_path):
    gw = ["--gateway", stack.urls["gateway"]]
    bfcl = list(read_jsonl(EXAMPLES / "bfcl.jsonl"))
    out = tmp_path / "out.jsonl"
    res = run(["score", str(EXAMPLES / "bfcl.jsonl"), "-o", str(out), *gw])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"done: {9 * len(bfcl)}/{9 * len(bfcl)} reward channels scored" in res.stdout  # 9 rules channels each

    some = _hb_rows(2, "one")
    criteria = sum(len(r["rubrics"]) for r in some)
    src = tmp_path / "some.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in bfcl[:2] + some))
    res = run(["score", str(src), "-o", str(out), *gw])
    assert res.returncode == 3, res.stdout + res.stderr
    scored = 9 * 2 + criteria - 1
    assert f"partial: {scored}/{9 * 2 + criteria} reward channels scored — unscored: judge_http_error x1" \
        in res.stdout, res.stdout

    none = _hb_rows(2, "all")
    criteria = sum(len(r["rubrics"]) for r in none)
    copies = [{**r, "id": f"{r['id']}-{k}"} for k in range(5) for r in none]  # 10 records: the first job has 8
    src.write_text("".join(json.dumps(r) + "\n" for r in copies))
    res = run(["score", str(src), "-o", str(out), *gw])
    assert res.returncode == 4, res.stdout + res.stderr
    text = " ".join(no_traceback(res))
    assert "the judge scored nothing" in text and f"judge_http_error x{4 * criteria}" in text
    assert "stopped before sending the other 2" in text and "RVPO_JUDGE_BASE_URL" in text
    assert f"the 8 records scored so far are in {out}" in text and len(list(read_jsonl(out))) == 8

    src.write_text("".join(json.dumps(r) + "\n" for r in none))
    res = run(["score", str(src), "-o", str(out), "--keep-going", *gw])
    assert res.returncode == 4, res.stdout + res.stderr
    assert f"failed: 0/{criteria} reward channels scored — unscored: judge_http_error x{criteria}" in res.stdout

    # rvpo eval on the file with no verdict: exit 4, the reasons counted, strict JSON (null, never NaN)
    summary = tmp_path / "summary.json"
    res = run(["eval", "healthbench", str(out), "--json", str(summary)])
    assert res.returncode == 4, res.stdout + res.stderr
    assert f"failed: 0/{criteria} rubric verdicts — missing: judge_http_error x{criteria}" in res.stdout
    assert "{" not in res.stdout  # the JSON went to the file only
    body = json.loads(summary.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert body["status"] == "failed" and body["variants"]["ideal"]["score"] is None
    res = run(["eval", "healthbench", str(out), "--json", "-"])
    assert res.returncode == 4 and json.loads(res.stdout)["status"] == "failed"  # stdout is exactly the JSON


def test_eval_of_a_file_without_rows_of_that_suite_is_an_error():
    res = run(["eval", "healthbench", str(EXAMPLES / "bfcl.jsonl")])
    assert res.returncode == 1 and "rvpo eval bfcl" in " ".join(no_traceback(res))


def test_settings_shows_whole_names_and_the_values_in_effect():
    res = run(["settings"], {"RVPO_JUDGE_MODEL": "my-grader", "RVPO_API_TOKEN": "s3cret"})  # a pipe, 80 columns
    assert res.returncode == 0, res.stderr
    lines = {ln.split(" ", 1)[0]: ln for ln in res.stdout.splitlines() if ln.startswith("RVPO_")}
    assert set(lines) == {env for env, *_ in env_rows()} and "RVPO_GATEWAY_URL" in lines
    assert "= 'my-grader'  (set;" in lines["RVPO_JUDGE_MODEL"]
    assert "'***'  (set;" in lines["RVPO_API_TOKEN"] and "s3cret" not in res.stdout
    assert "= 'redis://127.0.0.1:6379/0'  (default;" in lines["RVPO_REDIS_URL"]
    res = run(["settings"], {"RVPO_GATEWAY_PORT": "eighty"})
    assert res.returncode == 1 and "RVPO_GATEWAY_PORT" in " ".join(no_traceback(res))


def test_judge_readyz_reports_its_backend_and_model(stack, tmp_path):
    r = httpx.get(stack.urls["judge"] + "/readyz", timeout=10)
    assert r.status_code == 200, r.text
    assert "model fake-judge: reachable" in r.json()["detail"] and stack.urls["fake_llm"] in r.json()["detail"]
    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = {**stack.env, "RVPO_JUDGE_BASE_URL": dead, "RVPO_JUDGE_MODEL": "my-grader"}
    with uvicorn_server("judge.app:app", tmp_path, env) as judge:
        r = httpx.get(judge.url + "/readyz", timeout=10)
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert f"openai backend {dead}, model my-grader: not reachable" in detail and "cache: redis ok" in detail


@pytest.mark.parametrize("command", [["worker"], ["serve", "gateway"]])
def test_services_that_need_redis_say_so_before_starting(command):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    res = run(command, {"RVPO_REDIS_URL": dead}, timeout=60)
    assert res.returncode == 1
    text = " ".join(no_traceback(res))
    assert f"none answers at {dead}" in text and "RVPO_REDIS_URL" in text and "rvpo up" in text


# --- input files that are not of their format at all: one line naming the file and line, exit code 2 --------

def test_jsonl_that_is_not_utf8_names_its_line(tmp_path):
    """A latin-1 byte (0xe9, 'é') on line 3: it was `UnicodeDecodeError ... this looks like a bug`, exit 1."""
    src = tmp_path / "latin1.jsonl"
    good = json.dumps({"prompt_id": "p", "prompt": "hi", "completion": "x",
                       "rubrics": [{"criterion": "a", "points": 5, "tags": []}]}).encode()
    src.write_bytes(good + b'\n\n{"prompt": "caf\xe9"}\n')
    for args in (["score", str(src), "-o", str(tmp_path / "out.jsonl")], ["eval", "healthbench", str(src)]):
        res = run(args, {"RVPO_GATEWAY_URL": f"http://127.0.0.1:{free_port()}"})
        lines = no_traceback(res)
        assert res.returncode == 2, res.stderr
        assert len(lines) == 1 and f"{src}:3: not UTF-8 text (byte 0xe9 at column 16)" in lines[0]
    assert not (tmp_path / "out.jsonl").exists()


def test_jsonl_with_a_utf8_bom_is_read():
    """A BOM (Windows editors) is not a JSON error: the file is read, the first record checked as usual."""
    from rvpo.records import numbered_jsonl
    import tempfile
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as fh:
        fh.write(b'\xef\xbb\xbf{"id": "x", "completion": "hi"}\n')
    assert list(numbered_jsonl(fh.name)) == [(1, {"id": "x", "completion": "hi"})]
    os.unlink(fh.name)


@pytest.mark.parametrize("body, where, what", [
    (b"model: tiny\ntrl: [1, 2\n  x: : y\n", ":3:4: not valid YAML", "expected ',' or ']', but got ':'"),
    (b"model: tiny\n\tlr: 2\n", ":2:1: not valid YAML", "found character '\\t' that cannot start any token"),
    (b"model: tiny\nname: \"r\xe9sum\xe9\"\n", ":2: not UTF-8 text (byte 0xe9 at column 9)", "UTF-8"),
])
def test_malformed_yaml_config_is_one_line_naming_file_and_line(tmp_path, body, where, what):
    """PyYAML's message is five lines (`in "<unicode string>", line 2 ...` with a caret), and a non-UTF-8 config
    was `UnicodeDecodeError ... this looks like a bug`; both exited 1."""
    cfg = tmp_path / "train.yaml"
    cfg.write_bytes(body)
    res = run(["train", str(cfg)])
    lines = no_traceback(res)
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and f"{cfg}{where}" in lines[0] and what in lines[0], lines


HB_ROW = {"prompt_id": "p", "prompt": "hi", "completion": "x",
          "rubrics": [{"criterion": "a", "points": 5, "tags": []}, {"criterion": "b", "points": 5, "tags": []}]}


def test_eval_reads_a_nan_channel_as_a_null_verdict_not_as_met(tmp_path):
    """`rubric/00: NaN` (JSON NaN, from another tool) was read as met (NaN != 0): score 5/10 = 0.5, all verdicts
    there, exit 0. NaN means unscored: the verdict is null, the score 0/5 = 0 (by hand), exit 3 (partial)."""
    src = tmp_path / "scored.jsonl"
    src.write_text(json.dumps(dict(HB_ROW, result={"channels": {"rubric/00": math.nan, "rubric/01": 0.0}})) + "\n")
    res = run(["eval", "healthbench", str(src), "--json", "-"])
    assert res.returncode == 3, res.stderr
    body = json.loads(res.stdout[res.stdout.index("{"):res.stdout.rindex("}") + 1])
    s = body["variants"]["all"]
    assert s["score"] == 0.0 and s["null_verdicts"] == 1 and s["verdicts"] == 2
    assert s["null_reasons"] == {"not_finite": 1}


@pytest.mark.parametrize("suite, row, field", [
    ("healthbench", dict(HB_ROW, result=[1, 2]), "`result` must be an object or null"),
    ("healthbench", dict(HB_ROW, rubrics="abc"), "`rubrics` must be a list of objects"),
    ("healthbench", dict(HB_ROW, rubrics=[{"criterion": "a", "points": "five"}]), "rubrics[0].points"),
    ("healthbench", dict(HB_ROW, result={"channels": {"rubric/00": "yes"}}), "result.channels['rubric/00']"),
    ("bfcl", {"id": "simple_0", "function": [], "result": {"bfcl": {"valid": "no"}}}, "result.bfcl.valid"),
    ("bfcl", {"id": "simple_0", "function": [], "result": "oops"}, "`result` must be an object or null"),
])
def test_eval_of_a_malformed_scored_row_names_line_and_field(tmp_path, suite, row, field):
    """These were an AttributeError / TypeError 'bug' message, or silently counted ('yes' as met, valid 'no' as
    valid)."""
    src = tmp_path / "scored.jsonl"
    src.write_text("\n" + json.dumps(row) + "\n")
    res = run(["eval", suite, str(src)])
    lines = no_traceback(res)
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and f"{src}:2: " in lines[0] and field in lines[0], lines


@pytest.mark.parametrize("question, answer, where", [
    ({"id": "q1"}, {"ground_truth": [{"f": {}}]}, "answers.jsonl:2: a possible answer needs `id` and `ground_truth`"),
    ({"id": "q1"}, {"id": "q1"}, "answers.jsonl:2: a possible answer needs `id` and `ground_truth`"),
    ({}, {"id": "q1", "ground_truth": [{"f": {}}]}, "questions.jsonl:2: missing `id`"),
    ({"id": "q2"}, {"id": "q1", "ground_truth": [{"f": {}}]}, "questions.jsonl:2: BFCL question 'q2' has no possible"),
])
def test_score_answers_join_names_the_line(tmp_path, question, answer, where):
    """`rvpo score --answers`: an answer or question without `id` (or an answer without `ground_truth`) was
    `KeyError: 'id'` with 'this looks like a bug'."""
    q = {"question": [[{"role": "user", "content": "hi"}]], "completion": "[f()]",
         "function": [{"name": "f", "parameters": {"type": "dict", "properties": {}}}], **question}
    (tmp_path / "questions.jsonl").write_text("\n" + json.dumps(q) + "\n")
    (tmp_path / "answers.jsonl").write_text("\n" + json.dumps(answer) + "\n")
    res = run(["score", str(tmp_path / "questions.jsonl"), "--answers", str(tmp_path / "answers.jsonl"), "-o",
               str(tmp_path / "out.jsonl")], {"RVPO_GATEWAY_URL": f"http://127.0.0.1:{free_port()}"})
    lines = no_traceback(res)
    assert res.returncode == 1 and len(lines) == 1 and where in lines[0], res.stderr


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf"])
def test_score_job_timeout_must_be_positive_seconds(tmp_path, value):
    """`--job-timeout -5` submitted the first job and then failed with `job ... still queued after -5 s`; a bad
    value is a usage error (exit 2) before the gateway is even asked (here it is not running: that was exit 1)."""
    res = run(["score", str(EXAMPLES / "bfcl.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--job-timeout", value],
              {"RVPO_GATEWAY_URL": f"http://127.0.0.1:{free_port()}"})
    assert res.returncode == 2 and "--job-timeout" in res.stderr and "finite number of seconds > 0" in res.stderr


def test_eval_of_rows_without_rubric_criteria_is_not_done(tmp_path):
    """`rubrics: []` rows: the score is n/a and there is no verdict; that was `done: 0/0`, exit 0 (everything
    scored). Nothing was scored: exit 4."""
    src = tmp_path / "scored.jsonl"
    src.write_text(json.dumps(dict(HB_ROW, rubrics=[], result={"channels": {}})) + "\n")
    res = run(["eval", "healthbench", str(src)])
    assert res.returncode == 4 and "failed: 0/0 rubric verdicts" in res.stdout, res.stdout + res.stderr
