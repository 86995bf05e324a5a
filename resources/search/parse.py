"""Parsing of search query parameters into a SearchQuery: a pure function.

https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resources.errors import Invalid, Issue, NotSupported
from resources.search.codesets import code_set_filter
from resources.search.composite import component_types
from resources.search.normalize import normalize_string
from resources.search.query import (
    Chained,
    CompositeValue,
    Filter,
    Has,
    Include,
    ReferenceValue,
    SearchQuery,
    Sort,
    StringValue,
)
from resources.search.registry import SearchParam, SearchRegistry
from resources.search.values import (
    date_value,
    number_value,
    parse_value,
    quantity_value,
    split_values,
    token_value,
)

# Result parameters handled outside the filters; known, so never reported as unknown.
RESULT_PARAMS = frozenset({"_count", "_cursor", "_total", "_summary", "_elements", "_format", "_pretty",
                           "_contained", "_containedType"})
_MODIFIERS = {
    "token": {"not", "text", "missing", "of-type", "in", "not-in", "above", "below"},
    "string": {"exact", "contains", "missing"},
    "reference": {"missing", "identifier"},
    "date": {"missing"}, "number": {"missing"}, "quantity": {"missing"},
    "uri": {"missing", "above", "below"},
    "composite": {"missing"},
}
# The modifiers each result parameter takes: `_sort:asc`/`_sort:desc` are the DSTU2 form some clients still send.
_RESULT_MODIFIERS: dict[str, frozenset[str]] = {
    **{name: frozenset() for name in RESULT_PARAMS},
    "_sort": frozenset({"asc", "desc"}),
    "_include": frozenset({"iterate", "recurse"}), "_revinclude": frozenset({"iterate", "recurse"}),
}


@dataclass(frozen=True)
class SearchLimits:
    """Bounds on what one search may ask for."""

    default_count: int = 50
    max_count: int = 1000
    max_or_values: int = 100
    max_chain_depth: int = 3
    max_includes: int = 10


@dataclass(frozen=True)
class ParsedSearch:
    """The query plus parameters that were ignored (reported back to the client)."""

    query: SearchQuery
    ignored: tuple[Issue, ...]


def _filter(param: SearchParam, modifier: str | None, raw: str, limits: SearchLimits) -> Filter:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise Invalid(f":missing on '{param.code}' takes true or false, not '{raw}'", code="value",
                          expression=(param.code,))
        return Filter(param.code, param.type, modifier, (), missing=raw == "true")
    allowed = _MODIFIERS.get(param.type, {"missing"})
    type_modifier = param.type == "reference" and modifier is not None and modifier[:1].isupper()
    if modifier is not None and modifier not in allowed and not type_modifier:
        raise Invalid(f"Unknown modifier ':{modifier}' on parameter '{param.code}' of type {param.type}",
                      code="value", expression=(param.code,))
    if modifier in ("in", "not-in", "above", "below") and param.type == "token":
        return code_set_filter(param.code, modifier, raw, limits.max_or_values)
    raws = split_values(raw)
    if len(raws) > limits.max_or_values:
        raise Invalid(f"Too many values ({len(raws)}) for parameter '{param.code}'; the limit is "
                      f"{limits.max_or_values}", code="too-costly", expression=(param.code,))
    values = tuple(parse_value(param, modifier, r) for r in raws if r != "")
    if not values:
        raise Invalid(f"Parameter '{param.code}' has no value", code="value", expression=(param.code,))
    return Filter(param.code, param.type, modifier, values)


def _count(raw: str, limits: SearchLimits) -> int:
    if not raw.isdigit():
        raise Invalid(f"_count must be a non-negative integer, not '{raw}'", code="value", expression=("_count",))
    return min(int(raw), limits.max_count)


class UnknownParameter(Exception):
    """A parameter this type does not define (reported or refused by the caller)."""


def parse_filter(registry: SearchRegistry, resource_type: str, key: str, raw: str, limits: SearchLimits,
                 depth: int = 0) -> Filter:
    """One parameter (plain, chained or _has) on a resource type."""
    if depth > limits.max_chain_depth:
        raise Invalid(f"'{key}' chains deeper than the limit of {limits.max_chain_depth}", code="too-costly",
                      expression=(key,))
    if key.startswith("_has:"):
        return _parse_has(registry, resource_type, key, raw, limits, depth)
    head, dot, rest = key.partition(".")
    name, _, modifier = head.partition(":")
    param = registry.get(resource_type, name)
    if param is None:
        raise UnknownParameter(name)
    if not param.expression and name not in ("_id", "_lastUpdated"):
        raise NotSupported(f"Search parameter '{name}' is not supported yet", expression=(name,))
    if param.type == "composite" and not dot:
        return _composite(registry, param, modifier or None, raw, limits)
    if not dot:
        return _filter(param, modifier or None, raw, limits)
    if param.type != "reference":
        raise Invalid(f"Cannot chain through '{name}': it is a {param.type} parameter, not a reference",
                      code="invalid", expression=(key,))
    targets = (modifier,) if modifier else param.targets
    chained = []
    for target in targets:
        try:
            chained.append(Chained(target, parse_filter(registry, target, rest, raw, limits, depth + 1)))
        except UnknownParameter:
            continue
    if not chained:
        raise Invalid(f"'{rest}' is not a search parameter of {', '.join(targets) or 'the targets of ' + name}",
                      code="invalid", expression=(key,))
    return Filter(name, "reference", modifier or None, (), chain=tuple(chained))


def _composite(registry: SearchRegistry, param: SearchParam, modifier: str | None, raw: str,
               limits: SearchLimits) -> Filter:
    types = component_types(registry, param)
    if types is None or len(types) != 2 or types[0] not in ("token", "reference"):
        raise NotSupported(f"Composite parameter '{param.code}' is not supported", expression=(param.code,))
    if modifier == "missing":
        return _filter(param, modifier, raw, limits)
    if modifier is not None:
        raise Invalid(f"Unknown modifier ':{modifier}' on composite parameter '{param.code}'", code="value",
                      expression=(param.code,))
    raws = [r for r in split_values(raw) if r]
    if not raws or len(raws) > limits.max_or_values:
        raise Invalid(f"Parameter '{param.code}' needs between 1 and {limits.max_or_values} values", code="value",
                      expression=(param.code,))
    values = []
    for item in raws:
        first, dollar, second = item.partition("$")
        if not dollar or not first or not second:
            raise Invalid(f"Composite parameter '{param.code}' takes code$value, not '{item}'", code="value",
                          expression=(param.code,))
        if types[1] == "token":
            parsed: Any = token_value(param.code, second)
        elif types[1] == "string":
            parsed = StringValue(second, normalize_string(second))
        elif types[1] == "reference":
            parsed = ReferenceValue(None, second)
        elif types[1] == "date":
            parsed = date_value(param.code, second)
        elif types[1] == "quantity":
            parsed = quantity_value(param.code, second)
        else:
            parsed = number_value(param.code, second)
        values.append(CompositeValue(token_value(param.code, first), parsed, types[1]))
    return Filter(param.code, "composite", None, tuple(values))


def _parse_has(registry: SearchRegistry, resource_type: str, key: str, raw: str, limits: SearchLimits,
               depth: int) -> Filter:
    parts = key.split(":", 3)
    if len(parts) < 4 or not all(parts[1:]):
        raise Invalid(f"_has needs the form _has:Type:reference:parameter, not '{key}'", code="invalid",
                      expression=(key,))
    _, source, reference, inner_key = parts
    ref_param = registry.get(source, reference)
    if ref_param is None or ref_param.type != "reference":
        raise Invalid(f"'{reference}' is not a reference parameter of {source}", code="invalid", expression=(key,))
    if ref_param.targets and resource_type not in ref_param.targets:
        raise Invalid(f"{source}.{reference} cannot point at {resource_type}", code="invalid", expression=(key,))
    try:
        inner = parse_filter(registry, source, inner_key, raw, limits, depth + 1)
    except UnknownParameter as exc:
        raise Invalid(f"'{exc}' is not a search parameter of {source}", code="invalid", expression=(key,)) from exc
    return Filter("_has", "special", None, (), has=Has(source, reference, inner))


def _parse_sort(registry: SearchRegistry, resource_type: str, raw: str, *, legacy_desc: bool = False
                ) -> tuple[Sort, ...]:
    keys = []
    for item in (part.strip() for part in raw.split(",")):
        descending = item.startswith("-") or legacy_desc
        code = item.lstrip("-")
        param = registry.get(resource_type, code)
        if param is None or param.type in ("composite", "special") or not (
                param.expression or code in ("_id", "_lastUpdated")):
            raise Invalid(f"Cannot sort by '{code}': it is not a sortable search parameter of {resource_type}",
                          code="invalid", expression=("_sort",))
        keys.append(Sort(code, param.type, descending))
    return tuple(keys)


def _parse_include(registry: SearchRegistry, resource_type: str, key: str, raw: str) -> list[Include]:
    reverse = key.startswith("_revinclude")
    iterate = key.endswith(":iterate") or key.endswith(":recurse")
    parts = raw.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise Invalid(f"{key} takes Type:parameter[:targetType], not '{raw}'", code="invalid", expression=(key,))
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not registry.for_type(source):
        raise Invalid(f"{key}: unknown resource type '{source}'", code="invalid", expression=(key,))
    if not reverse and not iterate and source != resource_type:
        raise Invalid(f"_include must start with the searched type {resource_type} (or use :iterate)",
                      code="invalid", expression=(key,))
    codes = [p.code for p in registry.for_type(source).values() if p.type == "reference"] if code == "*" else [code]
    includes = []
    for each in codes:
        param = registry.get(source, each)
        if param is None or param.type != "reference":
            raise Invalid(f"{key}: '{each}' is not a reference parameter of {source}", code="invalid",
                          expression=(key,))
        includes.append(Include(source, each, target, reverse, iterate))
    return includes


def _modifier_list(name: str) -> str:
    allowed = sorted(_RESULT_MODIFIERS[name])
    return "no modifier" if not allowed else "no modifier, " + " or ".join(f":{m}" for m in allowed)


def parse_search(resource_type: str, params: Sequence[tuple[str, str]], registry: SearchRegistry,
                 limits: SearchLimits = SearchLimits(), *, strict: bool = False) -> ParsedSearch:
    """Parse query parameters into a SearchQuery; unknown parameters are ignored or, when strict, refused."""
    filters: list[Filter] = []
    ignored: list[Issue] = []
    includes: list[Include] = []
    sort: tuple[Sort, ...] = ()
    include_params = 0
    count, cursor, total = limits.default_count, None, "none"
    for key, raw in params:
        name, _, modifier = key.partition(":")
        if name in _RESULT_MODIFIERS and modifier and modifier not in _RESULT_MODIFIERS[name]:
            # a silently ignored `_sort:x` would quietly give the wrong order: refuse it when strict, say so when not
            issue = Issue("not-supported", f"Unknown modifier ':{modifier}' on the result parameter '{key}'; it was "
                          f"ignored ({name} takes {_modifier_list(name)})", severity="warning", expression=(key,))
            if strict:
                raise Invalid(issue.diagnostics.replace("; it was ignored", ""), code="not-supported",
                              expression=(key,))
            ignored.append(issue)
            continue
        if name == "_count":
            count = _count(raw, limits)
        elif name == "_cursor":
            if not raw.isdigit():
                raise Invalid(f"Invalid paging cursor '{raw}'", code="value", expression=("_cursor",))
            cursor = int(raw)
        elif name == "_total":
            if raw not in ("none", "estimate", "accurate"):
                raise Invalid(f"_total must be none, estimate or accurate, not '{raw}'", code="value",
                              expression=("_total",))
            total = raw
        elif name == "_sort":
            sort = _parse_sort(registry, resource_type, raw, legacy_desc=modifier == "desc")
        elif name in ("_include", "_revinclude"):
            includes.extend(_parse_include(registry, resource_type, key, raw))
            include_params += 1
            if include_params > limits.max_includes:
                raise Invalid(f"Too many _include/_revinclude parameters; the limit is {limits.max_includes}",
                              code="too-costly", expression=(name,))
        elif name in RESULT_PARAMS:
            continue
        else:
            try:
                filters.append(parse_filter(registry, resource_type, key, raw, limits))
            except UnknownParameter as exc:
                issue = Issue("not-supported", f"Unknown search parameter '{exc}' for {resource_type}",
                              severity="warning", expression=(str(exc),))
                if strict:
                    raise Invalid(issue.diagnostics, code="not-supported", expression=(str(exc),)) from exc
                ignored.append(issue)
    query = SearchQuery(resource_type, tuple(filters), count=count, cursor=cursor, total=total, sort=sort,
                        includes=tuple(includes))
    return ParsedSearch(query, tuple(ignored))
