"""`rvpo score`: send a JSONL file of records through the gateway and write one scored line per record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.gateway.client import GatewayClient
from rvpo.records import join_answers, read_jsonl, to_item, write_jsonl


def score_records(records: list[dict[str, Any]], gateway_url: str | None = None, *, token: str | None = None,
                  batch_size: int = 64, job_timeout_s: float = 600.0, progress=None) -> tuple[list[dict], list[str]]:
    """Score records in jobs of ``batch_size``; returns (records with a ``result`` field, job statuses).

    Each output record is the input record plus ``result``: the gateway's per-item result (reward vector with
    names, values and reasons, HealthBench score, BFCL verdict). ``gateway_url`` / ``token``: None reads
    ``RVPO_GATEWAY_URL`` / ``RVPO_API_TOKEN``. Raises RecordError for a malformed record and
    services.gateway.client.GatewayError when the gateway rejects a batch (its body names the field).
    """
    items = [to_item(r, i) for i, r in enumerate(records)]
    client = GatewayClient(gateway_url, token=token)
    task = progress.add_task("scoring", total=len(items)) if progress else None
    out, statuses = [], []
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            job = client.score(chunk, job_timeout_s=job_timeout_s)
            statuses.append(job["status"])
            for record, result in zip(records[start:start + batch_size], job["items"], strict=True):
                out.append({**record, "result": result})
            if progress:
                progress.advance(task, len(chunk))
    finally:
        client.close()
    return out, statuses


def score_file(input_path: Path, output_path: Path, gateway_url: str | None = None, *, token: str | None = None,
               answers: Path | None = None, batch_size: int = 64, job_timeout_s: float = 600.0,
               progress=None) -> tuple[int, list[str]]:
    """Read, score and write; returns (lines written, job statuses)."""
    records = list(read_jsonl(input_path))
    if answers is not None:
        records = join_answers(records, read_jsonl(answers))
    scored, statuses = score_records(records, gateway_url, token=token, batch_size=batch_size,
                                     job_timeout_s=job_timeout_s, progress=progress)
    return write_jsonl(output_path, scored), statuses
