"""OpenAPI fragments: FHIR JSON request bodies and OperationOutcome error responses.

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

from typing import Any

from resources.models import resource_types

_RESOURCE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}},
    "additionalProperties": True,
}
_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {"type": "array", "items": {"type": "object", "required": ["severity", "code"], "properties": {
            "severity": {"type": "string"}, "code": {"type": "string"}, "diagnostics": {"type": "string"},
            "expression": {"type": "array", "items": {"type": "string"}}}}},
    },
}
_FHIR = "application/fhir+json"


def _outcome(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_FHIR: {"schema": _OUTCOME_SCHEMA}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _outcome("Bad request: the OperationOutcome names what is wrong"),
    404: _outcome("Unknown resource or resource type"),
    405: _outcome("Method not allowed"),
    406: _outcome("Not acceptable (only FHIR JSON is produced)"),
    409: _outcome("Version conflict"),
    410: _outcome("Resource deleted"),
    412: _outcome("Precondition failed (If-Match or conditional criteria)"),
    413: _outcome("Request body or bundle too large"),
    415: _outcome("Unsupported media type"),
    422: _outcome("Unprocessable resource (business rule)"),
    500: _outcome("Unexpected server fault"),
}
RESOURCE_OK: dict[int | str, dict[str, Any]] = {
    200: {"description": "The resource", "content": {_FHIR: {"schema": _RESOURCE_SCHEMA}}},
    201: {"description": "Created", "content": {_FHIR: {"schema": _RESOURCE_SCHEMA}}},
}
BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        _FHIR: {"schema": _RESOURCE_SCHEMA},
        "application/json": {"schema": _RESOURCE_SCHEMA},
        "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
    }},
}
PARAMETERS_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {_FHIR: {"schema": {
        "type": "object", "required": ["resourceType"],
        "properties": {"resourceType": {"const": "Parameters"}, "parameter": {"type": "array"}}}}}},
}
FORM_BODY: dict[str, Any] = {
    "requestBody": {"required": False, "content": {
        "application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": True}}}},
}


def describe_parameters(schema: dict[str, Any]) -> None:
    """Type the generic path parameters: resource types as an enum, ids and versions by the FHIR id rule."""
    types = sorted(resource_types())
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for param in operation.get("parameters", []):
                if param.get("in") != "path":
                    continue
                if param["name"] == "type":
                    param["schema"] = {"type": "string", "enum": types}
                elif param["name"] == "op":
                    param["schema"] = {"type": "string", "pattern": "^[a-z][A-Za-z0-9\\-]{0,63}$"}
                elif param["name"] in ("id", "vid"):
                    param["schema"] = {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"}
