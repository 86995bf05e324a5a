"""Validation of a resource before it is stored: shape, id rule, R4B model and JSON kinds, references.

https://hl7.org/fhir/R4B/validation.html
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from resources.errors import Invalid, Issue, Unprocessable
from resources.models import model_issues, resource_types
from resources.search.custom import definition_issues

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_RELATIVE_REF = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?")
_ABSOLUTE_REF = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://\S+")
_URN_REF = re.compile(r"urn:(uuid|oid):\S+")
_CONTAINERS = (dict, list)  # a tuple: isinstance with `dict | list` takes a quarter longer (104 against 83 ns)


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds that keep hostile bodies from exhausting the server."""

    max_depth: int = 64


def valid_id(value: object) -> bool:
    """True when value follows the FHIR id rule [A-Za-z0-9-.]{1,64}."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def _too_deep(path: str, limits: ValidationLimits) -> Invalid:
    return Invalid(f"Resource nesting is deeper than the limit of {limits.max_depth}", code="too-costly",
                   expression=(path,))


def _leaf(key: str, value: Any, path: str, out: list[Issue]) -> None:
    # a value that is not an object or an array: the null and blank-string rules, and a reference's form
    if value is None:
        out.append(Issue("structure", "null is not allowed in FHIR JSON", expression=(path,)))
    elif isinstance(value, str):
        if key == "reference":
            problem = reference_issue(value, path)
            if problem:
                out.append(problem)
        if not value.strip() and key != "div":
            out.append(Issue("value", "Empty or blank strings are not allowed in FHIR JSON", expression=(path,)))


def _walk(value: dict[str, Any] | list[Any], path: str, depth: int, limits: ValidationLimits,
          out: list[Issue]) -> None:
    # An object or array (the resource, and what it holds). One pass for the JSON shape rules (json.html#null:
    # no nulls, no empty strings, arrays or objects) and for the form of every Reference.reference. Plain
    # values are judged in their container's loop, and a path is spelled out only for an object or array
    # entered or an issue found: a valid resource is mostly plain values, and a call and a path for each was
    # most of this walk.
    if depth > limits.max_depth:
        raise _too_deep(path, limits)
    deeper = depth + 1 > limits.max_depth  # the children of this value are past the limit
    if isinstance(value, dict):
        if not value:
            out.append(Issue("structure", "Empty objects are not allowed in FHIR JSON", expression=(path,)))
        for key, item in value.items():
            if deeper:
                raise _too_deep(f"{path}.{key}", limits)
            if isinstance(item, _CONTAINERS):
                _walk(item, f"{path}.{key}", depth + 1, limits, out)
            elif item is None or isinstance(item, str) and (key == "reference" or not item.strip()):
                _leaf(key, item, f"{path}.{key}", out)
    elif isinstance(value, list):
        if not value:
            out.append(Issue("structure", "Empty arrays are not allowed in FHIR JSON", expression=(path,)))
        for index, item in enumerate(value):
            # null is legal inside arrays only as a placeholder aligned with a primitive extension array
            if item is None:
                continue
            if deeper:
                raise _too_deep(f"{path}[{index}]", limits)
            if isinstance(item, _CONTAINERS):
                _walk(item, f"{path}[{index}]", depth + 1, limits, out)
            elif isinstance(item, str) and not item.strip():
                _leaf("", item, f"{path}[{index}]", out)


def reference_issue(reference: str, path: str) -> Issue | None:
    """An issue when a Reference.reference is not a relative, absolute, urn or local reference."""
    if reference.startswith("#") or _URN_REF.fullmatch(reference) or _ABSOLUTE_REF.fullmatch(reference):
        return None
    match = _RELATIVE_REF.fullmatch(reference)
    if match is None:
        if "?" in reference and reference.split("?", 1)[0] in resource_types():
            return None  # conditional reference: resolved (or refused) by the transaction processor
        return Issue("value", f"Reference '{reference}' is not of the form Type/id, an absolute URL, "
                              "a urn:uuid/urn:oid or a #local reference", expression=(path,))
    if match.group(1) not in resource_types():
        return Issue("value", f"Reference '{reference}' names unknown resource type '{match.group(1)}'",
                     expression=(path,))
    return None


def check_resource_type(data: Any, expected: str | None) -> str:
    """The resourceType of a body, refusing non-objects, unknown types and a mismatch with the URL."""
    if not isinstance(data, dict):
        raise Invalid("The request body must be a JSON object holding a FHIR resource", code="structure")
    resource_type = data.get("resourceType")
    if resource_type is None:
        raise Invalid("The resource has no resourceType", code="required", expression=("resourceType",))
    if not isinstance(resource_type, str) or resource_type not in resource_types():
        raise Invalid(f"Unknown resourceType '{resource_type}'", code="not-supported",
                      expression=("resourceType",))
    if expected is not None and resource_type != expected:
        raise Invalid(f"resourceType '{resource_type}' does not match the type '{expected}' of the URL",
                      code="invalid", expression=("resourceType",))
    return resource_type


def precheck(data: Any, *, expected_type: str | None = None,
             limits: ValidationLimits = ValidationLimits()) -> tuple[str, list[Issue], list[Issue]]:
    """Type, id, shape and reference checks: (type, structural issues, reference issues)."""
    resource_type = check_resource_type(data, expected_type)
    if "id" in data and not valid_id(data["id"]):
        raise Invalid(f"Resource id '{data['id']}' does not match [A-Za-z0-9-.]{{1,64}}", code="value",
                      expression=(f"{resource_type}.id",))
    walked: list[Issue] = []
    _walk(data, resource_type, 0, limits, walked)
    structural = [i for i in walked if not i.expression or not i.expression[0].endswith(".reference")]
    references = [i for i in walked if i not in structural]
    if resource_type == "SearchParameter" and not structural and data.get("status") != "retired":
        # a business rule: a stored SearchParameter becomes a live search parameter, so it must work as one
        references.extend(definition_issues(data, resource_types()))
    return resource_type, structural, references


def raise_issues(resource_type: str, structural: list[Issue], model: list[Issue], references: list[Issue]) -> None:
    """Raise Invalid (400) for structural or model issues, else Unprocessable (422) for business rules."""
    issues = structural + model
    if issues:
        raise Invalid(f"{resource_type} failed validation: {issues[0].diagnostics}", issues=tuple(issues))
    if references:
        raise Unprocessable(f"{resource_type} breaks a business rule: {references[0].diagnostics}",
                            issues=tuple(references))


def validate_resource(data: Any, *, expected_type: str | None = None,
                      limits: ValidationLimits = ValidationLimits()) -> str:
    """Validate a resource completely and return its type; raises Invalid or Unprocessable."""
    resource_type, structural, references = precheck(data, expected_type=expected_type, limits=limits)
    model = [] if structural else model_issues(resource_type, data)
    raise_issues(resource_type, structural, model, references)
    return resource_type
