"""The R4B resource models: the only module that imports fhir.resources.

https://hl7.org/fhir/R4B/resourcelist.html
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from resources.errors import Issue
from resources.schema import resource_type_names

FHIR_VERSION = "4.3.0"

# pydantic error types mapped to OperationOutcome issue codes (fhirstarter's idea, our table).
_ISSUE_CODE = {
    "missing": "required",
    "extra_forbidden": "structure",
    "json_invalid": "structure",
    "model_type": "structure",
    "list_type": "structure",
    "dict_type": "structure",
}


def resource_types() -> frozenset[str]:
    """Every resource type of R4B."""
    return resource_type_names()


@cache
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def _location(loc: tuple[Any, ...], resource_type: str) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "__root__":
            path += f".{part}"
    return path


def model_issues(resource_type: str, data: dict[str, Any]) -> list[Issue]:
    """Validate a resource against its R4B pydantic model; an empty list means valid."""
    try:
        _model(resource_type).model_validate(data)
    except ValidationError as exc:
        return [
            Issue(_ISSUE_CODE.get(err["type"], "required" if "is required" in err["msg"] else "value"),
                  err["msg"],
                  expression=(_location(tuple(err["loc"]), resource_type),))
            for err in exc.errors(include_url=False)
        ]
    except (ValueError, TypeError) as exc:  # fhir_core raises plain errors from some root validators
        return [Issue("invalid", str(exc), expression=(resource_type,))]
    return []


def warm_up() -> None:
    """Import every model class once so the first request does not pay for it."""
    for name in resource_types():
        _model(name)


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """JSON names of the elements marked isSummary for a type (choice elements by each typed name)."""
    names = {"resourceType", "id", "meta"}
    for name, info in _model(resource_type).model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            names.add(info.alias or name)
            names.add("_" + (info.alias or name))
    return frozenset(names)
