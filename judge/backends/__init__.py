"""Grader backends: an OpenAI-compatible HTTP server or a local transformers model (see :func:`make_backend`)."""

from __future__ import annotations

from judge.backends.base import Backend, GradeJob, Outcome
from judge.settings import JudgeSettings


def make_backend(settings: JudgeSettings) -> Backend:
    """The backend ``RVPO_JUDGE_BACKEND`` selects. Raises ValueError when backend=local has no model path."""
    if settings.judge_backend == "local":
        if not settings.judge_local_model_path:
            raise ValueError("RVPO_JUDGE_BACKEND=local needs RVPO_JUDGE_LOCAL_MODEL_PATH")
        from judge.backends.local_hf import LocalHFBackend  # imports torch: only when asked for

        return LocalHFBackend.from_settings(settings)
    from judge.backends.openai_compat import OpenAICompatBackend

    return OpenAICompatBackend(settings)


__all__ = ["Backend", "GradeJob", "Outcome", "make_backend"]
