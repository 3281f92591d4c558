"""Judge service settings, read from the environment by pydantic-settings.

Every field below is ``RVPO_`` + its upper-cased name (e.g. ``judge_base_url`` <- ``RVPO_JUDGE_BASE_URL``);
``redis_url`` / ``api_token`` / ``key_prefix`` come from :class:`services.common.settings.CommonSettings`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from contracts.processes import default_port
from services.common.settings import CommonSettings


class JudgeSettings(CommonSettings):
    """All knobs of the judge (``RVPO_JUDGE_*``). Units are in the field names (``_s``, ``_ms``, ``_bytes``)."""

    # --- backend selection -------------------------------------------------------------------------------
    judge_backend: Literal["openai", "local"] = Field(
        "openai", description="`openai`: any OpenAI-compatible /chat/completions server; `local`: a HF model.")
    judge_base_url: str = Field(
        "http://127.0.0.1:8080/v1", description="OpenAI-compatible base URL (…/v1) of the grader LLM.")
    judge_base_urls: Annotated[list[str], NoDecode] = Field(
        [],
        description="Several grader replicas (comma-separated or a JSON list of …/v1 URLs); overrides "
                    "`RVPO_JUDGE_BASE_URL` when set.")
    judge_model: str = Field("gpt-4.1-2025-04-14", description="Grader model name sent to the backend.")
    judge_api_key: SecretStr | None = Field(None, description="Bearer key for the backend (unset: no header).")
    judge_local_model_path: str | None = Field(None, description="Path of a local HF causal LM (backend=local).")
    judge_local_device: str = Field("auto", description="torch device for backend=local (`auto`: cuda if present).")
    judge_local_max_length: int = Field(8192, ge=16, description="Longest grader prompt (tokens) for backend=local.")

    # --- grading -----------------------------------------------------------------------------------------
    judge_yes_no_mode: bool = Field(
        False, description="Ask for one token yes/no and read logprobs/top_logprobs instead of generating JSON.")
    judge_yes_no_threshold: float = Field(0.5, ge=0, le=1, description="criteria_met iff P(yes)/(P(yes)+P(no)) > this.")
    judge_top_logprobs: int = Field(5, ge=1, le=20, description="top_logprobs requested in yes/no mode.")
    judge_temperature: float = Field(0.0, ge=0, description="Sampling temperature of the grader.")
    judge_max_tokens: int = Field(1024, ge=1, description="max_tokens for a JSON verdict (yes/no mode uses 1).")

    # --- batching, concurrency, retries ---------------------------------------------------------------------
    judge_max_batch_size: int = Field(32, ge=1, description="Most rubric items dispatched to the backend together.")
    judge_max_wait_ms: float = Field(5.0, ge=0, description="Longest a queued item waits for its batch to fill.")
    judge_concurrency: int = Field(
        64, ge=1, description="Most backend HTTP requests in flight at once, per grader replica.")
    judge_retries: int = Field(3, ge=0, description="Retries after 408/429/5xx/transport errors/timeouts.")
    judge_backoff_s: float = Field(0.5, ge=0, description="First backoff; doubles per retry (exponential).")
    judge_backoff_max_s: float = Field(8.0, ge=0, description="Longest single backoff.")
    judge_parse_retries: int = Field(
        3, ge=0, description="Re-asks after an answer with no valid verdict; then the verdict is null.")
    judge_timeout_s: float = Field(60.0, gt=0, description="Per backend request timeout.")

    # --- several grader replicas (see judge/backends/routing.py) ----------------------------------------------
    judge_routing: Literal["sticky", "round_robin", "random"] = Field(
        "sticky", description="How criteria pick a replica: `sticky` = consistent hash of the routing key with "
                              "bounded loads; `round_robin` / `random` per criterion.")
    judge_routing_key: Literal["prompt", "example"] = Field(
        "prompt", description="Sticky key: `prompt` (the conversation before the completion: the G completions "
                              "of one prompt share its prefix) or `example` (prompt + completion).")
    judge_routing_load_factor: float = Field(
        1.25, ge=1.0, description="Bounded loads: a replica with more than this x the mean in-flight requests "
                                  "takes no new example (it goes to the next replica on the ring).")
    judge_routing_vnodes: int = Field(64, ge=1, le=4096, description="Points per replica on the hash ring.")
    judge_replica_failures: int = Field(
        2, ge=1, description="Consecutive failed attempts (transport error, timeout, 408/429/5xx) that put a "
                             "replica in cool-down.")
    judge_replica_cooldown_s: float = Field(
        10.0, gt=0, description="Seconds a failing replica is skipped (then it is tried again; one more failure "
                                "restarts the cool-down).")
    judge_session_header: str = Field(
        "X-Session-ID", description="Header carrying the routing key on every grader request, for a router in "
                                    "front of the replicas (vLLM router `consistent_hash`); empty: none.")
    judge_prompt_layout: Literal["system_first", "conversation_first"] = Field(
        "system_first", description="Grader messages: `system_first` (static system message, then the example) "
                                    "or `conversation_first` (one user message, the conversation first, for "
                                    "routers that match on the request text).")

    # --- cache -------------------------------------------------------------------------------------------
    judge_cache_enabled: bool = Field(True, description="Use the Redis verdict cache.")
    judge_cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Lifetime of a cached verdict.")
    judge_cache_prefix: str = Field("rvpo:judge:v1", description="Prefix of cache keys (isolate tests/deployments).")

    # --- request limits ----------------------------------------------------------------------------------
    judge_max_items: int = Field(256, ge=1, description="Most examples in one POST /v1/judge (413 beyond).")
    judge_max_rubrics: int = Field(128, ge=1, description="Most rubric items per example (413 beyond).")
    judge_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body (413 beyond).")

    # --- where `rvpo serve judge` / `rvpo up` bind it -----------------------------------------------------
    judge_host: str = Field("127.0.0.1", description="Interface `rvpo serve judge` binds.")
    judge_port: int = Field(default_port("judge"), ge=1, le=65535,
                            description="Port `rvpo serve judge` listens on.")

    @field_validator("judge_base_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        """``RVPO_JUDGE_BASE_URLS``: a JSON list or comma/whitespace-separated URLs."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                try:
                    return json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"not a JSON list of URLs: {exc}") from None
            return [u for u in text.replace(",", " ").split() if u]
        return value

    @field_validator("judge_base_urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"{u!r} is not an http(s) URL")
        if len(set(urls)) != len(urls):
            raise ValueError("the same URL is listed twice")
        return urls

    def backend_urls(self) -> list[str]:
        """The grader replicas' base URLs: ``RVPO_JUDGE_BASE_URLS`` when set, else ``[RVPO_JUDGE_BASE_URL]``."""
        return [u.rstrip("/") for u in (self.judge_base_urls or [self.judge_base_url])]

    def model_id(self) -> str:
        """The model name recorded with every verdict and hashed into cache keys."""
        if self.judge_backend == "local":
            return f"local:{self.judge_local_model_path}"
        return self.judge_model


@lru_cache(maxsize=1)
def get_settings() -> JudgeSettings:
    """Settings of this process (read once)."""
    return JudgeSettings()
