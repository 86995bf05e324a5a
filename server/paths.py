"""URL path convertors for FHIR routes: resource types and ids by their own rules.

With these, `/fhir/{type}/{id}` can never swallow `/fhir/Patient/_history` (a FHIR id has no underscore), so
routes need no fragile ordering. https://hl7.org/fhir/R4B/http.html#general
"""

from __future__ import annotations

from typing import Any

from starlette.convertors import Convertor, register_url_convertor


class FhirTypeConvertor(Convertor[str]):
    """A resource type name as it may appear in a URL."""

    regex = "[A-Z][A-Za-z]{1,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class FhirIdConvertor(Convertor[str]):
    """A logical id or version id: [A-Za-z0-9-.]{1,64}."""

    regex = "[A-Za-z0-9\\-.]{1,64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class OperationNameConvertor(Convertor[str]):
    """The name of an operation after its `$`."""

    regex = "[a-z][A-Za-z0-9\\-]{0,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def register() -> None:
    """Make {name:fhirtype} and {name:fhirid} usable in route paths."""
    register_url_convertor("fhirtype", FhirTypeConvertor())
    register_url_convertor("fhirid", FhirIdConvertor())
    register_url_convertor("opname", OperationNameConvertor())


register()

TYPE = "{type:fhirtype}"
ID = "{id:fhirid}"
VID = "{vid:fhirid}"
OP = "${op:opname}"


def path_parameters(*names: str) -> dict[str, Any]:
    """OpenAPI parameters for path segments the endpoint reads from request.path_params."""
    return {"parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]}
