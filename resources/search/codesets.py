"""Search that needs terminology: token `:in`, `:not-in`, `:above`, `:below` and unit-normalised quantities.

Parsing keeps these as they were written; before a query is compiled, `resolve` turns them into plain token
and quantity filters with the codes, and the canonical units, that a `TerminologyResolver` gives. So each
store still compiles only plain filters. https://hl7.org/fhir/R4B/search.html#modifiers
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from resources.errors import FhirError, Invalid
from resources.search.query import Chained, Filter, Has, RangeValue, SearchQuery, TokenValue, UriValue

TERMINOLOGY_MODIFIERS = ("in", "not-in", "above", "below")
# index rows of a quantity converted to its canonical UCUM unit carry this system
CANONICAL_SYSTEM = "urn:careloop:ucum-canonical"
UCUM = "http://unitsofmeasure.org"


class TerminologyResolver(Protocol):
    """What search needs from terminology (implemented by terminology.service.TerminologyService)."""

    async def value_set_codes(self, canonical: str) -> frozenset[tuple[str, str]]:
        """(system, code) of every code in the value set."""

    async def related_codes(self, system: str, code: str, direction: str) -> frozenset[str]:
        """The code and its descendants ('below') or ancestors ('above')."""

    def canonical_range(self, unit: str, low: float, high: float) -> tuple[str, float, float] | None:
        """[low, high] in the unit converted to the canonical unit of its dimension; None if not UCUM."""


def code_set_filter(code: str, modifier: str, raw: str, max_values: int) -> Filter:
    """Parse `code:in=url`, `code:not-in=url`, `code:below=system|code`, `code:above=system|code`."""
    raws = [r for r in raw.split(",") if r]
    if not raws:
        raise Invalid(f"Parameter '{code}:{modifier}' has no value", code="value", expression=(code,))
    if len(raws) > max_values:
        raise Invalid(f"Too many values ({len(raws)}) for parameter '{code}'; the limit is {max_values}",
                      code="too-costly", expression=(code,))
    if modifier in ("in", "not-in"):
        return Filter(code, "token", modifier, tuple(UriValue(r) for r in raws))
    values = []
    for item in raws:
        system, sep, value = item.rpartition("|")
        if not sep or not system or not value:
            raise Invalid(f"'{code}:{modifier}' needs system|code, not '{item}'", code="value", expression=(code,))
        values.append(TokenValue(value, system, False))
    return Filter(code, "token", modifier, tuple(values))


def needs_resolution(query: SearchQuery) -> bool:
    """True when some filter (chained or reverse-chained too) needs terminology."""
    return any(_needs(f) for f in query.filters)


def _needs(flt: Filter) -> bool:
    if flt.type == "token" and flt.modifier in TERMINOLOGY_MODIFIERS:
        return True
    if flt.type == "quantity" and flt.missing is None and any(
            isinstance(v, RangeValue) and v.code and v.system in (None, UCUM) for v in flt.values):
        return True
    return any(_needs(c.inner) for c in flt.chain) or (flt.has is not None and _needs(flt.has.inner))


async def resolve(query: SearchQuery, resolver: TerminologyResolver) -> SearchQuery:
    """The query with terminology modifiers expanded into codes and quantities given canonical alternatives."""
    if not needs_resolution(query):
        return query
    return replace(query, filters=tuple([await _resolve(f, resolver) for f in query.filters]))



async def _resolve(flt: Filter, resolver: TerminologyResolver) -> Filter:
    try:
        return await _resolve_one(flt, resolver)
    except FhirError as exc:
        if exc.status >= 500 or exc.issues[0].expression == (flt.code,):
            raise
        # an unknown value set or code is a problem of this search parameter: 400 naming it
        raise Invalid(f"Parameter '{flt.code}:{flt.modifier}': {exc.diagnostics}", code=exc.issues[0].code,
                      expression=(flt.code,)) from exc


async def _resolve_one(flt: Filter, resolver: TerminologyResolver) -> Filter:
    if flt.chain:
        chain = tuple([Chained(c.target_type, await _resolve(c.inner, resolver)) for c in flt.chain])
        return replace(flt, chain=chain)
    if flt.has is not None:
        return replace(flt, has=Has(flt.has.source_type, flt.has.reference, await _resolve(flt.has.inner, resolver)))
    if flt.type == "token" and flt.modifier in ("in", "not-in"):
        codes: set[tuple[str, str]] = set()
        for value in flt.values:
            assert isinstance(value, UriValue)
            codes |= await resolver.value_set_codes(value.uri)
        tokens = tuple(TokenValue(code, system, False) for system, code in sorted(codes))
        return Filter(flt.code, "token", "not" if flt.modifier == "not-in" else None, tokens)
    if flt.type == "token" and flt.modifier in ("above", "below"):
        found: set[tuple[str, str]] = set()
        for value in flt.values:
            assert isinstance(value, TokenValue) and value.system and value.code
            found |= {(value.system, c) for c in await resolver.related_codes(value.system, value.code, flt.modifier)}
        return Filter(flt.code, "token", None, tuple(TokenValue(c, s, False) for s, c in sorted(found)))
    if flt.type == "quantity":
        values = list(flt.values)
        for value in flt.values:
            if isinstance(value, RangeValue) and value.code and value.system in (None, UCUM):
                converted = resolver.canonical_range(value.code, value.low, value.high)
                if converted is not None:
                    unit, low, high = converted
                    values.append(RangeValue(value.prefix, low, high, CANONICAL_SYSTEM, unit))
        return replace(flt, values=tuple(values))
    return flt
