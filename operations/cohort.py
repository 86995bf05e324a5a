"""What the cohort operations ($tier, $churn-risk) read, and their rules as data (DOMAIN.md sections 1-2).

Every threshold is a field of CohortRules (settings: CARELOOP_COHORT_RULES), and the operations report the
values they used, so a person sees why a patient got a tier or a risk. Data is read through the Repository,
so the caller's scopes narrow it like any search. https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from resources.repository import Repository
from resources.search.dates import date_range, format_instant
from resources.search.parse import parse_search
from resources.store.protocol import GroupKey, Measure, StoredResource, Tallies

DAY_MS = 86_400_000
CARELOOP = "http://careloop.health/fhir/CodeSystem/"


@dataclass(frozen=True)
class CohortRules:
    """The clinic rules of tiers and churn risk; every number is a default a clinic may change."""

    window_days: int = 365  # look-back of spend and visits
    tier_a_spend_percentile: float = 80.0  # spend at or above this percentile of the population: A
    tier_b_spend_percentile: float = 50.0  # at or above this (and below A): B
    tier_a_visits_per_month: float = 2.0
    tier_b_visits_per_window: int = 4  # about quarterly
    programme_category: str = CARELOOP + "service-type|health-management"  # an active CarePlan of it or below: A
    charge_statuses: str = "billable,billed"  # ChargeItems counted as spend (unless an Invoice already bills them)
    lost_days: int = 180
    elevated_days: int = 90
    unanswered_elevated: int = 2
    unanswered_high: int = 3
    satisfaction_code: str = CARELOOP + "churn-signal|satisfaction"
    satisfaction_elevated: float = 3.0  # at most this: elevated
    satisfaction_high: float = 3.0  # below this: high
    missed_elevated: int = 2
    missed_high: int = 3
    complaints_elevated: int = 1
    complaints_high: int = 2
    complaint_category: str = CARELOOP + "follow-up-task|complaint"
    # health status: active Conditions in these (stored, editable) ValueSets, and abnormal recent Observations
    severe_conditions: str = "http://careloop.health/fhir/ValueSet/severe-conditions"
    chronic_conditions: str = "http://careloop.health/fhir/ValueSet/chronic-conditions"
    sub_healthy_conditions: str = "http://careloop.health/fhir/ValueSet/sub-healthy-conditions"
    abnormal_days: int = 90  # an abnormal Observation this recent makes a patient sub-healthy
    abnormal_interpretations: str = "A,AA,H,HH,HU,L,LL,LU"  # v3-ObservationInterpretation codes
    # lifecycle stage
    new_days: int = 90  # first service at most this long ago: new
    loyal_referrals: int = 1  # patients referred that make a patient loyal
    # churn result as a probability: 1 - the product of (1 - p) over the signals, p by level
    churn_p_elevated: float = 0.25
    churn_p_high: float = 0.75
    # cohort statistics
    age_bands: str = "35,50"  # under 35, 35 to 50, over 50
    region_param: str = "address-state"  # the Patient search parameter a region is (its first address)

    @classmethod
    def of(cls, overrides: dict[str, Any]) -> CohortRules:
        """Defaults with a clinic's overrides; ValueError naming an unknown rule."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown cohort rule(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(cls(), **overrides)

    def as_parts(self) -> list[dict[str, Any]]:
        """The rules as Parameters parts (reported with every answer)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            kind = "String" if isinstance(value, str) else "Decimal"
            parts.append({"name": f.name, f"value{kind}": value})
        return parts


class PopulationCache:
    """Population figures (the spend lines) kept for a while, so a one-patient answer need not scan everyone.

    A line is a percentile of a year's spend over the whole population; one new invoice hardly moves it, so
    answers may use lines up to `seconds` old, and say when they were computed. 0 keeps nothing.
    """

    def __init__(self, seconds: float = 0) -> None:
        self._ms = int(seconds * 1000)
        self._kept: dict[Any, tuple[int, Any]] = {}

    def get(self, key: Any, now: int) -> tuple[int, Any] | None:
        """(computed at, value) when kept and not too old."""
        found = self._kept.get(key)
        return found if found is not None and now - found[0] < self._ms else None

    def put(self, key: Any, value: Any, now: int) -> None:
        """Keep a value computed now (only the newest per key: the cache cannot grow)."""
        if self._ms > 0:
            self._kept[key] = (now, value)


async def scan_stored(repository: Repository, resource_type: str, params: Sequence[tuple[str, str]],
                      batch: int = 1000) -> AsyncIterator[StoredResource]:
    """Every current resource matching a search (as the caller may see it), page by page."""
    base = parse_search(resource_type, params, repository.registry, strict=True).query
    cursor: int | None = None
    while True:
        page = await repository.search(replace(base, count=batch, cursor=cursor))
        for found in page.resources:
            yield found
        if page.next_cursor is None:
            return
        cursor = int(page.next_cursor)


# per patient: the end of their earliest and latest finished Encounter, and the latest one (Store.tally)
SERVICE_SPAN = (GroupKey("patient", "reference"),), (Measure("min", "date"), Measure("max", "date"),
                                                      Measure("latest", "date"))


async def scan_each(repository: Repository, resource_type: str, params: Sequence[tuple[str, str]], code: str,
                    values: Sequence[str]) -> list[StoredResource]:
    """The matches of a search with `code` any of `values`, one search per value, in the order they were stored.

    One value of a token parameter is one index range that pages stream from; several values OR'd make every
    page collect and sort all matches first (100,000 Invoices: 100 pages of 100,000 rows each).
    """
    found = [r for value in dict.fromkeys(values) async for r in scan_stored(repository, resource_type,
                                                                              [*params, (code, value)])]
    return sorted({(r.type, r.id): r for r in found}.values(), key=lambda r: r.seq)


async def tally(repository: Repository, resource_type: str, params: Sequence[tuple[str, str]],
                keys: tuple[GroupKey, ...], measures: tuple[Measure, ...]) -> Tallies:
    """Counts, sums, earliest and latest per group of a search's matches (as the caller may see them), computed
    in the store: no body leaves it."""
    query = parse_search(resource_type, params, repository.registry, strict=True).query
    return await repository.tally(query, keys, measures)


async def scan(repository: Repository, resource_type: str, params: Sequence[tuple[str, str]],
               ) -> AsyncIterator[dict[str, Any]]:
    """The bodies of every current resource matching a search, as the caller may see them."""
    async for found in scan_stored(repository, resource_type, params):
        if found.body:
            yield orjson.loads(found.body)


def patient_of(resource: dict[str, Any], *keys: str) -> str | None:
    """The Patient id a resource's subject (or another reference element) names."""
    for key in keys or ("subject",):
        ref = (resource.get(key) or {}).get("reference")
        if isinstance(ref, str) and ref.startswith("Patient/"):
            return ref.split("/", 2)[1]
    return None


