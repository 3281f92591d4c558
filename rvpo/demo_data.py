"""The demo's scoring inputs, built from the real data shipped in `rvpo/data/` (see rvpo/data/SOURCES.md).

BFCL: every question with its ground-truth calls rendered as a completion (must be valid), plus one realistic
faulty variant per question, the kind chosen round-robin from those that apply: a wrong function name, a
missing required argument, an unexpected argument, a wrong value, a wrong type, or (with several calls) a
dropped call. HealthBench (evaluation only: the rows carry a canary): the physician ideal completion of every
row that has one, and the same completion truncated to its first third.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from rvpo.data import DATA_DIR as DATA
from rvpo.records import join_answers, read_jsonl
from services.rules.render import calls_from_ground_truth, render

BFCL_SETS = ("simple_python", "multiple", "parallel")
MUTATIONS = ("wrong_func_name", "missing_required", "unexpected_param", "wrong_value", "wrong_type", "dropped_call")


def load_bfcl(data_dir: Path = DATA) -> list[dict[str, Any]]:
    """All BFCL sample questions with their possible answers joined as ``ground_truth``."""
    out = []
    for name in BFCL_SETS:
        out += join_answers(read_jsonl(data_dir / f"bfcl_{name}_sample.jsonl"),
                            read_jsonl(data_dir / f"bfcl_{name}_possible_answer.jsonl"))
    return out


def _required(record: dict, fname: str) -> list[str]:
    for doc in record["function"]:
        if doc["name"] == fname:
            return list(doc["parameters"].get("required", []))
    return []


def mutate(record: dict[str, Any], kind: str) -> list[dict[str, Any]] | None:
    """The reference calls of ``record`` with one fault of ``kind``, or None when the fault does not apply."""
    calls = copy.deepcopy(calls_from_ground_truth(record["ground_truth"]))
    first = calls[0]
    args = first["arguments"]
    if kind == "wrong_func_name":
        first["name"] = first["name"] + "_v2"
    elif kind == "missing_required":
        required = [p for p in _required(record, first["name"]) if p in args]
        if not required:
            return None
        del args[required[0]]
    elif kind == "unexpected_param":
        args["verbose_output"] = True
    elif kind in ("wrong_value", "wrong_type"):
        scalar = [k for k, v in args.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
        if not scalar:
            return None
        key, value = scalar[0], args[scalar[0]]
        if kind == "wrong_type":
            args[key] = str(value) if not isinstance(value, str) else 12345
        else:
            args[key] = value + 7 if isinstance(value, (int, float)) else value + " (unverified)"
    elif kind == "dropped_call":
        if len(calls) < 2:
            return None
        calls = calls[:-1]
    else:
        raise ValueError(f"unknown mutation {kind!r}")
    return calls


def bfcl_demo_records(fmt: str | tuple[str, ...] = "python") -> list[dict[str, Any]]:
    """Ground-truth and faulty-variant records (each with ``completion`` and ``variant``) for `rvpo score`.
    ``fmt``: the completion format (services.rules.render), or several used in turn for the ground-truth calls
    (the faulty ones stay in the first)."""
    formats = (fmt,) if isinstance(fmt, str) else fmt
    out = []
    for i, record in enumerate(load_bfcl()):
        base = {k: record[k] for k in ("question", "function", "ground_truth")}
        out.append({**base, "id": record["id"], "variant": "ground_truth",
                    "completion": render(calls_from_ground_truth(record["ground_truth"]), formats[i % len(formats)])})
        fmt = formats[0]
        for step in range(len(MUTATIONS)):
            kind = MUTATIONS[(i + step) % len(MUTATIONS)]
            calls = mutate(record, kind)
            if calls is not None:
                out.append({**base, "id": f"{record['id']}#{kind}", "variant": f"faulty:{kind}",
                            "completion": render(calls, fmt)})
                break
    return out


def healthbench_demo_records(data_dir: Path = DATA) -> list[dict[str, Any]]:
    """Ideal and truncated physician completions for every HealthBench row that has one (evaluation only)."""
    out = []
    for row in read_jsonl(data_dir / "healthbench_sample.jsonl"):
        ideal = (row.get("ideal_completions_data") or {}).get("ideal_completion")
        if not ideal:
            continue
        base = {k: row[k] for k in ("prompt", "prompt_id", "rubrics", "example_tags")}
        out.append({**base, "id": f"{row['prompt_id']}#ideal", "variant": "ideal", "completion": ideal})
        out.append({**base, "id": f"{row['prompt_id']}#truncated", "variant": "truncated",
                    "completion": ideal[: max(1, len(ideal) // 3)]})
    return out


def healthbench_graded_items(max_items: int | None = None) -> list[dict[str, Any]]:
    """Judge / gateway items for the throughput benchmarks: every HealthBench row with physician completions,
    once per completion (the ideal one and each reference), grouped by prompt (evaluation data only)."""
    items = []
    for row in read_jsonl(DATA / "healthbench_sample.jsonl"):
        icd = row.get("ideal_completions_data")
        if not icd:
            continue
        for k, c in enumerate([icd["ideal_completion"], *icd.get("ideal_completions_ref_completions", [])]):
            items.append({"id": f"{row['prompt_id']}-{k}", "group_id": row["prompt_id"], "prompt": row["prompt"],
                          "completion": c, "rubrics": row["rubrics"]})
    return items[:max_items] if max_items else items


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"  # ready-to-score files (README)


def example_files(n_bfcl_per_set: int = 4, n_healthbench: int = 3) -> dict[str, list[dict[str, Any]]]:
    """The ready-to-score files of ``examples/``: ``bfcl.jsonl`` (the first ``n_bfcl_per_set`` questions of each
    BFCL sample with their ground truth, rendered as Python-call, Hermes and OpenAI completions in turn, and one
    faulty variant each) and ``healthbench.jsonl`` (the ideal and truncated answers of the first
    ``n_healthbench`` HealthBench conversations that have one; evaluation data: never train on it)."""
    bfcl = bfcl_demo_records(fmt=("python", "hermes", "openai"))
    keep = {q["id"] for name in BFCL_SETS
            for q in list(read_jsonl(DATA / f"bfcl_{name}_sample.jsonl"))[:n_bfcl_per_set]}
    healthbench = healthbench_demo_records()[:2 * n_healthbench]
    return {"bfcl.jsonl": [r for r in bfcl if r["id"].split("#")[0] in keep], "healthbench.jsonl": healthbench}


def write_examples(out_dir: Path = EXAMPLES) -> dict[str, int]:
    """Write :func:`example_files` into ``out_dir``; returns {file name: lines}."""
    from rvpo.records import write_jsonl

    return {name: write_jsonl(Path(out_dir) / name, rows) for name, rows in example_files().items()}


if __name__ == "__main__":  # python -m rvpo.demo_data [OUT_DIR]   (what made examples/)
    import sys

    for name, n in write_examples(Path(sys.argv[1]) if len(sys.argv) > 1 else EXAMPLES).items():
        print(f"{name}: {n} records")
