"""docker-compose.yml, docker/ and k8s/*.yaml checked against the code: services, ports, commands (each must
name a real app module, Celery app or `rvpo` command), environment variables (each must be a field of the
part's settings class and the values must pass its validation), healthchecks and probes, GPU requests, the
images; `kubernetes-validate --strict` on every manifest; the KEDA list name against the Redis key kombu really
uses and the judge's scaling query against the gauge the judge really exposes. tests/compose/ runs the compose
file for real where a Docker engine is reachable."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import redis
import yaml

from judge.settings import JudgeSettings
from services.gateway.settings import GatewayClientSettings, GatewaySettings
from services.rules.settings import RulesSettings
from services.worker.settings import WorkerSettings
from tests.procs import REDIS_URL, REPO_ROOT, unique, uvicorn_server

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
COMPOSE_CPU = yaml.safe_load((REPO_ROOT / "docker" / "compose.cpu.yml").read_text().replace("!reset", ""))
DOCKERFILE = (REPO_ROOT / "docker" / "Dockerfile").read_text()
MANIFESTS = sorted((REPO_ROOT / "k8s").glob("*.yaml"))
DOCS = [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
# contracts.md: default ports and app modules
APPS = {"gateway": ("services.gateway.app:app", 8000), "judge": ("judge.app:app", 8001),
        "rules": ("services.rules.app:app", 8002)}
# which settings classes read a process's environment (the gateway publishes with its own settings)
SETTINGS = {"gateway": [GatewaySettings], "worker": [WorkerSettings], "judge": [JudgeSettings],
            "rules": [RulesSettings], "trainer": [GatewayClientSettings]}
CLI_ONLY: set[str] = set()  # every RVPO_* variable is read by a settings class
PARTS = ("gateway", "worker", "judge", "rules")
IMAGES = {"services": f"rvpo-stack/services:{VERSION}", "trainer": f"rvpo-stack/trainer:{VERSION}"}


def env_names(classes) -> set[str]:
    return {"RVPO_" + name.upper() for cls in classes for name in cls.model_fields}


def resolve(value) -> str:
    """Compose interpolation `${VAR:-default}` -> default (what `docker compose up` uses with VAR unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)).replace("$$", "$")


def settings_from(monkeypatch, classes, env: dict[str, str]):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return [cls() for cls in classes]


def check_command(cmd: list[str]) -> None:
    """The command runs something that exists: a uvicorn app, the Celery app, or an `rvpo` sub-command."""
    def attr(spec: str):
        module, name = spec.split(":")
        return getattr(importlib.import_module(module), name)

    if cmd[:3] == ["python", "-m", "uvicorn"]:
        assert attr(cmd[3]).__class__.__name__ == "FastAPI", cmd
    elif cmd[0] == "celery":
        assert cmd[1] == "-A" and attr(cmd[2]).__class__.__name__ == "Celery", cmd
    elif cmd[0] == "rvpo":
        from typer.main import get_command

        from rvpo.cli import app

        assert cmd[1] in get_command(app).commands, cmd
    else:
        raise AssertionError(f"unknown command {cmd}")


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
        # published on the host's loopback only (RVPO_GATEWAY_HOST_PORT picks the host port)
        assert [resolve(p) for p in svc["ports"]] == [f"127.0.0.1:{port}:{port}"]
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


@pytest.mark.parametrize("name", ["gateway", "worker", "judge", "rules", "trainer"])
def test_compose_commands_exist(name):
    check_command([resolve(c) for c in COMPOSE["services"][name]["command"]])


def test_compose_builds_the_two_images_from_docker_dockerfile():
    services = COMPOSE["services"]
    for name in PARTS + ("trainer",):
        image = "trainer" if name == "trainer" else "services"
        build = services[name]["build"]
        assert resolve(services[name]["image"]) == IMAGES[image], name
        assert (build["context"], build["dockerfile"], build["target"]) == (".", "docker/Dockerfile", image)
        assert resolve(build["args"]["BASE_IMAGE"]) == "python:3.11-slim"
    assert resolve(services["redis"]["image"]) == "redis:7.2-alpine"
    assert services["trainer"]["build"]["args"]["TORCH_VARIANT"] == "cuda"
    # the CPU override: CPU torch, its own tag, no GPU reservation (`deploy: !reset`)
    cpu = COMPOSE_CPU["services"]["trainer"]
    assert cpu["build"]["args"]["TORCH_VARIANT"] == "cpu" and resolve(cpu["image"]) == IMAGES["trainer"] + "-cpu"
    assert "deploy: !reset {}" in (REPO_ROOT / "docker" / "compose.cpu.yml").read_text()
    # the trainer reads its config from ./configs and writes its log and plot to ./runs
    assert services["trainer"]["volumes"] == ["./configs:/app/configs:ro", "./runs:/app/runs"]
    assert resolve(services["trainer"]["command"][2]) == "configs/train.yaml"
    assert (REPO_ROOT / "configs" / "train.yaml").is_file() and (REPO_ROOT / "configs" / "smoke.yaml").is_file()


