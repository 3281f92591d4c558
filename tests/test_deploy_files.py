"""docker-compose.yml, the Dockerfile and k8s/*.yaml checked against the code (Docker and a cluster do not run
here): services, ports, environment variables (each must be a field of the part's settings class and the
values must pass its validation), healthchecks and probes, GPU requests; `kubernetes-validate --strict` on
every manifest; the KEDA list name against the Redis key kombu really uses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
import yaml

from judge.settings import JudgeSettings
from services.gateway.settings import GatewayClientSettings, GatewaySettings
from services.rules.settings import RulesSettings
from services.worker.settings import WorkerSettings
from tests.procs import REDIS_URL, REPO_ROOT, unique

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
MANIFESTS = sorted((REPO_ROOT / "k8s").glob("*.yaml"))
DOCS = [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]
# contracts.md: default ports and app modules
APPS = {"gateway": ("services.gateway.app:app", 8000), "judge": ("judge.app:app", 8001),
        "rules": ("services.rules.app:app", 8002)}
# which settings classes read a process's environment (the gateway publishes with its own settings)
SETTINGS = {"gateway": [GatewaySettings], "worker": [WorkerSettings], "judge": [JudgeSettings],
            "rules": [RulesSettings], "trainer": [GatewayClientSettings]}
CLI_ONLY: set[str] = set()  # every RVPO_* variable is read by a settings class


def env_names(classes) -> set[str]:
    return {"RVPO_" + name.upper() for cls in classes for name in cls.model_fields}


def resolve(value) -> str:
    """Compose interpolation `${VAR:-default}` -> default (what `docker compose up` uses with VAR unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)).replace("$$", "$")


def settings_from(monkeypatch, classes, env: dict[str, str]):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return [cls() for cls in classes]


# -------------------------------------------------------------------------------------------------------------
# docker compose
# -------------------------------------------------------------------------------------------------------------
def test_compose_has_the_whole_stack():
    services = COMPOSE["services"]
    assert set(services) == {"redis", "gateway", "worker", "judge", "rules", "vllm", "trainer"}
    assert services["judge"]["deploy"]["replicas"] == 3
    # the worker scales: no fixed name, no host port
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    # the default `docker compose up` runs the CPU stack; vLLM and the trainer are behind profiles, on a GPU
    for name in ("vllm", "trainer"):
        assert services[name]["profiles"]
        device = services[name]["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    for name in ("redis", "gateway", "worker", "judge", "rules"):
        assert "profiles" not in services[name]
    assert services["worker"]["command"][:4] == ["celery", "-A", "services.worker.celery_app:celery_app", "worker"]


@pytest.mark.parametrize("name", ["gateway", "judge", "rules"])
def test_compose_http_services_ports_and_healthchecks(name):
    svc = COMPOSE["services"][name]
    module, port = APPS[name]
    cmd = svc["command"]
    assert module in cmd and cmd[cmd.index("--port") + 1] == str(port) and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    test = " ".join(svc["healthcheck"]["test"])
    assert re.search(rf"http://127\.0\.0\.1:{port}/(livez|readyz)", test), test
    if name == "gateway":
        assert GatewaySettings.model_fields["gateway_port"].default == port
        assert svc["ports"] == [f"127.0.0.1:{port}:{port}"]  # published on the host's loopback only
    else:
        assert "ports" not in svc and svc["expose"] == [str(port)]


def test_compose_every_long_running_service_has_a_healthcheck():
    for name, svc in COMPOSE["services"].items():
        if name != "trainer":
            assert svc["healthcheck"]["test"], name
        for dep, cond in (svc.get("depends_on") or {}).items():
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in COMPOSE["services"][dep], (name, dep)


@pytest.mark.parametrize("name", ["gateway", "worker", "judge", "rules", "trainer"])
def test_compose_environment_matches_the_settings(name, monkeypatch):
    env = {k: resolve(v) for k, v in COMPOSE["services"][name]["environment"].items()}
    classes = SETTINGS[name]
    unknown = {k for k in env if k.startswith("RVPO_")} - env_names(classes) - CLI_ONLY
    assert not unknown, f"{name}: {unknown} is not a field of {[c.__name__ for c in classes]}"
    for s in settings_from(monkeypatch, classes, {k: v for k, v in env.items() if k not in CLI_ONLY}):
        if name != "trainer":
            assert s.redis_url == "redis://redis:6379/0"
    if name == "worker":
        ws = WorkerSettings()
        for service in ("judge", "rules"):
            url = urlparse(getattr(ws, f"{service}_service_url"))
            assert (url.hostname, url.port) == (service, APPS[service][1])
    if name == "trainer":
        assert "RVPO_GATEWAY_URL" in (REPO_ROOT / "rvpo" / "cli.py").read_text()
        assert urlparse(env["RVPO_GATEWAY_URL"]).port == APPS["gateway"][1]


def test_dockerfile_uses_the_cpu_torch_index_by_default():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert re.search(r'pip install --index-url "\$\{TORCH_INDEX_URL\}" "torch==', text)
    assert "USER 10001" in text


# -------------------------------------------------------------------------------------------------------------
# Kubernetes
# -------------------------------------------------------------------------------------------------------------
def kind(k: str, name: str | None = None) -> list[dict]:
    return [d for d in DOCS if d["kind"] == k and (name is None or d["metadata"]["name"] == name)]


def test_kubernetes_validate_strict():
    out = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict",
                          *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    problems = [line for line in text.splitlines() if not line.startswith("INFO")]
    # only KEDA's custom resource has no schema to validate against
    assert all("ScaledObject" in line and line.startswith("WARN") for line in problems), problems
    assert sum(line.startswith("INFO") for line in text.splitlines()) == len(DOCS) - 1


def test_k8s_objects_present():
    assert kind("Namespace", "rvpo") and kind("ConfigMap", "rvpo-config") and kind("Secret", "rvpo-secrets")
    assert "RVPO_API_TOKEN" in kind("Secret", "rvpo-secrets")[0]["stringData"]
    for name in ("gateway", "rules", "judge", "worker"):
        assert kind("Deployment", name), name
    for name in ("gateway", "rules", "judge", "redis"):
        assert kind("Service", name), name
    assert kind("StatefulSet", "redis")
    hpa = kind("HorizontalPodAutoscaler", "judge")[0]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "judge"}
    job = kind("Job")[0]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert job["limits"]["nvidia.com/gpu"] == job["requests"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("name", ["gateway", "rules", "judge", "worker"])
def test_k8s_deployments_probes_resources_env(name):
    template = kind("Deployment", name)[0]["spec"]["template"]
    spec = template["spec"]
    (c,) = spec["containers"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert probe in c, (name, probe)
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][part]), (name, part)
    refs = {list(e.values())[0]["name"] for e in c["envFrom"]}
    assert refs == {"rvpo-config", "rvpo-secrets"}
    if name in APPS:
        module, port = APPS[name]
        assert module in c["args"] and c["args"][c["args"].index("--port") + 1] == str(port)
        assert c["ports"][0]["containerPort"] == port
        assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
        svc = kind("Service", name)[0]["spec"]
        assert svc["ports"][0]["port"] == port
        assert svc["selector"].items() <= template["metadata"]["labels"].items()  # the Service reaches these pods


