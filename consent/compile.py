"""Consent verdicts as search filters: the engine's resource conditions in the store query's own terms.

Each condition becomes the search parameter that indexes the same element (class: the type or its category;
code; securityLabel: `_security`; dataPeriod: the type's clinical date; instance: `_id`; related and
authoredby: reference parameters), so the store narrows exactly and the same filter re-checks one resource
in memory. https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from consent.engine.expr import And, Cond, Const, Expr, Not, Or
from consent.engine.facts import LABELS, PROFILES, FactParams
from consent.engine.terms import PROFILE, RESOURCE_TYPES
from resources.search.dates import date_range
from resources.search.query import SYSTEM, Filter, RangeValue, ReferenceValue, TokenValue, UriValue
from resources.search.registry import SearchRegistry

Compiled = Filter | bool
_FAR = 1e16  # beyond any instant in milliseconds: an open end of a period


class Compiler:
    """Compiles engine expressions for one resource type (or SYSTEM: any type, with type tests)."""

    def __init__(self, registry: SearchRegistry, params_of: Callable[[str], FactParams],
                 types: frozenset[str]) -> None:
        self._registry = registry
        self._params_of = params_of
        self._types = types  # the patient compartment's types: the only ones a Consent governs
        self.compile = lru_cache(maxsize=4096)(self._compile)  # expressions and types are hashable

    def parameters(self, expr: Expr, resource_type: str) -> frozenset[str]:
        """The search parameters whose index rows decide the expression on a resource of this type."""
        return self._parameters(expr, resource_type)

    @lru_cache(maxsize=4096)  # noqa: B019 -- one compiler per app; expressions and types are few
    def _parameters(self, expr: Expr, resource_type: str) -> frozenset[str]:
        if isinstance(expr, Const):
            return frozenset()
        if isinstance(expr, Not):
            return self._parameters(expr.expr, resource_type)
        if isinstance(expr, And | Or):
            return frozenset().union(*(self._parameters(item, resource_type) for item in expr.items))
        params = self._params_of(resource_type)
        element = expr.element
        if element == "class":
            return frozenset((*params.category, PROFILES))
        if element == "code":
            return frozenset(params.code)
        if element == "securityLabel":
            return frozenset({LABELS})
        if element == "dataPeriod":
            return frozenset(params.date)
        if element == "related":
            return frozenset(code for code, param in self._registry.for_type(resource_type).items()
                             if param.type == "reference")
        if element == "authoredby":
            return frozenset(params.authors)
        return frozenset()

    def governs(self, resource_type: str) -> bool:
        """True for the types a Consent governs: those of the patient compartment."""
        return resource_type in self._types

    def negate(self, expr: Expr, resource_type: str) -> tuple[Filter, ...] | None:
        """The filters (AND) of the resources the expression excludes; None when it excludes none."""
        found = self.compile(Not(expr), resource_type)
        if found is False:
            return None
        return () if found is True else (found,)

    def _compile(self, expr: Expr, resource_type: str) -> Compiled:
        if isinstance(expr, Const):
            return expr.value
        if isinstance(expr, Not) and isinstance(expr.expr, And):  # not (a and b) = (not a) or (not b)
            return self.compile(Or(tuple(_not(item) for item in expr.expr.items)), resource_type)
        if isinstance(expr, Not) and isinstance(expr.expr, Or):  # not (a or b) = (not a) and (not b)
            return self.compile(And(tuple(_not(item) for item in expr.expr.items)), resource_type)
        if isinstance(expr, Not):
            inner = self.compile(expr.expr, resource_type)
            return (not inner) if isinstance(inner, bool) else Filter("_not", "none-of", None, (), any_of=((inner,),))
        if isinstance(expr, And):
            parts = [self.compile(item, resource_type) for item in expr.items]
            if any(p is False for p in parts):
                return False
            kept = tuple(p for p in parts if not isinstance(p, bool))
            return _all(kept)
        if isinstance(expr, Or):
            parts = [self.compile(item, resource_type) for item in expr.items]
            if any(p is True for p in parts):
                return True
            kept: list[Filter] = []
            for part in parts:
                if isinstance(part, bool):
                    continue
                if part.code == "_or":  # nested alternatives are alternatives here too (and merge by parameter)
                    kept.extend(group[0] for group in part.any_of)
                else:
                    kept.append(part)
            return _any(*kept)
        return self._cond(expr, resource_type)

    def _cond(self, cond: Cond, resource_type: str) -> Compiled:
        if resource_type == SYSTEM:  # one branch per type the condition can hold for
            branches = []
            for type_ in sorted(self._types):
                found = self._cond(cond, type_)
                if found is True:
                    branches.append(Filter(type_, "resource-type", None, ()))
                elif found is not False:
                    branches.append(Filter(type_, "resource-type", None, (), any_of=((found,),)))
            return _any(*branches)
        params = self._params_of(resource_type)
        element = cond.element
        if element == "class":
            return self._class(cond, resource_type, params)
        if element == "code":
            return _any(*(_tokens(code, cond.codings) for code in params.code))
        if element == "securityLabel":
            return _tokens(LABELS, cond.codings)
        if element == "dataPeriod":
            return _first_date(cond, params.date)
        if element == "instance":
            ids = tuple(r.split("/", 1)[1] for r in cond.references if r.startswith(resource_type + "/"))
            return Filter("_id", "token", None, tuple(TokenValue(i) for i in ids)) if ids else False
        if element == "related":
            codes = tuple(code for code, param in self._registry.for_type(resource_type).items()
                          if param.type == "reference")
            return _references(codes, cond.references)
        if element == "authoredby":
            return _references(params.authors, cond.references)
        return False  # an element the engine does not produce: matches nothing (fail closed for permits)

    def _class(self, cond: Cond, resource_type: str, params: FactParams) -> Compiled:
        if any(system == RESOURCE_TYPES and code == resource_type for system, code in cond.codings):
            return True
        others = tuple(c for c in cond.codings if c[0] not in (RESOURCE_TYPES, PROFILE))
        profiles = tuple(code for system, code in cond.codings if system == PROFILE)
        parts: list[Filter] = []
        if others:
            parts.extend(_tokens(code, others) for code in params.category)
        if profiles:
            parts.append(Filter(PROFILES, "uri", None, tuple(UriValue(p) for p in profiles)))
        return _any(*parts)


def _not(expr: Expr) -> Expr:
    if isinstance(expr, Not):
        return expr.expr
    if isinstance(expr, Const):
        return Const(not expr.value)
    return Not(expr)


def _all(parts: tuple[Filter, ...]) -> Compiled:
    if not parts:
        return True
    return parts[0] if len(parts) == 1 else Filter("_and", "any-of", None, (), any_of=(parts,))


def _any(*parts: Filter) -> Compiled:
    if not parts:
        return False
    # alternatives on one token parameter are one test with several values: one index probe, not several
    merged: dict[str, Filter] = {}
    rest: list[Filter] = []
    for part in parts:
        if part.type == "token" and part.modifier is None and part.missing is None and not part.chain:
            found = merged.get(part.code)
            merged[part.code] = part if found is None else Filter(part.code, "token", None,
                                                                  tuple(dict.fromkeys(found.values + part.values)))
        else:
            rest.append(part)
    parts = (*merged.values(), *rest)
    return parts[0] if len(parts) == 1 else Filter("_or", "any-of", None, (), any_of=tuple((p,) for p in parts))


def _tokens(code: str, codings: tuple[tuple[str, str], ...]) -> Filter:
    values = tuple(TokenValue(value, system or None, any_system=not system) for system, value in codings)
    return Filter(code, "token", None, values)


def _references(codes: tuple[str, ...], references: tuple[str, ...]) -> Compiled:
    values = tuple(ReferenceValue(*ref.split("/", 1)) for ref in references if "/" in ref)
    if not codes or not values:
        return False
    return _any(*(Filter(code, "reference", None, values) for code in codes))


def _first_date(cond: Cond, params: tuple[str, ...]) -> Compiled:
    """The first of the type's date parameters that has a value decides (consent/engine/facts.py)."""
    branches: list[Compiled] = []
    absent: list[Filter] = []
    for param in params:
        found = _period(cond, param, with_unknown=False)
        if isinstance(found, Filter):
            branches.append(_all((*absent, found)))
        elif found:
            branches.append(_all(tuple(absent)))
        absent.append(Filter(param, "date", None, (), missing=True))
    if cond.unknown:
        branches.append(_all(tuple(absent)))
    if any(b is True for b in branches):
        return True
    return _any(*(b for b in branches if isinstance(b, Filter)))


def _period(cond: Cond, param: str, *, with_unknown: bool = True) -> Compiled:
    start = _bound(cond.start, 0) if cond.start else -_FAR
    end = _bound(cond.end, 1) if cond.end else _FAR
    dated: Compiled
    if cond.overlap:  # some instant of the resource's date lies in the period
        bounds = tuple(Filter(param, "date", None, (RangeValue(prefix, value, value),))
                       for prefix, value, given in (("ge", start, cond.start), ("le", end, cond.end)) if given)
        dated = _all(bounds) if bounds else Filter(param, "date", None, (), missing=False)
    else:  # the resource's date lies within the period
        dated = Filter(param, "date", None, (RangeValue("eq", start, end),))
    if not (with_unknown and cond.unknown):
        return dated
    undated = Filter(param, "date", None, (), missing=True)
    return undated if dated is True else _any(*(f for f in (dated, undated) if isinstance(f, Filter)))


def _bound(text: str, index: int) -> float:
    found = date_range(text)
    return float(found[index]) if found else (-_FAR if index == 0 else _FAR)
