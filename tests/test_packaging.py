"""The install users get: the services run on the core dependencies alone (no torch), and the built wheel carries
its data, so `rvpo train` works from a non-editable install in another directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.procs import REPO_ROOT

# What the core install must never load: the trainer / judge-local / bench extras and their heavy dependencies.
HEAVY = ("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "pandas", "pyarrow", "scipy",
         "matplotlib")
# The modules the services image's commands import (docker-compose.yml, k8s/): uvicorn apps, the Celery app and
# its tasks, and the `rvpo` CLI (`rvpo serve`, `rvpo worker`, `rvpo score`, `rvpo eval`).
SERVICE_MODULES = ["services.gateway.app", "services.worker.celery_app", "services.worker.tasks",
                   "services.rules.app", "judge.app", "rvpo.cli", "rvpo.scoring", "rvpo.evaluation"]
DATA_FILES = ["SOURCES.md", "healthbench_sample.jsonl"] + [
    f"bfcl_{c}_{kind}.jsonl" for c in ("simple_python", "multiple", "parallel") for kind in ("sample", "possible_answer")]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("RVPO_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def heavy_modules_after_import(python: str, modules: list[str], cwd: Path) -> list[str]:
    """Import ``modules`` in a fresh interpreter; the HEAVY top-level packages that ended up in sys.modules."""
    code = (f"import importlib, json, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}} & set({list(HEAVY)!r}))))")
    res = subprocess.run([python, "-c", code], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("modules", [SERVICE_MODULES], ids=["services"])
def test_the_services_import_no_torch(modules):
    assert heavy_modules_after_import(sys.executable, modules, REPO_ROOT) == []


def test_the_reward_client_imports_no_torch():
    """A training process may run its rewards through the gateway from a light client process too."""
    assert heavy_modules_after_import(sys.executable, ["trainer.reward_client"], REPO_ROOT) == []


def test_the_import_check_sees_torch_when_it_is_imported():
    """The check itself can fail: importing the trainer loads torch and the check reports it."""
    assert "torch" in heavy_modules_after_import(sys.executable, ["trainer.aggregation"], REPO_ROOT)


# What the wheel is built from (as in docker/Dockerfile): a copy, so the build leaves nothing in the checkout.
WHEEL_SOURCES = ["pyproject.toml", "README.md", "contracts", "services", "judge", "trainer", "rvpo"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in WHEEL_SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO_ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out),
                          str(src)], capture_output=True, text=True, timeout=300, env=_clean_env())
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    (path,) = out.glob("rvpo_stack-*.whl")
    return path


def test_the_wheel_carries_the_data_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in DATA_FILES if f"rvpo/data/{f}" not in names]
    assert not missing, missing
    # byte for byte what the checkout holds (rvpo/data/SOURCES.md: nothing is re-serialised)
    with zipfile.ZipFile(wheel) as zf:
        for f in DATA_FILES:
            assert zf.read(f"rvpo/data/{f}") == (REPO_ROOT / "rvpo" / "data" / f).read_bytes(), f
    assert not [n for n in names if n.startswith("tests/")]


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """A new venv with the wheel installed (not editable). To keep this fast its third-party dependencies are
    borrowed from the development venv through a plain path entry (which does not run that venv's .pth files,
    so its editable finder for this project stays off); the test checks they satisfy the wheel's metadata."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
                          str(wheel)], capture_output=True, text=True, timeout=300, env=_clean_env())
    assert res.returncode == 0, res.stderr[-3000:]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "zz_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_fresh_venv_runs_the_installed_package(fresh_venv, tmp_path):
    py = str(fresh_venv / "bin" / "python")
    code = ("import json, rvpo, rvpo.data, trainer, services, judge, contracts\n"
            "from importlib.metadata import distribution\n"
            "from packaging.requirements import Requirement\n"
            "bad = []\n"
            "for r in map(Requirement, distribution('rvpo-stack').requires):\n"
            "    if r.marker is None or r.marker.evaluate({'extra': 'trainer'}):\n"
            "        v = distribution(r.name).version\n"
            "        bad += [] if r.specifier.contains(v, prereleases=True) else [f'{r} (have {v})']\n"
            "print(json.dumps({'files': [m.__file__ for m in (rvpo, trainer, services, judge, contracts)], "
            "'data': str(rvpo.data.DATA_DIR), 'bad': bad}))")
    res = subprocess.run([py, "-c", code], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    for f in out["files"] + [out["data"]]:
        assert Path(f).is_relative_to(fresh_venv) and not Path(f).is_relative_to(REPO_ROOT), f
    assert out["bad"] == [], out["bad"]
    assert heavy_modules_after_import(py, SERVICE_MODULES, tmp_path) == []


def test_rvpo_train_from_a_wheel_install_in_another_directory(fresh_venv, tmp_path):
    """`rvpo train` on a one-step config, run from an unrelated directory: the BFCL function docs of the task come
    from the installed package's data."""
    (tmp_path / "train.yaml").write_text("""
output_dir: out
model: {hidden_size: 16, warm_start: {base_steps: 2, noisy_steps: 1, batch_size: 4}}
task: {n_functions: 2, n_train_per_fn: 2}
rewards: {source: local, channels: [rules/format, rules/function_name]}
trl: {max_steps: 1, num_generations: 2, per_device_train_batch_size: 4, max_completion_length: 8}
""")
    res = subprocess.run([str(fresh_venv / "bin" / "rvpo"), "train", "train.yaml"], cwd=tmp_path,
                         env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = json.loads((tmp_path / "out" / "log.json").read_text())
    assert log["summary"]["steps"] == 1
    assert [h["rvpo/risk"] for h in log["log_history"] if "rvpo/risk" in h] == [0.5]  # linear k at step 0: start
    assert (tmp_path / "out" / "rewards.png").stat().st_size > 1000
