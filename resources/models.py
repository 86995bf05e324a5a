"""The R4B resource models: the only module that imports fhir.resources, and only when a model is first needed.

The models take about 70 MB; with a validation worker they live there alone, so the serving process never
imports them (it needs the resource types and summary elements only, which resources/elements.py holds).
https://hl7.org/fhir/R4B/resourcelist.html
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import ValidationError

from resources.elements import kind_issues, resource_type_names
from resources.errors import Issue
from resources.messages import model_message

FHIR_VERSION = "4.3.0"

# pydantic error types mapped to OperationOutcome issue codes (fhirstarter's idea, our table).
_ISSUE_CODE = {
    "missing": "required",
    "extra_forbidden": "structure",
    "json_invalid": "structure",
    "model_type": "structure",
    "list_type": "structure",
    "dict_type": "structure",
    "model_validation_format": "structure",
}


def resource_types() -> frozenset[str]:
    """Every resource type of R4B."""
    return resource_type_names()


@cache
def _model_class_of() -> Any:
    from resources.model_fastpath import install  # before the first model class is built

    install()
    from fhir.resources.R4B import get_fhir_model_class  # here, not at the top: see the module docstring

    return get_fhir_model_class


@cache
def _model(resource_type: str) -> Any:
    return _model_class_of()(resource_type)


def _location(loc: tuple[Any, ...], resource_type: str) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("__root__", "root"):
            path += f".{part}"
    return path


def model_issues(resource_type: str, data: dict[str, Any]) -> list[Issue]:
    """Validate a resource against its R4B pydantic model and primitives' JSON kinds; an empty list means valid."""
    kinds = kind_issues(resource_type, data)
    if kinds:
        return kinds
    try:
        _model(resource_type).model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            where = _location(tuple(err["loc"]), resource_type)
            issues.append(Issue(_ISSUE_CODE.get(err["type"], "required" if "is required" in err["msg"] else "value"),
                                model_message(dict(err), where), expression=(where,)))
        return issues
    except (ValueError, TypeError) as exc:  # fhir_core raises plain errors from some root validators
        return [Issue("invalid", str(exc), expression=(resource_type,))]
    return []


def warm_up() -> None:
    """Import every model class once so the first request does not pay for it."""
    for name in resource_types():
        _model(name)
