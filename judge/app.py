"""HTTP app of the judge: ``uvicorn judge.app:app --port 8001``.

`POST /v1/judge` (bearer token when RVPO_API_TOKEN is set), `/livez`, `/readyz`, `/metrics`. A malformed
request is a 422 naming the field (FastAPI/pydantic ``loc``); too many items, too many rubric items in one
example, or too large a body is a 413.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status

from contracts.judge import JudgeRequest, JudgeResponse
from judge import metrics
from judge.service import JudgeService
from judge.settings import get_settings
from services.common.http import ERROR_RESPONSES, install_common, require_token, too_many_items

settings = get_settings()


@asynccontextmanager
async def lifespan(app: FastAPI):
    service = JudgeService.from_settings(settings)
    service.batcher.start()
    app.state.service = service
    try:
        yield
    finally:
        await service.aclose()


async def _ready() -> tuple[bool, str]:
    service: JudgeService | None = getattr(app.state, "service", None)
    if service is None:
        return False, "starting"
    return await service.ready()


app = FastAPI(title="rvpo judge", version="1", lifespan=lifespan)
install_common(app, max_body_bytes=settings.judge_max_body_bytes, ready_check=_ready,
               api_token=settings.api_token)
router = APIRouter(dependencies=[Depends(require_token(settings))], responses=ERROR_RESPONSES)


@router.post("/v1/judge", response_model=JudgeResponse)
async def judge(body: JudgeRequest, request: Request) -> dict:
    """Grade each example's rubric items against its completion; results in request order."""
    if len(body.items) > settings.judge_max_items:
        raise too_many_items(len(body.items), settings.judge_max_items)
    for i, item in enumerate(body.items):
        if len(item.rubrics) > settings.judge_max_rubrics:
            raise HTTPException(
                status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                detail=[{"loc": ["body", "items", i, "rubrics"], "type": "too_many_rubrics",
                         "msg": f"{len(item.rubrics)} rubric items, at most {settings.judge_max_rubrics}"}],
            )
    service: JudgeService = request.app.state.service
    with metrics.IN_FLIGHT.track_inprogress():
        return {"items": await service.judge(body.items)}


app.include_router(router)
