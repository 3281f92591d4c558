"""Tool docs on the wire: BFCL function docs or OpenAI tools, read into :class:`FuncDoc` (the form the BFCL
checker in ``services/rules/bfcl.py`` uses).

A ``tools`` list is valid when :func:`normalize_tools` reads it: every doc an object with a non-empty, unique
``name``; ``parameters`` an object whose ``properties`` are objects with a supported ``type`` (BFCL's
``PYTHON_TYPE_MAPPING`` plus the JSON-Schema spellings ``number`` / ``object``; a union such as
``["string", "null"]`` reads as its first non-null type); ``required`` a list of names. The gateway, the rules
service and the in-process rules library apply this same rule, so a doc one of them rejects every one rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# BFCL PYTHON_TYPE_MAPPING plus the JSON-Schema spellings of OpenAI tool docs ("number", "object").
PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "number": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
    "any": str,
}
NESTED_TYPES = ("array", "tuple")  # BFCL PYTHON_NESTED_TYPE_CHECK_LIST


class ToolSchemaError(ValueError):
    """A tool doc that cannot be read; the message starts with the path of the field at fault."""


@dataclass(slots=True, frozen=True)
class ParamSpec:
    """One schema parameter: BFCL type name, Python type, item type (arrays/tuples) and schema default."""

    name: str
    type_name: str
    py_type: type
    nested: type | None
    has_default: bool
    default: Any


@dataclass(slots=True, frozen=True)
class FuncDoc:
    """A normalized function doc: ``params`` by name and the schema-``required`` names in order."""

    name: str
    params: dict[str, ParamSpec]
    required: tuple[str, ...]


def _schema_type(raw: Any, path: str) -> str:
    if isinstance(raw, list):  # JSON-Schema union such as ["string", "null"]
        raw = next((t for t in raw if t != "null"), None)
    if raw not in PY_TYPES:
        raise ToolSchemaError(f"{path}.type: unsupported type {raw!r}; expected one of {sorted(PY_TYPES)}")
    return raw


def normalize_tools(tools: list[dict]) -> dict[str, FuncDoc]:
    """Read BFCL function docs (``{"name", "parameters": {"type": "dict", "properties", "required"}}``) or
    OpenAI tools (``{"type": "function", "function": {...}}`` with JSON-Schema types) into ``{name: FuncDoc}``.

    Raises :class:`ToolSchemaError` naming the path (``tools[i]...``) of a malformed doc or duplicate name.
    """
    docs: dict[str, FuncDoc] = {}
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise ToolSchemaError(f"{path}: expected an object")
        if isinstance(tool.get("function"), dict):
            tool, path = tool["function"], path + ".function"
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise ToolSchemaError(f"{path}.name: missing or not a string")
        if name in docs:
            raise ToolSchemaError(f"{path}.name: duplicate function {name!r}")
        schema = tool.get("parameters") or {}
        if not isinstance(schema, dict):
            raise ToolSchemaError(f"{path}.parameters: expected an object")
        props = schema.get("properties") or {}
        if not isinstance(props, dict):
            raise ToolSchemaError(f"{path}.parameters.properties: expected an object")
        params = {}
        for pname, p in props.items():
            ppath = f"{path}.parameters.properties.{pname}"
            if not isinstance(p, dict):
                raise ToolSchemaError(f"{ppath}: expected an object")
            tname = _schema_type(p.get("type"), ppath)
            nested = None
            if tname in NESTED_TYPES and isinstance(p.get("items"), dict) and "type" in p["items"]:
                nested = PY_TYPES[_schema_type(p["items"]["type"], ppath + ".items")]
            params[pname] = ParamSpec(pname, tname, PY_TYPES[tname], nested, "default" in p, p.get("default"))
        required = schema.get("required") or []
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ToolSchemaError(f"{path}.parameters.required: expected a list of names")
        docs[name] = FuncDoc(name, params, tuple(required))
    return docs
