"""The processes of the stack: the ASGI app of each HTTP service and its default port (docs/contracts.md,
"Processes and ports"). Each service's settings class reads its default port from here (``RVPO_*_PORT``
overrides it), and so do the URLs the worker and the clients use by default."""

from __future__ import annotations

#: service -> (ASGI app as ``module:attribute``, default port)
HTTP_SERVICES: dict[str, tuple[str, int]] = {
    "gateway": ("services.gateway.app:app", 8000),
    "judge": ("judge.app:app", 8001),
    "rules": ("services.rules.app:app", 8002),
}
#: the Celery application the worker runs (``celery -A ... worker``)
WORKER_APP = "services.worker.celery_app:celery_app"


def default_port(service: str) -> int:
    """Default port of ``service`` (gateway | judge | rules). Raises KeyError for another name."""
    return HTTP_SERVICES[service][1]


def local_url(service: str) -> str:
    """``http://127.0.0.1:<default port>`` of ``service``."""
    return f"http://127.0.0.1:{default_port(service)}"
