"""Wire format of ``POST /v1/judge``: defined once in :mod:`contracts.judge` (docs/contracts.md, "Judge service")."""

from contracts.judge import JudgeItem, JudgeRequest, JudgeResponse, JudgeResult, RubricResult  # noqa: F401
from contracts.messages import Message, Rubric  # noqa: F401
