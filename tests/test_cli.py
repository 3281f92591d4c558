"""The `rvpo` command line as a user runs it: `rvpo up` (real processes), `rvpo score`, `rvpo eval`, and the
training config checks. The LLM behind the judge is the fake OpenAI-compatible server (tests/fake_llm.py),
whose documented rule (a criterion is met iff its longest word occurs in the completion) gives the expected
verdicts independently of the judge's code."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
import redis

from rvpo.data import DATA_DIR
from rvpo.records import join_answers, read_jsonl
from tests.procs import REDIS_URL, REPO_ROOT, free_port, start_process, unique, uvicorn_server, wait_http

DATA = DATA_DIR
RVPO = [sys.executable, "-m", "rvpo.cli"]


def _longest_word(text: str) -> str:
    words = re.findall(r"[A-Za-z]+", text)
    return max(words, key=len).lower() if words else ""  # max keeps the first of equal lengths


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`rvpo up` on free ports, its judge backed by the fake LLM; yields (gateway URL, env, Proc)."""
    tmp = tmp_path_factory.mktemp("cli")
    with uvicorn_server("tests.fake_llm:app", tmp) as llm:
        ports = [free_port() for _ in range(3)]
        # ports and the worker's concurrency from the settings (RVPO_*), not from flags: what `rvpo up` reads
        env = {"RVPO_REDIS_URL": REDIS_URL, "RVPO_KEY_PREFIX": unique("rvpo-cli"),
               "RVPO_CELERY_QUEUE": unique("cli"), "RVPO_JUDGE_CACHE_PREFIX": unique("cli-cache"),
               "RVPO_JUDGE_BASE_URL": llm.url + "/v1", "RVPO_JUDGE_MODEL": "fake-judge",
               "RVPO_GATEWAY_PORT": str(ports[0]), "RVPO_JUDGE_PORT": str(ports[1]), "RVPO_RULES_PORT": str(ports[2]),
               "RVPO_WORKER_CONCURRENCY": "2"}
        # started with SIGINT ignored, as a background job of a script or CI runner is (SIG_IGN survives exec):
        # Ctrl-C must still stop it (test_rvpo_up_stops_everything_on_ctrl_c); a terminal's default is the easy case
        up = RVPO + ["up", "--log-dir", str(tmp / "logs")]
        launcher = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                    "os.execv(sys.argv[1], sys.argv[1:])", *up]
        proc = start_process(launcher, tmp / "up.log", env)
        gateway = f"http://127.0.0.1:{ports[0]}"
        try:
            wait_http(gateway + "/readyz", proc, timeout=120)
            deadline = time.monotonic() + 60
            while "Ctrl-C" not in proc.log_text():  # printed once every process is ready
                assert time.monotonic() < deadline and proc.popen.poll() is None, proc.log_text()
                time.sleep(0.2)
            yield gateway, env, proc, ports, tmp / "logs"
        finally:
            proc.stop()
            keys = redis.Redis.from_url(REDIS_URL).keys(env["RVPO_KEY_PREFIX"] + "*")
            if keys:
                redis.Redis.from_url(REDIS_URL).delete(*keys)


def _bfcl_rows() -> list[dict]:
    rows = join_answers(list(read_jsonl(DATA / "bfcl_simple_python_sample.jsonl"))[:2],
                        list(read_jsonl(DATA / "bfcl_simple_python_possible_answer.jsonl"))[:2])
    # simple_python_0: calculate_triangle_area(base=10, height=5); simple_python_1: math.factorial(number=5)
    return [
        {**rows[0], "completion": "[calculate_triangle_area(base=10, height=5)]"},
        {**rows[1], "id": "simple_python_1#wrong", "completion": "[math.fact(number=5)]"},
    ]


