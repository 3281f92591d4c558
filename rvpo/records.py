"""Turn dataset records into gateway scoring items, and gateway results back into output records.

Two record formats are understood, each with a ``completion`` field added by the caller:
- HealthBench (openai/simple-evals): ``prompt`` (chat messages), ``prompt_id``, ``rubrics``, ``example_tags``.
- BFCL (gorilla, berkeley-function-call-leaderboard): ``id``, ``question`` (a list of turns; the first turn is
  the prompt), ``function`` (the tool docs) and ``ground_truth`` (joined from the possible-answer file by id).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A record has neither the HealthBench nor the BFCL shape; the message names the line and the field."""


class InputFileError(RecordError):
    """The input file is not JSON Lines at all (not UTF-8 text, a line that is not JSON or not an object): the
    message names the file and the line; the command exits with code 2 (wrong usage: not a file of this format)."""

    exit_code = 2


def numbered_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, dict) for every non-empty line of a JSON Lines file (UTF-8, a leading BOM allowed).
    Raises InputFileError naming the bad line (not UTF-8, not JSON, or not an object)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputFileError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                                     f"{exc.start + 1}); save the file as UTF-8") from None
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputFileError(f"{path}:{lineno}: not JSON ({exc})") from None
                if not isinstance(record, dict):
                    raise InputFileError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
                yield lineno, record


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-empty line of a JSON Lines file. Raises RecordError naming the bad line."""
    for _, record in numbered_jsonl(path):
        yield record


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` with every NaN / ±inf float as None, so that it is strict JSON (``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON Lines (NaN never appears: unscorable values are null with a reason). Returns the count."""
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, allow_nan=False) + "\n")
            n += 1
    return n


def join_answers(questions: Iterable[dict], answers: Iterable[dict], *, question_labels: list[str] | None = None,
                 answer_labels: list[str] | None = None) -> list[dict]:
    """Attach each BFCL possible answer (``ground_truth``) to its question by ``id``.

    Raises RecordError when a question has no answer, or a question / answer has no ``id`` (an answer no
    ``ground_truth``), naming it by its label (``file:line``, default ``question i`` / ``answer i``).
    """
    by_id = {}
    for i, a in enumerate(answers):
        label = answer_labels[i] if answer_labels else f"answer {i}"
        if "id" not in a or "ground_truth" not in a:
            raise RecordError(f"{label}: a possible answer needs `id` and `ground_truth`, got keys {sorted(a)}")
        by_id[a["id"]] = a["ground_truth"]
    out = []
    for i, q in enumerate(questions):
        label = question_labels[i] if question_labels else f"question {i}"
        if "id" not in q:
            raise RecordError(f"{label}: missing `id` (needed to join the possible answers)")
        if q["id"] not in by_id:
            raise RecordError(f"{label}: BFCL question {q['id']!r} has no possible answer")
        out.append({**q, "ground_truth": by_id[q["id"]]})
    return out


def record_kind(record: dict[str, Any]) -> str:
    """``"healthbench"`` or ``"bfcl"`` from the record's fields (never from its id)."""
    if "rubrics" in record:
        return "healthbench"
    if "function" in record or "tools" in record:
        return "bfcl"
    raise RecordError(f"record {record.get('id') or record.get('prompt_id')!r}: needs `rubrics` (HealthBench) "
                      "or `function` + `ground_truth` (BFCL)")


def to_item(record: dict[str, Any], index: int, label: str | None = None) -> dict[str, Any]:
    """The gateway item (docs/contracts.md) for one record with a ``completion``; ``label`` names the record in
    errors (default ``record <index>``). Raises RecordError naming the record and the missing field."""
    label = label or f"record {index}"
    if "completion" not in record:
        raise RecordError(f"{label}: missing `completion` (the answer to score: a text or an OpenAI assistant "
                          "message); examples/ holds ready-to-score files")
    try:
        kind = record_kind(record)
    except RecordError as exc:
        raise RecordError(f"{label}: {exc}") from exc
    if kind == "healthbench":
        return {"id": str(record.get("id") or record.get("prompt_id") or index),
                "group_id": record.get("prompt_id"), "prompt": record["prompt"],
                "completion": record["completion"], "rubrics": record["rubrics"]}
    if "ground_truth" not in record:
        raise RecordError(f"{label} (BFCL {record.get('id')!r}): missing `ground_truth` (join the possible-answer "
                          "file with `--answers`)")
    question = record.get("question") or [[]]
    prompt = question[0] if question and isinstance(question[0], list) else question
    item = {"id": str(record.get("id", index)), "group_id": record.get("group_id"), "prompt": prompt,
            "completion": record["completion"], "tools": record.get("function") or record.get("tools"),
            "ground_truth": record["ground_truth"]}
    for key in ("mode", "format", "options"):
        if key in record:
            item[key] = record[key]
    return item
