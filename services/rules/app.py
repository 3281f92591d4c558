"""FastAPI app of the rules service: ``uvicorn services.rules.app:app`` (default port 8002).

``POST /v1/rules/score`` answers ``{"items": [RulesResult, ...]}`` in request order (docs/contracts.md);
``/livez``, ``/readyz``, ``/metrics`` come from :func:`services.common.http.install_common`. A batch over
``RVPO_RULES_MAX_ITEMS`` items or ``RVPO_RULES_MAX_BODY_BYTES`` bytes is a 413; a malformed item a 422 naming
the field; a missing/wrong bearer token (when ``RVPO_API_TOKEN`` is set) a 401.
"""

from __future__ import annotations

import math
import time

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import Counter, Histogram

from services.common.http import ERROR_RESPONSES, install_common, require_token, too_many_items
from services.rules.channels import score_item
from services.rules.schemas import (CHANNELS, RulesItem, RulesRequest, RulesResponse, RulesResult, ToolRLValues,
                                    construct)
from services.rules.settings import get_settings

settings = get_settings()
app = FastAPI(title="rvpo rules service", version="0.1.0")
install_common(app, max_body_bytes=settings.rules_max_body_bytes, api_token=settings.api_token)

ITEMS = Counter("rvpo_rules_items_total", "Items scored by the rules service.", ["valid"])
PARSE_ERRORS = Counter("rvpo_rules_parse_errors_total", "Completions that could not be parsed.", ["format"])
INTERNAL_ERRORS = Counter("rvpo_rules_internal_errors_total", "Items whose scoring raised (all channels NaN).")
SECONDS = Histogram("rvpo_rules_request_seconds", "Time to score one POST /v1/rules/score batch.")


def _failed(item: RulesItem, exc: Exception) -> RulesResult:
    reason = f"internal_error: {type(exc).__name__}: {exc}"[:500]
    return construct(
        RulesResult,
        id=item.id, valid=False, error_type="rules:internal_error", error=reason, format=None, calls=[],
        channels=dict.fromkeys(CHANNELS, math.nan), reasons=dict.fromkeys(CHANNELS, reason),
        toolrl=construct(ToolRLValues, format=math.nan, correctness=math.nan),
    )


@app.post("/v1/rules/score", response_model=RulesResponse, responses=ERROR_RESPONSES,
          dependencies=[Depends(require_token(settings))])
def score(request: RulesRequest) -> Response:
    """Score every item; the body is serialized by pydantic so NaN channels go out as ``null``."""
    if len(request.items) > settings.rules_max_items:
        raise too_many_items(len(request.items), settings.rules_max_items)
    start = time.perf_counter()
    results = []
    for item in request.items:
        try:
            result = score_item(item)
        except Exception as exc:  # noqa: BLE001 - one broken item must not fail the batch; it is NaN + reason
            INTERNAL_ERRORS.inc()
            result = _failed(item, exc)
        ITEMS.labels(valid=str(result.valid).lower()).inc()
        if result.error_type == "ast_decoder:decoder_failed":
            PARSE_ERRORS.labels(format=result.format or "unknown").inc()
        results.append(result)
    SECONDS.observe(time.perf_counter() - start)
    body = construct(RulesResponse, items=results).model_dump_json()
    return Response(body, media_type="application/json")