def test_k8s_configmap_matches_the_settings(monkeypatch):
    data = kind("ConfigMap", "rvpo-config")[0]["data"]
    secret = kind("Secret", "rvpo-secrets")[0]["stringData"]
    known = env_names([GatewaySettings, WorkerSettings, JudgeSettings, RulesSettings, GatewayClientSettings]) | CLI_ONLY
    assert not set(data) - known and not set(secret) - known
    gateway, worker = settings_from(monkeypatch, [GatewaySettings, WorkerSettings],
                                    {k: v for k, v in {**data, **secret}.items() if k not in CLI_ONLY})
    assert worker.api_token == "change-me" and gateway.celery_queue == worker.celery_queue
    for service in ("judge", "rules"):
        url = urlparse(getattr(worker, f"{service}_service_url"))
        assert url.hostname.split(".")[0] == service and url.port == APPS[service][1]


def test_keda_scales_workers_on_the_real_celery_queue_key(redis_url):
    """The ScaledObject's listName must be the Redis list kombu pushes tasks to: publish a task with the
    ConfigMap's prefix/queue rule on a private prefix and look at Redis."""
    from services.worker.celery_app import make_celery
    from services.worker.tasks import TASK_NAME

    data = kind("ConfigMap", "rvpo-config")[0]["data"]
    (so,) = kind("ScaledObject", "worker")
    assert so["spec"]["scaleTargetRef"]["name"] == "worker"
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == f"{data['RVPO_KEY_PREFIX']}:celery:{data['RVPO_CELERY_QUEUE']}"
    assert trigger["metadata"]["address"].split(":")[0] == urlparse(data["RVPO_REDIS_URL"]).hostname

    prefix, queue = unique("t-keda"), unique("q")
    app = make_celery(WorkerSettings(key_prefix=prefix, celery_queue=queue))
    app.send_task(TASK_NAME, args=["job", 0, "rules"], queue=queue)
    r = redis.Redis.from_url(REDIS_URL)
    try:
        assert r.type(f"{prefix}:celery:{queue}") == b"list" and r.llen(f"{prefix}:celery:{queue}") == 1
    finally:
        keys = list(r.scan_iter(match=f"{prefix}:*"))
        r.delete(*keys)
