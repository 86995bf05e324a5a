"""The backend-neutral search query model: plain frozen data that each store compiles.

https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from dataclasses import dataclass, field

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True)
class TokenValue:
    """system|code; any_system when no '|' was given, system None with '|code' means 'no system'."""

    code: str | None
    system: str | None = None
    any_system: bool = True


@dataclass(frozen=True)
class StringValue:
    """A string to match (normalised for prefix and contains matching)."""

    text: str
    normalized: str


@dataclass(frozen=True)
class ReferenceValue:
    """A reference target: type and id, or an absolute/canonical URL."""

    type: str | None
    id: str | None
    url: str | None = None


@dataclass(frozen=True)
class RangeValue:
    """A date, number or quantity compared with a prefix against [low, high]."""

    prefix: str
    low: float
    high: float
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class UriValue:
    """A URI to compare exactly or by :above/:below."""

    uri: str


Value = TokenValue | StringValue | ReferenceValue | RangeValue | UriValue


@dataclass(frozen=True)
class Filter:
    """One search parameter with its modifier and OR-ed values (parameters are AND-ed)."""

    code: str
    type: str
    modifier: str | None
    values: tuple[Value, ...]
    missing: bool | None = None


@dataclass(frozen=True)
class SearchQuery:
    """A parsed search: type, filters, page size, cursor and the total mode."""

    resource_type: str
    filters: tuple[Filter, ...] = ()
    count: int = 50
    cursor: int | None = None
    total: str = "none"
    ids: tuple[str, ...] = field(default=())