def test_dockerfile_two_targets_non_root_base_image_argument():
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", DOCKERFILE, re.M)
    assert stages == [("${BASE_IMAGE}", "requirements"), ("${BASE_IMAGE}", "wheel"), ("${BASE_IMAGE}", "runtime"),
                      ("runtime", "services"), ("runtime", "trainer")]
    assert "ARG BASE_IMAGE=python:3.11-slim" in DOCKERFILE and "ARG TORCH_VARIANT=cuda" in DOCKERFILE
    # each stage's instructions, comment lines left out
    requirements, _, runtime, services, trainer = [
        "\n".join(ln for ln in part.splitlines() if not ln.startswith("#"))
        for part in re.split(r"^FROM .+$", DOCKERFILE, flags=re.M)[1:]]
    assert "useradd --uid 10001" in runtime
    for stage in (services, trainer):
        assert re.findall(r"^USER (\S+)$", stage, re.M)[-1] == "10001"
        assert "HEALTHCHECK " in stage
        assert "pip install --no-deps /dist/rvpo_stack-*.whl && pip check" in stage  # the wheel, consistent
    # the services image gets the core dependencies only; the trainer adds torch and the `trainer` extra
    assert "p['dependencies']" in requirements and "p['optional-dependencies']['trainer']" in requirements
    assert "core.txt" in runtime and "torch" not in runtime + services and "trainer.txt" in trainer
    # each image's default command exists
    for stage in (services, trainer):
        check_command(yaml.safe_load(re.findall(r"^CMD (.+)$", stage, re.M)[-1]))
    # what the wheel is built from: the packages and the metadata, all let through .dockerignore
    ignore = [ln for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    copied = re.findall(r"^COPY (\S+) ", DOCKERFILE, re.M)
    assert ignore[0] == "*" and {f"!{p.rstrip('/')}/" for p in copied if "." not in p} <= set(ignore)
    assert "!docker/wheels/" in ignore and (REPO_ROOT / "docker" / "wheels").is_dir()
    assert not (REPO_ROOT / "Dockerfile").exists()  # the images live in docker/


# -------------------------------------------------------------------------------------------------------------
# Kubernetes
# -------------------------------------------------------------------------------------------------------------
def kind(k: str, name: str | None = None) -> list[dict]:
    return [d for d in DOCS if d["kind"] == k and (name is None or d["metadata"]["name"] == name)]


def pod_container(name: str) -> dict:
    (obj,) = [d for d in DOCS if d["kind"] in ("Deployment", "Job") and
              d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == name]
    (c,) = obj["spec"]["template"]["spec"]["containers"]
    return c


def rendered_env(container: dict) -> dict[str, str]:
    """The environment a pod gets: envFrom ConfigMaps / Secrets in order, then `env`."""
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            env.update(kind("ConfigMap", ref["configMapRef"]["name"])[0]["data"])
        else:
            env.update(kind("Secret", ref["secretRef"]["name"])[0]["stringData"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def test_kubernetes_validate_strict():
    out = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict",
                          *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    problems = [line for line in text.splitlines() if not line.startswith("INFO")]
    # only KEDA's custom resources have no schema to validate against
    assert all("ScaledObject" in line and line.startswith("WARN") for line in problems), problems
    assert sum(line.startswith("INFO") for line in text.splitlines()) == len(DOCS) - len(kind("ScaledObject"))


def test_k8s_objects_present():
    assert kind("Namespace", "rvpo") and kind("ConfigMap", "rvpo-config") and kind("Secret", "rvpo-secrets")
    assert "RVPO_API_TOKEN" in kind("Secret", "rvpo-secrets")[0]["stringData"]
    for name in PARTS:
        assert kind("Deployment", name), name
    for name in ("gateway", "rules", "judge", "redis"):
        assert kind("Service", name), name
    assert kind("StatefulSet", "redis")
    assert not kind("HorizontalPodAutoscaler")  # KEDA owns the autoscalers (judge and worker ScaledObjects)
    job = kind("Job")[0]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert job["limits"]["nvidia.com/gpu"] == job["requests"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("name", PARTS)
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
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001}
    if name in APPS:
        module, port = APPS[name]
        assert module in c["args"] and c["args"][c["args"].index("--port") + 1] == str(port)
        assert c["ports"][0]["containerPort"] == port
        assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
        svc = kind("Service", name)[0]["spec"]
        assert svc["ports"][0]["port"] == port
        assert svc["selector"].items() <= template["metadata"]["labels"].items()  # the Service reaches these pods


@pytest.mark.parametrize("name", PARTS + ("trainer",))
def test_k8s_same_images_and_commands_as_compose(name):
    c, svc = pod_container(name), COMPOSE["services"][name]
    assert c["image"] == resolve(svc["image"]) == IMAGES["trainer" if name == "trainer" else "services"]
    check_command(c["args"])
    if name == "trainer":  # the Job reads the config from its ConfigMap mount, compose from ./configs
        assert c["args"][:2] == [resolve(a) for a in svc["command"][:2]] == ["rvpo", "train"]
        mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert c["args"][2] == mount["config"] + "/train.yaml" and mount["runs"] == "/app/runs"
        assert c.get("workingDir") == "/app"  # so the config's output_dir runs/... lands in the runs volume
    else:
        assert c["args"] == svc["command"]


@pytest.mark.parametrize("name", PARTS + ("trainer",))
def test_k8s_rendered_env_matches_each_part_settings(name, monkeypatch):
    env = rendered_env(pod_container(name))
    known = env_names([GatewaySettings, WorkerSettings, JudgeSettings, RulesSettings, GatewayClientSettings])
    assert not {k for k in env if k.startswith("RVPO_")} - known
    for key in [k for k in env if k not in CLI_ONLY]:
        monkeypatch.setenv(key, env[key])
    parts = [cls() for cls in SETTINGS[name]]  # every value passes the part's validation
    assert urlparse(parts[0].redis_url).hostname.split(".")[0] == "redis"
    assert parts[0].api_token == "change-me"
    if name in ("gateway", "worker"):
        worker = WorkerSettings()
        for service in ("judge", "rules"):
            url = urlparse(getattr(worker, f"{service}_service_url"))
            assert url.hostname.split(".")[0] == service and url.port == APPS[service][1]
            assert kind("Service", service)[0]["spec"]["ports"][0]["port"] == url.port
    if name == "gateway":  # publishes to the queue the workers consume
        assert parts[0].celery_queue == WorkerSettings().celery_queue
    if name == "trainer":
        url = urlparse(parts[0].gateway_url)
        assert url.hostname.split(".")[0] == "gateway" and url.port == APPS["gateway"][1]


def test_k8s_trainer_job_config_runs_on_the_packaged_data():
    """The Job's config is configs/train.yaml (ConfigMap); its task's function docs come from rvpo.data."""
    from rvpo.data import DATA_DIR
    from rvpo.training import load_config
    from rvpo.demo.tooltask import BFCL_DOCS, load_functions

    cfg = load_config(REPO_ROOT / "configs" / "train.yaml")
    assert "configs/train.yaml" in (REPO_ROOT / "k8s" / "40-trainer-job.yaml").read_text()
    assert BFCL_DOCS.parent == DATA_DIR
    assert len(load_functions(cfg.task.n_functions)) == cfg.task.n_functions
    assert cfg.rewards.source == "gateway"


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


def _gauge(metrics_text: str, name: str) -> float:
    (value,) = re.findall(rf"^{name} (\S+)$", metrics_text, re.M)
    return float(value)


def test_keda_scales_the_judge_on_its_in_flight_requests(tmp_path, redis_url):
    """The judge's ScaledObject queries the gauge a real judge exposes, and that gauge counts the grading
    requests it is serving: 1 while one request waits on a slow LLM, 0 before and after."""
    (so,) = kind("ScaledObject", "judge")
    assert so["spec"]["scaleTargetRef"]["name"] == "judge" and so["spec"]["minReplicaCount"] >= 3
    triggers = {t["type"]: t for t in so["spec"]["triggers"]}
    assert set(triggers) == {"prometheus", "cpu"}  # load first; CPU guards a pod's one core
    trigger = triggers["prometheus"]
    assert float(trigger["metadata"]["threshold"]) > 0
    metric = re.match(r"sum\((\w+)\{", trigger["metadata"]["query"]).group(1)
    assert metric == "rvpo_judge_inflight_requests"
    labels = kind("Deployment", "judge")[0]["spec"]["template"]["metadata"]
    assert labels["annotations"]["prometheus.io/port"] == str(APPS["judge"][1])
    assert f'app_kubernetes_io_name="{labels["labels"]["app.kubernetes.io/name"]}"' in trigger["metadata"]["query"]

    env = {"RVPO_REDIS_URL": REDIS_URL, "RVPO_JUDGE_CACHE_ENABLED": "false", "RVPO_JUDGE_MODEL": "fake-judge"}
    with uvicorn_server("tests.fake_llm:app", tmp_path, env={"FAKE_LLM_LATENCY_MS": "1500"}) as llm, \
            uvicorn_server("judge.app:app", tmp_path, env={**env, "RVPO_JUDGE_BASE_URL": llm.url + "/v1"}) as judge:
        assert _gauge(httpx.get(judge.url + "/metrics").text, metric) == 0
        item = {"id": "hb-0", "prompt": [{"role": "user", "content": "Fever?"}], "completion": "Drink fluids.",
                "rubrics": [{"criterion": "Advises fluids", "points": 5}]}
        done: list[httpx.Response] = []
        t = threading.Thread(target=lambda: done.append(
            httpx.post(judge.url + "/v1/judge", json={"items": [item]}, timeout=30)))
        t.start()
        seen, deadline = [], time.monotonic() + 10
        while not done and time.monotonic() < deadline:
            seen.append(_gauge(httpx.get(judge.url + "/metrics").text, metric))
            time.sleep(0.1)
        t.join(30)
        assert done and done[0].status_code == 200, done
        assert max(seen) == 1
        assert _gauge(httpx.get(judge.url + "/metrics").text, metric) == 0
