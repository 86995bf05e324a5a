"""The resource-dependent part of a consent verdict as a small boolean expression over a resource's facts.

Constants are folded as the expression is built, so an answer that does not depend on the resource is
Const(True) or Const(False); the store query compiles the rest (Cond -> search filters) and `holds` re-checks
one resource in memory. https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from resources.search.dates import MAX_MS, date_range

if TYPE_CHECKING:
    from consent.engine.terms import Facts

Coding = tuple[str, str]  # (system, code)

ELEMENTS = frozenset({"class", "code", "securityLabel", "dataPeriod", "instance", "related", "authoredby"})


@dataclass(frozen=True)
class Const:
    """A decided answer."""

    value: bool


@dataclass(frozen=True)
class Cond:
    """One provision element tested against the resource; within an element any value matches.

    dataPeriod: `unknown` is what an undated resource counts as (True for a deny provision, False for a
    permit provision: fail closed); `overlap` makes a date range that overlaps the period count (deny
    provisions), else it must lie within it (permit provisions).
    """

    element: str  # class | code | securityLabel | dataPeriod | instance | related | authoredby
    codings: tuple[Coding, ...] = ()
    references: tuple[str, ...] = ()
    start: str | None = None
    end: str | None = None
    unknown: bool = False
    overlap: bool = False
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        # expressions are hashed over and over while they are folded: computed once, like a tuple's would be
        object.__setattr__(self, "_hash", hash((self.element, self.codings, self.references, self.start, self.end,
                                                self.unknown, self.overlap)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True)
class Not:
    """Negation."""

    expr: Expr
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((Not, self.expr)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True)
class And:
    """Conjunction of two or more expressions."""

    items: tuple[Expr, ...]
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((And, self.items)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True)
class Or:
    """Disjunction of two or more expressions."""

    items: tuple[Expr, ...]
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((Or, self.items)))

    def __hash__(self) -> int:
        return self._hash


Expr = Const | Cond | Not | And | Or

TRUE = Const(True)
FALSE = Const(False)


def const(value: bool) -> Const:
    """TRUE or FALSE."""
    return TRUE if value else FALSE


def negate(expr: Expr) -> Expr:
    """Not, folded."""
    if isinstance(expr, Const):
        return const(not expr.value)
    if isinstance(expr, Not):
        return expr.expr
    return Not(expr)


def all_of(*items: Expr) -> Expr:
    """And, folded: TRUE parts dropped, FALSE wins, nested Ands flattened, repeats removed."""
    kept: dict[Expr, None] = {}
    for item in items:
        if item == FALSE:
            return FALSE
        if item == TRUE:
            continue
        for part in item.items if isinstance(item, And) else (item,):
            kept[part] = None
    if not kept:
        return TRUE
    if any(negate(part) in kept for part in kept):  # x and not x
        return FALSE
    return next(iter(kept)) if len(kept) == 1 else And(tuple(kept))


def any_of(*items: Expr) -> Expr:
    """Or, folded: FALSE parts dropped, TRUE wins, nested Ors flattened, repeats removed."""
    kept: dict[Expr, None] = {}
    for item in items:
        if item == TRUE:
            return TRUE
        if item == FALSE:
            continue
        for part in item.items if isinstance(item, Or) else (item,):
            kept[part] = None
    if not kept:
        return FALSE
    if any(negate(part) in kept for part in kept):  # x or not x
        return TRUE
    return next(iter(kept)) if len(kept) == 1 else Or(tuple(kept))


def instant_range(text: str) -> tuple[int, int] | None:
    """date_range, except that the last instant of year 9999 is the end of time instead of an OverflowError."""
    try:
        return date_range(text)
    except OverflowError:
        return MAX_MS, MAX_MS


def _bounds(text: str | None, low: bool) -> int | None:
    found = instant_range(text) if text else None
    return None if found is None else found[0 if low else 1]


def date_matches(cond: Cond, date: tuple[str, str] | None) -> bool:
    """A resource's clinical date against a dataPeriod condition (undated: cond.unknown)."""
    if date is None:
        return cond.unknown
    low, high = _bounds(date[0], True), _bounds(date[1], False)
    if low is None or high is None:
        return cond.unknown
    start, end = _bounds(cond.start, True), _bounds(cond.end, False)
    if cond.overlap:
        return (start is None or high >= start) and (end is None or low <= end)
    return (start is None or low >= start) and (end is None or high <= end)


def cond_holds(cond: Cond, facts: Facts) -> bool:
    """One condition against one resource."""
    element = cond.element
    if element == "class":
        return not facts.classes.isdisjoint(cond.codings)
    if element == "code":
        return not facts.codes.isdisjoint(cond.codings)
    if element == "securityLabel":
        return not facts.labels.isdisjoint(cond.codings)
    if element == "dataPeriod":
        return date_matches(cond, facts.date)
    if element == "instance":
        return facts.id is not None and f"{facts.type}/{facts.id}" in cond.references
    if element == "related":
        return not facts.references.isdisjoint(cond.references)
    if element == "authoredby":
        return not facts.authors.isdisjoint(cond.references)
    raise ValueError(f"unknown consent condition element '{element}'")


def holds(expr: Expr, facts: Facts) -> bool:
    """Whether the expression is true of this resource."""
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Cond):
        return cond_holds(expr, facts)
    if isinstance(expr, Not):
        return not holds(expr.expr, facts)
    if isinstance(expr, And):
        return all(holds(item, facts) for item in expr.items)
    return any(holds(item, facts) for item in expr.items)
