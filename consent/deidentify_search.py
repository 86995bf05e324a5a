"""Searches a de-identified view refuses: by the identifiers it hides, else every search would be an oracle.

A trainee who may not see a name must not be able to ask `Patient?name=Alice` either, nor sort by it, nor reach
it through a chain or `_has`; a birth date may be searched by whole years only (the view shows the year).
https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from consent.deidentify_profile import Profile
from resources.errors import Forbidden
from resources.search.query import Filter, RangeValue, SearchQuery


def refuse_identifying(query: SearchQuery, profile: Profile) -> None:
    """403 naming the parameter when the query searches or sorts by what the profile hides."""
    for flt in _every(query.filters):
        if flt.code in profile.refused_search:
            raise _refused(flt.code, "it searches by an identifier this role does not see")
        if flt.code in profile.year_only_search and not all(
                isinstance(v, RangeValue) and _whole_years(v) for v in flt.values):
            raise _refused(flt.code, "this role sees the year only: search it by whole years (e.g. 1980)")
    for sort in query.sort:
        if sort.code in profile.refused_search or sort.code in profile.year_only_search:
            raise _refused(sort.code, "sorting by it would tell what this role does not see")


def _every(filters: Iterable[Filter]) -> Iterable[Filter]:
    """Each filter, and the filters inside its chains, `_has` and alternatives, at any depth."""
    for flt in filters:
        yield flt
        yield from _every(c.inner for c in flt.chain)
        if flt.has is not None:
            yield from _every((flt.has.inner,))
        for group in flt.any_of:
            yield from _every(group)


def _whole_years(value: RangeValue) -> bool:
    """True when the value covers whole calendar years (a year, `ge1980`), so no day or month is asked."""
    try:
        low = datetime.fromtimestamp(value.low / 1000, UTC)
        end = datetime.fromtimestamp((value.high + 1) / 1000, UTC)
    except (OverflowError, OSError, ValueError):  # an open end (after 9999): no whole year ends there
        return False
    return (low.month, low.day, low.hour, low.minute, low.second, low.microsecond) == (1, 1, 0, 0, 0, 0) and (
        end.month, end.day, end.hour, end.minute, end.second, end.microsecond) == (1, 1, 0, 0, 0, 0)


def _refused(code: str, why: str) -> Forbidden:
    return Forbidden(f"Search parameter '{code}' is refused for a de-identified view: {why}", code="forbidden",
                     expression=(code,))
