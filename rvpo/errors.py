"""What a failed `rvpo` command prints: one or two lines saying what went wrong and what fixes it.

Exit codes of every command (README, "The command line"): 0 = done, everything scored; 1 = error (nothing or
not everything could run: the message says why); 2 = wrong usage (click), or an input file that is not of
its format at all (a JSONL that is not UTF-8 or not JSON, a config that is not YAML), named with its line;
3 = finished with some rewards unscored; 4 = finished with nothing scored. A full traceback is shown only with
``rvpo --debug ...``.
"""

from __future__ import annotations

import json
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_NONE = 0, 1, 2, 3, 4
#: Exit code for a final status (contracts.results: done / partial / failed).
STATUS_EXIT = {"done": EXIT_OK, "partial": EXIT_PARTIAL, "failed": EXIT_NONE}


class CLIError(Exception):
    """A failure the user can fix: ``message`` says what is wrong, ``hint`` the command or setting that fixes it."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.message, self.hint, self.exit_code = message, hint, exit_code


def field_path(loc: list[Any]) -> str:
    """A pydantic/FastAPI ``loc`` as a path: ``["body", "items", 3, "rubrics", 0, "points"]`` ->
    ``items[3].rubrics[0].points``."""
    out = ""
    for part in loc:
        if part in ("body", "query", "header") and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def rejected_fields(body: str) -> list[tuple[list[Any], str]]:
    """(loc, msg) of every field a 4xx body names (FastAPI's ``{"detail": [{"loc", "msg"}, ...]}``); a body
    with a plain ``detail`` string gives ``[([], detail)]``; one that is not JSON gives ``[([], body)]``."""
    try:
        detail = json.loads(body).get("detail", body)
    except (ValueError, AttributeError):
        return [([], body.strip()[:300])]
    if isinstance(detail, str):
        return [([], detail)]
    return [(list(d.get("loc") or []), str(d.get("msg", d))) for d in detail if isinstance(d, dict)] or \
        [([], str(detail)[:300])]


def _settings_error(exc) -> tuple[str, str]:
    """A pydantic-settings ValidationError as 'RVPO_X: message' lines (the env variable at fault)."""
    title = getattr(exc, "title", "settings")
    lines = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err.get("loc", ()) if not isinstance(p, int))
        lines.append(f"RVPO_{name.upper()}: {err.get('msg')} (got {err.get('input')!r})")
    return f"invalid setting in {title}: " + "; ".join(lines), "fix or unset that environment variable " \
        "(`rvpo settings` lists them)"


def describe(exc: BaseException) -> tuple[str, str]:
    """(what went wrong, what fixes it) for an exception that reached the command line."""
    import httpx
    from pydantic import ValidationError

    from services.gateway.client import GatewayError

    if isinstance(exc, CLIError):
        return exc.message, exc.hint
    if isinstance(exc, GatewayError):
        code = exc.status_code
        fields = "; ".join(f"{field_path(loc)}: {msg}" if loc else msg for loc, msg in rejected_fields(exc.body))
        hint = {401: "set RVPO_API_TOKEN to the gateway's token",
                413: "send fewer items per job (`--batch-size`) or raise RVPO_GATEWAY_MAX_ITEMS / _MAX_BODY_BYTES",
                422: "fix that field of the input (docs/contracts.md lists every field)"}.get(code, "")
        return f"the gateway refused the request ({code}): {fields or str(exc)}", hint
    if isinstance(exc, httpx.TransportError):
        url = exc.request.url if getattr(exc, "_request", None) is not None else "the server"
        return f"cannot reach {url} ({type(exc).__name__}: {exc})", "is the service running? (`rvpo up`)"
    if isinstance(exc, ValidationError) and exc.title.endswith("Settings"):
        return _settings_error(exc)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}", ""
    if isinstance(exc, TimeoutError):
        return str(exc), "raise the timeout (`--job-timeout`) or RVPO_JOB_DEADLINE_S, or add workers"
    text = str(exc).strip() or type(exc).__name__
    if type(exc).__name__ in {"RecordError", "InputFileError", "TrainConfigError", "StackError", "ValueError",
                              "TrainingStopped"}:
        return text, ""
    return f"{type(exc).__name__}: {text}", "this looks like a bug: run again with `rvpo --debug ...` and report " \
        "the traceback"
