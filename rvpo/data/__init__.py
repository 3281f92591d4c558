"""The real data samples shipped inside the package (sources, commits and licenses: SOURCES.md here).

HealthBench Hard (evaluation only: every row carries a canary) and BFCL v4 simple_python / multiple / parallel
questions with their possible answers. Found with `importlib.resources`, so every command works from an
installed wheel as well as from a checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# A directory on disk: wheels install unpacked, so the package's resources are plain files.
DATA_DIR = Path(str(resources.files(__name__)))


def data_file(name: str) -> Path:
    """Path of the shipped file ``name`` (e.g. ``"healthbench_sample.jsonl"``).

    Raises FileNotFoundError naming the files that do exist.
    """
    path = DATA_DIR / name
    if not path.is_file():
        have = sorted(p.name for p in DATA_DIR.glob("*.jsonl"))
        raise FileNotFoundError(f"{name}: not among the packaged data files {have}")
    return path
