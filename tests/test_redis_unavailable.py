"""With Redis down (restarting, unreachable) the services answer a clear, retryable 503 naming Redis, not a bare
500: the compose test restarts the Redis container mid-job; here a gateway points at a port where nothing
listens."""

from __future__ import annotations

import httpx

from services.common.http import RETRY_AFTER_S
from tests.procs import free_port, uvicorn_server


def test_gateway_answers_503_with_a_reason_while_redis_is_down(tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with uvicorn_server("services.gateway.app:app", tmp_path, env={"RVPO_REDIS_URL": dead}) as gw:
        item = {"id": "a", "prompt": "p", "completion": "[f(x=1)]", "tools": [{"name": "f", "parameters": {}}],
                "ground_truth": [{"f": {"x": [1]}}]}
        for resp in (httpx.get(gw.url + "/v1/jobs/abc", timeout=30),
                     httpx.post(gw.url + "/v1/score", json={"items": [item]}, timeout=30)):
            assert resp.status_code == 503, resp.text
            assert int(resp.headers["retry-after"]) == RETRY_AFTER_S > 0
            assert resp.json()["detail"].startswith("redis unavailable")
