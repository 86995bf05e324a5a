"""In-memory evaluation of search filters against one resource's index entries.

Subscription criteria and granted scope filters are judged on a single resource, without a store query; the
semantics are those the stores compile (prefixes on [low, high], string prefixes on normalised text, token
system|code). https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from typing import Any

from resources.search.codesets import CANONICAL_SYSTEM
from resources.search.dates import date_range
from resources.search.index import IndexRows
from resources.search.query import (
    CompositeValue,
    Filter,
    RangeValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)


class NotEvaluable(ValueError):
    """A filter that needs other resources (chains, _has) and so cannot be judged on one resource alone."""


def evaluable(flt: Filter) -> str | None:
    """Why a filter cannot be evaluated in memory, or None when it can."""
    if flt.chain:
        return f"the chained parameter '{flt.code}' needs other resources"
    if flt.has is not None:
        return "_has needs other resources"
    if flt.type in ("any-of", "none-of", "resource-type"):
        for group in flt.any_of:
            for inner in group:
                reason = evaluable(inner)
                if reason:
                    return reason
    return None


def in_range(value: RangeValue, low: float, high: float, *, is_value: bool = False) -> bool:
    """A prefix comparison of a search range with a stored [low, high], as the stores compile it."""
    a, b = value.low, value.high
    prefix = value.prefix
    if prefix == "ap":
        margin = max((b - a) * 0.1, abs(a) * 0.1 if is_value else 86_400_000.0)
        return high >= a - margin and low <= b + margin
    return {
        "eq": low >= a and high <= b,
        "ne": not (low >= a and high <= b),
        "gt": high > b,
        "lt": low < a,
        "ge": high >= a,
        "le": low <= b,
        "sa": low > b,
        "eb": high < a,
    }[prefix]


def _token(flt: Filter, value: Any, rows: IndexRows) -> bool:
    assert isinstance(value, TokenValue)
    for code, system, token, text in rows.tokens:
        if code != flt.code:
            continue
        if flt.modifier == "text":
            if text is not None and text.startswith(value.code or ""):
                return True
            continue
        if value.code is not None and token != value.code:
            continue
        if not value.any_system and system != value.system:
            continue
        return True
    return False


def _string(flt: Filter, value: Any, rows: IndexRows) -> bool:
    assert isinstance(value, StringValue)
    for code, norm, exact in rows.strings:
        if code != flt.code:
            continue
        if flt.modifier == "exact":
            hit = exact == value.text
        elif flt.modifier == "contains":
            hit = value.normalized in norm
        else:
            hit = norm.startswith(value.normalized)
        if hit:
            return True
    return False


def _reference(flt: Filter, value: Any, rows: IndexRows) -> bool:
    assert isinstance(value, ReferenceValue)
    url = value.url
    if url is None and value.type is None and value.id and (value.id.startswith("#") or ":" in value.id):
        url = value.id
    for code, kind, id_, ref_url in rows.references:
        if code != flt.code:
            continue
        if id_ == value.id and (value.type is None or kind == value.type):
            return True
        if url is not None and ref_url == url:
            return True
    return False


def _quantity(flt: Filter, value: Any, rows: IndexRows, entries: list[tuple[str, str | None, str | None, float]],
              ) -> bool:
    assert isinstance(value, RangeValue)
    for code, system, unit, number in entries:
        if code != flt.code or not in_range(value, number, number, is_value=True):
            continue
        if value.system is not None and system != value.system:
            continue
        if value.system is None and system == CANONICAL_SYSTEM:
            continue  # unit-converted copies answer only the converted form of a query
        if value.code is not None and unit != value.code:
            continue
        return True
    return False


def _composite(flt: Filter, value: Any, rows: IndexRows) -> bool:
    assert isinstance(value, CompositeValue)
    first, second = value.first, value.second
    for code, s1, c1, s2, c2, lo, hi in rows.composites:
        if code != flt.code or c1 != first.code or (not first.any_system and s1 != first.system):
            continue
        if isinstance(second, TokenValue):
            hit = c2 == second.code and (second.any_system or second.system is None or s2 == second.system)
        elif isinstance(second, StringValue):
            hit = c2 is not None and c2.startswith(second.normalized)
        elif isinstance(second, ReferenceValue):
            hit = c2 == second.id
        else:
            hit = (lo is not None and hi is not None and in_range(second, lo, hi, is_value=True)
                   and (not second.system or s2 == second.system) and (not second.code or c2 == second.code))
        if hit:
            return True
    return False


def _value(flt: Filter, value: Any, rows: IndexRows) -> bool:
    if isinstance(value, CompositeValue):
        return _composite(flt, value, rows)
    if flt.modifier in ("identifier", "of-type"):  # entries kept under code:modifier, as the stores keep them
        return _token(Filter(f"{flt.code}:{flt.modifier}", "token", None, ()), value, rows)
    if flt.type == "token":
        return _token(flt, value, rows)
    if flt.type == "string":
        return _string(flt, value, rows)
    if flt.type == "reference":
        return _reference(flt, value, rows)
    if flt.type == "date":
        assert isinstance(value, RangeValue)
        return any(code == flt.code and in_range(value, low, high) for code, low, high in rows.dates)
    if flt.type == "number":
        assert isinstance(value, RangeValue)
        return any(code == flt.code and in_range(value, n, n, is_value=True) for code, n in rows.numbers)
    if flt.type == "quantity":
        return _quantity(flt, value, rows, rows.quantities)
    if flt.type == "uri":
        assert isinstance(value, UriValue)
        for code, uri in rows.uris:
            if code != flt.code:
                continue
            if flt.modifier == "below" and uri.startswith(value.uri):
                return True
            if flt.modifier == "above" and value.uri.startswith(uri):
                return True
            if flt.modifier is None and uri == value.uri:
                return True
        return False
    return False


def _present(flt: Filter, rows: IndexRows) -> bool:
    tables: list[list[Any]] = [rows.tokens, rows.strings, rows.references, rows.dates, rows.numbers,
                               rows.quantities, rows.uris, rows.composites]
    return any(entry[0] == flt.code for table in tables for entry in table)


def _resource_level(flt: Filter, resource: dict[str, Any]) -> bool:
    if flt.code == "_id":
        hit = any(isinstance(v, TokenValue) and v.code == resource.get("id") for v in flt.values)
        return not hit if flt.modifier == "not" else hit
    updated = (resource.get("meta") or {}).get("lastUpdated")
    if not isinstance(updated, str):
        return False
    span = date_range(updated)
    if span is None:
        return False
    return any(isinstance(v, RangeValue) and in_range(v, span[0], span[1]) for v in flt.values)


def matches(flt: Filter, resource: dict[str, Any], rows: IndexRows) -> bool:
    """True when the resource satisfies one filter (its values OR-ed); NotEvaluable for chains and _has."""
    reason = evaluable(flt)
    if reason:
        raise NotEvaluable(reason)
    if flt.type == "any-of":
        return any(all(matches(inner, resource, rows) for inner in group) for group in flt.any_of)
    if flt.type == "none-of":
        return not any(all(matches(inner, resource, rows) for inner in group) for group in flt.any_of)
    if flt.type == "resource-type":
        return resource.get("resourceType") == flt.code and (not flt.any_of or any(
            all(matches(inner, resource, rows) for inner in group) for group in flt.any_of))
    if flt.type == "compartment" and flt.missing is not None:
        return bool(rows.compartments) != flt.missing
    if flt.type == "compartment":
        return any(isinstance(v, ReferenceValue) and v.id in rows.compartments for v in flt.values)
    if flt.code in ("_id", "_lastUpdated"):
        return _resource_level(flt, resource)
    if flt.missing is not None:
        return _present(flt, rows) != flt.missing
    if flt.modifier == "not":
        return not any(_value(flt, value, rows) for value in flt.values)
    return any(_value(flt, value, rows) for value in flt.values)


def matches_all(filters: tuple[Filter, ...] | list[Filter], resource: dict[str, Any], rows: IndexRows) -> bool:
    """True when the resource satisfies every filter (parameters are AND-ed)."""
    return all(matches(flt, resource, rows) for flt in filters)
