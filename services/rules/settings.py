"""Rules-service settings (pydantic-settings, environment prefix ``RVPO_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from contracts.processes import default_port
from services.common.settings import CommonSettings


class RulesSettings(CommonSettings):
    """Environment: ``RVPO_RULES_MAX_ITEMS``, ``RVPO_RULES_MAX_BODY_BYTES``, ``RVPO_RULES_BUDGET_S``,
    ``RVPO_RULES_MAX_BUDGET_S``, ``RVPO_RULES_HOST`` and
    ``RVPO_RULES_PORT`` (where `rvpo serve rules` / `rvpo up` bind it), plus the shared ``RVPO_API_TOKEN``."""

    rules_max_items: int = Field(1024, ge=1, description="Most items in one POST /v1/rules/score (413 above).")
    rules_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body in bytes (413 above).")
    rules_budget_s: float = Field(
        25.0, gt=0, description="Seconds a request without an `X-RVPO-Budget-S` header may take; items not "
                                "started by then are NaN (`rules_budget_exceeded`).")
    rules_max_budget_s: float = Field(
        300.0, gt=0, description="Ceiling of the `X-RVPO-Budget-S` header (a larger value is lowered to it).")
    rules_host: str = Field("127.0.0.1", description="Interface `rvpo serve rules` binds.")
    rules_port: int = Field(default_port("rules"), ge=1, le=65535,
                            description="Port `rvpo serve rules` listens on.")


@lru_cache(maxsize=1)
def get_settings() -> RulesSettings:
    """The settings read once from the environment."""
    return RulesSettings()