def end_ms(value: Any) -> int | None:
    """The last millisecond a date, dateTime or Period covers."""
    if isinstance(value, dict):
        value = value.get("end") or value.get("start")
    span = date_range(value) if isinstance(value, str) else None
    return span[1] if span else None


def since(now: int, days: int) -> str:
    """The `ge` date of a look-back of `days` before now."""
    return "ge" + format_instant(now - days * DAY_MS)


def calendar_months(start: int, end: int) -> int:
    """The calendar months from start to end (ms): whole months, and the rest rounded to the nearest month.

    A 365-day window is 12 months in every year (a leap day leaves 11 months and 30 days), not 365/30.4.
    """
    a, b = datetime.fromtimestamp(start / 1000, UTC), datetime.fromtimestamp(end / 1000, UTC)
    months = (b.year - a.year) * 12 + b.month - a.month
    if (b.day, b.time()) < (a.day, a.time()):
        months -= 1
    # the rest after the whole months, as a share of the month it falls in
    year, month = divmod(a.month - 1 + months, 12)
    anchor_day = min(a.day, calendar.monthrange(a.year + year, month + 1)[1])
    anchor = a.replace(year=a.year + year, month=month + 1, day=anchor_day)
    rest = (b - anchor).total_seconds() / 86_400
    return months + (1 if rest * 2 >= calendar.monthrange(anchor.year, anchor.month)[1] else 0)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]
