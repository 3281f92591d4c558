"""Every ``RVPO_*`` environment variable the services and clients read, from their pydantic-settings classes.

`rvpo settings` prints the values in effect (and which are defaults), `rvpo settings --markdown` the defaults as
the README's table; tests check that the README documents each variable.
"""

from __future__ import annotations

from collections.abc import Iterator


def settings_classes() -> list[tuple[str, type]]:
    """(part, settings class) for every service, shared settings first."""
    from judge.settings import JudgeSettings
    from services.common.settings import CommonSettings, QueueSettings
    from services.gateway.settings import GatewayClientSettings, GatewaySettings
    from services.rules.settings import RulesSettings
    from services.worker.settings import WorkerSettings

    return [("all services", CommonSettings), ("gateway, worker", QueueSettings), ("gateway", GatewaySettings),
            ("worker", WorkerSettings), ("judge", JudgeSettings), ("rules", RulesSettings),
            ("clients", GatewayClientSettings)]


def env_rows() -> Iterator[tuple[str, str, str, str]]:
    """(ENV_NAME, part, default, description), each variable once (shared fields under "all services")."""
    seen: set[str] = set()
    for part, cls in settings_classes():
        prefix = cls.model_config.get("env_prefix") or ""
        for name, field in cls.model_fields.items():
            env = (prefix + name).upper()
            if env not in seen:
                seen.add(env)
                yield env, part, repr(field.default), field.description or ""


def _secret(name: str, value) -> bool:
    return name == "api_token" or name.endswith("_api_key") or type(value).__name__ == "SecretStr"


def effective_rows() -> Iterator[tuple[str, str, str, bool, str]]:
    """(ENV_NAME, part, value in effect, whether it was set in the environment, description), each variable once.
    Secrets that are set show as ``'***'``. Raises pydantic's ValidationError (naming the variable) for a value
    that does not parse."""
    seen: set[str] = set()
    for part, cls in settings_classes():
        prefix = cls.model_config.get("env_prefix") or ""
        obj = cls()
        for name, field in cls.model_fields.items():
            env = (prefix + name).upper()
            if env in seen:
                continue
            seen.add(env)
            value = getattr(obj, name)
            shown = "'***'" if value is not None and _secret(name, value) else repr(value)
            yield env, part, shown, name in obj.model_fields_set, field.description or ""


def markdown_table() -> str:
    """The configuration table as Markdown (the README's "Configuration" section)."""
    lines = ["| variable | part | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{e}` | {p} | `{d}` | {m} |" for e, p, d, m in env_rows()]
    return "\n".join(lines)
