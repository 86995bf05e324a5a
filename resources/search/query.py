"""The backend-neutral search query model: plain frozen data that each store compiles.

A search builds a dozen of these objects on every request: quick_init makes each as cheap as a plain object.

https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from dataclasses import dataclass

from resources.records import quick_init

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SYSTEM = "*"  # the resource_type of a system-level search


@quick_init
@dataclass(frozen=True)
class TokenValue:
    """system|code; any_system when no '|' was given, system None with '|code' means 'no system'."""

    code: str | None
    system: str | None = None
    any_system: bool = True


@quick_init
@dataclass(frozen=True)
class StringValue:
    """A string to match (normalised for prefix and contains matching)."""

    text: str
    normalized: str


@quick_init
@dataclass(frozen=True)
class ReferenceValue:
    """A reference target: type and id, or an absolute/canonical URL."""

    type: str | None
    id: str | None
    url: str | None = None


@quick_init
@dataclass(frozen=True)
class RangeValue:
    """A date, number or quantity compared with a prefix against [low, high]."""

    prefix: str
    low: float
    high: float
    system: str | None = None
    code: str | None = None


@quick_init
@dataclass(frozen=True)
class UriValue:
    """A URI to compare exactly or by :above/:below."""

    uri: str


@quick_init
@dataclass(frozen=True)
class CompositeValue:
    """code$value: a token for the first component and a typed value for the second."""

    first: TokenValue
    second: TokenValue | StringValue | ReferenceValue | RangeValue
    second_type: str


Value = TokenValue | StringValue | ReferenceValue | RangeValue | UriValue | CompositeValue


@quick_init
@dataclass(frozen=True)
class Filter:
    """One search parameter with its modifier and OR-ed values (parameters are AND-ed)."""

    code: str
    type: str
    modifier: str | None
    values: tuple[Value, ...]
    missing: bool | None = None
    chain: tuple[Chained, ...] = ()  # reference param followed by a parameter of its target (per target type)
    has: Has | None = None  # _has reverse chain
    # type "any-of": alternatives (OR) of filter groups (AND), e.g. the union of several granted scopes;
    # type "none-of": no group holds (the negation of an any-of); type "resource-type": the resource is of type
    # `code`, and one of the any_of groups holds when there are any (a type test inside a search across types);
    # type "compartment" (code _compartment): membership of the patient compartment of values[0].id
    any_of: tuple[tuple[Filter, ...], ...] = ()


@quick_init
@dataclass(frozen=True)
class Chained:
    """The part of a chain that applies to one target type: subject:Patient.name=x -> (Patient, name=x)."""

    target_type: str
    inner: Filter


@quick_init
@dataclass(frozen=True)
class Has:
    """_has:Source:reference:inner -- resources that some Source points at through `reference`."""

    source_type: str
    reference: str
    inner: Filter


@quick_init
@dataclass(frozen=True)
class Sort:
    """One _sort key."""

    code: str
    type: str
    descending: bool = False


@quick_init
@dataclass(frozen=True)
class Include:
    """_include (forward) or _revinclude (reverse), with its optional target type and :iterate."""

    source_type: str
    code: str
    target_type: str | None = None
    reverse: bool = False
    iterate: bool = False


@quick_init
@dataclass(frozen=True)
class SearchQuery:
    """A parsed search: type, filters, sort, includes, page size, cursor and the total mode."""

    resource_type: str
    filters: tuple[Filter, ...] = ()
    count: int = 50
    cursor: int | None = None
    total: str = "none"
    sort: tuple[Sort, ...] = ()
    includes: tuple[Include, ...] = ()
    types: tuple[str, ...] = ()  # system-level search: the _type list (every type when empty)

    @property
    def is_system(self) -> bool:
        """True for a search across resource types (GET [base]?...)."""
        return self.resource_type == SYSTEM