def test_score_and_eval_through_rvpo_up(stack, tmp_path):
    gateway, env, *_ = stack
    hb = list(read_jsonl(DATA / "healthbench_sample.jsonl"))[:2]
    hb_rows = [{**r, "completion": r["ideal_completions_data"]["ideal_completion"]}
               for r in hb if r.get("ideal_completions_data")]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in _bfcl_rows() + hb_rows))
    out = tmp_path / "out.jsonl"
    res = subprocess.run(RVPO + ["score", str(inp), "-o", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=240, env={**_os_env(), **env, "RVPO_GATEWAY_URL": gateway})  # no --gateway
    assert res.returncode == 0, res.stdout + res.stderr
    scored = list(read_jsonl(out))
    assert len(scored) == 2 + len(hb_rows)  # one output line per input line, in order
    assert scored[0]["result"]["bfcl"]["valid"] is True
    assert scored[1]["result"]["bfcl"] == {**scored[1]["result"]["bfcl"], "valid": False,
                                           "error_type": "simple_function_checker:wrong_func_name"}
    for row in scored[2:]:
        met = [_longest_word(r["criterion"]) in row["completion"].lower() for r in row["rubrics"]]
        pts = [r["points"] for r in row["rubrics"]]
        expected = sum(p for p, m in zip(pts, met) if m) / sum(p for p in pts if p > 0)  # simple-evals formula
        assert row["result"]["healthbench_score"] == pytest.approx(expected)
        for j, (p, m) in enumerate(zip(pts, met)):
            assert row["result"]["channels"][f"rubric/{j:02d}"] == pytest.approx(p * m)

    summary_path = tmp_path / "bfcl.json"
    res = subprocess.run(RVPO + ["eval", "bfcl", str(out), "--json", str(summary_path)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    summary = json.loads(summary_path.read_text())["variants"]["all"]
    assert summary["n"] == 2 and summary["accuracy"] == 0.5
    assert summary["error_types"] == {"simple_function_checker:wrong_func_name": 1}


def _os_env() -> dict:
    import os

    return dict(os.environ)


def test_rvpo_up_reads_ports_and_worker_concurrency_from_the_settings(stack):
    gateway, _, _, ports, logs = stack
    for port in ports:  # RVPO_GATEWAY_PORT, RVPO_JUDGE_PORT, RVPO_RULES_PORT
        assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).status_code == 200
    assert re.search(r"concurrency:\s+2 \(prefork\)", (logs / "worker.log").read_text()), "RVPO_WORKER_CONCURRENCY"


def test_rvpo_up_stops_everything_on_ctrl_c(stack):
    gateway, _, proc, ports, _ = stack
    assert httpx.get(gateway + "/livez").status_code == 200
    proc.popen.send_signal(signal.SIGINT)  # what Ctrl-C delivers (also when this test runs with SIGINT ignored)
    assert proc.popen.wait(timeout=60) == 0, proc.log_text()
    assert "stopped" in proc.log_text()
    for port in ports:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)


def test_stack_starts_its_own_redis_or_says_why(tmp_path, monkeypatch):
    from rvpo.stack import Stack, StackConfig, StackError

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack = Stack(StackConfig(log_dir=tmp_path, env={"RVPO_REDIS_URL": dead}))
    url = stack._ensure_redis()  # redis-server is installed on this machine: a private one is started
    try:
        assert url != dead and redis.Redis.from_url(url).ping()
    finally:
        stack.stop()
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(StackError, match="redis-server"):
        Stack(StackConfig(log_dir=tmp_path, env={"RVPO_REDIS_URL": dead}))._ensure_redis()


def test_training_config_refuses_healthbench_and_names_bad_keys(tmp_path):
    from rvpo.training import TrainConfigError, load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("task:\n  dataset: rvpo/data/healthbench_sample.jsonl\n")
    with pytest.raises(TrainConfigError, match="canary"):
        load_config(cfg)
    cfg.write_text("- not a mapping\n")
    with pytest.raises(TrainConfigError, match="mapping"):
        load_config(cfg)


def test_stack_notices_a_hung_or_dead_worker(tmp_path):
    """What `rvpo up` watches (Stack.check): a worker that stops answering pings (SIGSTOP), then one that died."""
    import os

    from rvpo.stack import Stack, StackConfig

    env = {"RVPO_KEY_PREFIX": unique("t-ping"), "RVPO_CELERY_QUEUE": unique("t-ping"),
           "RVPO_JUDGE_CACHE_PREFIX": unique("t-ping"), "RVPO_WORKER_CONCURRENCY": "1", "RVPO_REDIS_URL": REDIS_URL}
    stack = Stack(StackConfig(gateway_port=0, judge_port=0, rules_port=0, log_dir=tmp_path, env=env,
                              worker_ping_s=0.5, worker_misses=2))
    stack.start()  # returns once the worker answered a ping
    try:
        assert stack.check() is None
        worker = stack.procs["worker"]
        os.killpg(worker.pid, signal.SIGSTOP)
        deadline, problem = time.monotonic() + 30, None
        while problem is None and time.monotonic() < deadline:
            problem = stack.check()
            time.sleep(0.2)
        assert problem and f"the worker (pid {worker.pid}) has not answered 2 pings in a row" in problem
        os.killpg(worker.pid, signal.SIGCONT)
        worker.kill(signal.SIGKILL)
        assert "the worker exited (exit code -9)" in stack.check()
    finally:
        stack.stop()


def test_stack_refuses_a_taken_port_before_starting_anything(tmp_path):
    import socket

    from rvpo.stack import Stack, StackConfig, StackError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(StackConfig(gateway_port=port, judge_port=0, rules_port=0, log_dir=tmp_path,
                                  env={"RVPO_REDIS_URL": REDIS_URL}))
        with pytest.raises(StackError, match=f"127.0.0.1:{port} for the gateway is taken.*RVPO_GATEWAY_PORT"):
            stack.start()
    assert not stack.procs  # nothing was left running
