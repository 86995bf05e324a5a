"""Composite search parameters: index entries pairing a code with a value from the same element.

`Observation?component-code-value-quantity=8480-6$gt140` matches only when the 140 belongs to the component
coded 8480-6. https://hl7.org/fhir/R4B/search.html#composite
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resources.search import extract
from resources.search.normalize import normalize_string
from resources.search.paths import Accessor, compile_fast
from resources.search.registry import SearchParam, SearchRegistry

# one composite entry: first component (system, code), second (system, code or text), value range
CompositeRow = tuple[str | None, str | None, str | None, str | None, float | None, float | None]


@dataclass(frozen=True)
class CompositePlan:
    """How to index one composite parameter: its base nodes and its two components."""

    base: Accessor
    first: Accessor
    second: Accessor
    second_type: str


def component_types(registry: SearchRegistry, param: SearchParam) -> list[str] | None:
    """The types of a composite's components, from their definitions; None when one is unknown."""
    types = []
    for component in param.components:
        found = registry.by_url(component.definition)
        if not found:
            return None
        types.append(found[0].type)
    return types


def plan_composite(registry: SearchRegistry, param: SearchParam) -> CompositePlan | None:
    """A plan for a two-component composite whose expressions are plain paths; None otherwise."""
    types = component_types(registry, param)
    if not param.expression or types is None or len(types) != 2 or types[0] not in ("token", "reference"):
        return None
    base = compile_fast(param.expression)
    first = compile_fast("Node." + param.components[0].expression)
    second = compile_fast("Node." + param.components[1].expression)
    if base is None or first is None or second is None:
        return None
    return CompositePlan(base, first, second, types[1])


def _first_keys(values: list[Any]) -> list[tuple[str | None, str | None]]:
    keys: list[tuple[str | None, str | None]] = []
    for value in values:
        keys.extend((system, code) for system, code, _ in extract.tokens(value) if code is not None)
        keys.extend((None, f"{t}/{i}") for t, i, _ in extract.references(value) if t and i)
    return keys


def _second_keys(kind: str, values: list[Any]) -> list[tuple[str | None, str | None, float | None, float | None]]:
    out: list[tuple[str | None, str | None, float | None, float | None]] = []
    for value in values:
        if kind == "token":
            out.extend((s, c, None, None) for s, c, _ in extract.tokens(value) if c is not None)
        elif kind == "quantity":
            out.extend((s, u, v, v) for s, u, v in extract.quantities(value))
        elif kind == "date":
            out.extend((None, None, float(lo), float(hi)) for lo, hi in extract.dates(value))
        elif kind == "string":
            out.extend((None, normalize_string(text), None, None) for text in extract.strings(value))
        elif kind == "reference":
            out.extend((None, f"{t}/{i}", None, None) for t, i, _ in extract.references(value) if t and i)
        elif kind == "number":
            out.extend((None, None, v, v) for v in extract.numbers(value))
    return out


def composite_rows(plan: CompositePlan, resource: dict[str, Any]) -> list[CompositeRow]:
    """Every (first, second) pair found within the same base element."""
    rows: list[CompositeRow] = []
    for node in plan.base(resource):
        if not isinstance(node, dict):
            continue
        firsts = _first_keys(plan.first(node))
        seconds = _second_keys(plan.second_type, plan.second(node))
        rows.extend((s1, c1, s2, c2, lo, hi) for s1, c1 in firsts for s2, c2, lo, hi in seconds)
    return rows

