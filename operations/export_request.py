"""Bulk Data $export kick-off parameters: what to export, checked before any job starts (pure, no I/O).

https://hl7.org/fhir/uv/bulkdata/STU2/export.html#query-parameters
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from operations.parameters import OperationInput
from resources.errors import Invalid, NotSupported
from resources.search.dates import date_range
from resources.search.parse import SearchLimits, parse_search
from resources.search.query import Filter, RangeValue, SearchQuery
from resources.search.registry import SearchRegistry

FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
KNOWN = ("_outputFormat", "_since", "_type", "_typeFilter")
# the IG's other parameters, refused by name rather than silently ignored
UNSUPPORTED = ("_elements", "patient", "includeAssociatedData", "_until", "organizeOutputBy",
               "allowPartialManifests")


@dataclass(frozen=True)
class ExportRequest:
    """A checked kick-off: the types in order, the _since instant and the filters per type."""

    types: tuple[str, ...]
    since_ms: int | None = None
    type_filters: dict[str, tuple[tuple[Filter, ...], ...]] = field(default_factory=dict)

    def query(self, resource_type: str, registry: SearchRegistry) -> SearchQuery:
        """The search of one type: _since as _lastUpdated=gt, the type's _typeFilters OR-ed together."""
        filters: list[Filter] = []
        if self.since_ms is not None:  # changed after the instant itself (not after the end of its second)
            filters.append(Filter("_lastUpdated", "date", None, (RangeValue("gt", self.since_ms, self.since_ms),)))
        groups = self.type_filters.get(resource_type)
        if groups:
            filters.append(Filter("_typeFilter", "any-of", None, (), any_of=groups))
        return SearchQuery(resource_type, tuple(filters))


def _split(values: list[str]) -> list[str]:
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


def parse_export(given: OperationInput, allowed_types: Collection[str], registry: SearchRegistry,
                 limits: SearchLimits | None = None) -> ExportRequest:
    """The kick-off's parameters checked against the types this level exports; 400 naming what is wrong."""
    names = [p["name"] for p in given.parts]
    refused = sorted({n for n in names if n in UNSUPPORTED})
    if refused:
        raise NotSupported(f"$export does not support {', '.join(refused)}", expression=tuple(refused))
    unknown = sorted({n for n in names if n not in KNOWN})
    if unknown:
        raise Invalid(f"$export has no parameter {', '.join(unknown)}", code="value", expression=tuple(unknown))
    output_format = given.text("_outputFormat")
    if output_format is not None and output_format not in FORMATS:
        raise NotSupported(f"_outputFormat '{output_format}' is not supported: use application/fhir+ndjson",
                           expression=("_outputFormat",))
    requested = _split(given.texts("_type"))
    wrong = [t for t in requested if t not in allowed_types]
    if wrong:
        raise Invalid(f"_type names types this export cannot hold: {', '.join(wrong)}", code="value",
                      expression=("_type",))
    types = tuple(dict.fromkeys(requested)) if requested else tuple(sorted(allowed_types))
    since_text = given.text("_since")
    since_ms = None
    if since_text is not None:
        found = date_range(since_text)
        if found is None:
            raise Invalid(f"_since must be an instant such as 2024-01-01T00:00:00Z, not '{since_text}'",
                          code="value", expression=("_since",))
        since_ms = found[0]
    type_filters: dict[str, list[tuple[Filter, ...]]] = {}
    for text in given.texts("_typeFilter"):
        type_name, _, query = text.partition("?")
        if type_name not in types or not query:
            raise Invalid(f"_typeFilter '{text}' must be a search of an exported type, such as "
                          f"'Observation?category=laboratory'", code="value", expression=("_typeFilter",))
        try:
            parsed = parse_search(type_name, parse_qsl(query, keep_blank_values=True), registry,
                                  limits or SearchLimits(),
                                  strict=True).query
        except Invalid as exc:
            raise Invalid(f"_typeFilter '{text}': {exc.issues[0].diagnostics}", code="value",
                          expression=("_typeFilter",)) from exc
        if parsed.sort or parsed.includes or not parsed.filters:
            raise Invalid(f"_typeFilter '{text}' may only filter (no _sort, _include or paging)", code="value",
                          expression=("_typeFilter",))
        type_filters.setdefault(type_name, []).append(parsed.filters)
    return ExportRequest(types, since_ms, {k: tuple(v) for k, v in type_filters.items()})
