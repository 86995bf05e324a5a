"""_summary and _elements: trimmed views of a resource, marked SUBSETTED.

https://hl7.org/fhir/R4B/search.html#summary and https://hl7.org/fhir/R4B/search.html#elements
"""

from __future__ import annotations

from typing import Any

from resources.elements import summary_names
from resources.errors import Invalid

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "Resource encoded in summary mode"}
SUMMARY_MODES = ("true", "false", "text", "data", "count")


def _mark(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    resource["meta"] = meta
    return resource


def check_summary(mode: str | None) -> None:
    """Refuse an unknown _summary mode."""
    if mode is not None and mode not in SUMMARY_MODES:
        raise Invalid(f"_summary must be one of {', '.join(SUMMARY_MODES)}, not '{mode}'", code="value",
                      expression=("_summary",))


def shape(resource: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """The resource as _summary/_elements ask; unchanged when neither applies."""
    check_summary(summary)
    kind = resource.get("resourceType", "")
    if summary == "true":
        keep = summary_names(kind)
        return _mark({k: v for k, v in resource.items() if k in keep})
    if summary == "text":
        return _mark({k: v for k, v in resource.items() if k in ("resourceType", "id", "meta", "text")})
    if summary == "data":
        return _mark({k: v for k, v in resource.items() if k != "text"})
    if elements:
        keep = {"resourceType", "id", "meta", *elements, *(f"_{e}" for e in elements)}
        return _mark({k: v for k, v in resource.items() if k in keep})
    return resource
