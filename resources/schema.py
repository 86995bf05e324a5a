"""Validation against the official R4B JSON schema (types, unknown elements, primitive formats).

https://hl7.org/fhir/R4B/json.html#schema
"""

from __future__ import annotations

from functools import cache
from importlib import resources as pkg
from typing import Any

import jsonschema_rs
import orjson

from resources.errors import Issue


@cache
def _schema() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(pkg.files("resources").joinpath("data/fhir.schema.json").read_bytes())
    return data


@cache
def resource_type_names() -> frozenset[str]:
    """The resource types the schema's discriminator lists (all of R4B)."""
    return frozenset(_schema()["discriminator"]["mapping"])


# The schema's string patterns use XML-schema semantics, where \S is "not space, tab, CR or LF"; in the
# validator's (Unicode) regex dialect \S also excludes no-break spaces, which FHIR strings may hold.
# This is the rule the pattern means: no control characters but tab, CR and LF (datatypes.html#string).
_TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F]+$"


def _fixed_patterns(definitions: dict[str, Any]) -> dict[str, Any]:
    patched = dict(definitions)
    for name in ("string", "markdown"):
        if "pattern" in patched.get(name, {}):
            patched[name] = {**patched[name], "pattern": _TEXT_PATTERN}
    return patched


@cache
def build_validator() -> Any:
    """One validator for every type, dispatching on resourceType with if/then (draft-07).

    Compiling the 3.4 MB of definitions once costs ~0.1 s, where one validator per type would cost that
    141 times.
    """
    definitions = _fixed_patterns(_schema()["definitions"])
    dispatch = [{"if": {"properties": {"resourceType": {"const": name}}, "required": ["resourceType"]},
                 "then": {"$ref": f"#/definitions/{name}"}} for name in sorted(resource_type_names())]
    return jsonschema_rs.validator_for({"$schema": "http://json-schema.org/draft-07/schema#",
                                        "definitions": definitions, "allOf": dispatch})


def _path(resource_type: str, parts: Any) -> str:
    out = resource_type
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def schema_issues(validator: Any, resource_type: str, data: dict[str, Any], limit: int = 20) -> list[Issue]:
    """Validate against the JSON schema definition of the type; empty when valid."""
    if validator.is_valid(data):
        return []
    issues: list[Issue] = []
    for err in validator.iter_errors(data):
        message = err.message
        code = "structure" if "Additional properties" in message or "is not of type" in message else (
            "code-invalid" if "is not one of" in message else "value")  # the schema's enums are required bindings
        issues.append(Issue(code, message, expression=(_path(resource_type, err.instance_path),)))
        if len(issues) >= limit:
            break
    return issues


def element_info(definition: str, name: str) -> tuple[bool, str | None] | None:
    """(repeats, type definition) of element `name` of a schema definition, or None when unknown."""
    prop = _schema()["definitions"].get(definition, {}).get("properties", {}).get(name)
    if prop is None:
        return None
    if prop.get("type") == "array":
        ref = prop.get("items", {}).get("$ref")
        return True, ref.rsplit("/", 1)[-1] if ref else None
    ref = prop.get("$ref")
    return False, ref.rsplit("/", 1)[-1] if ref else None
