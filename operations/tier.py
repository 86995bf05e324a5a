"""Patient/$tier: each patient's service tier (A core, B potential, C basic) with the reasons for it.

Tier A: spend at or above the population's top-20% line, or two or more visits a month, or an active
long-term programme. Tier B: spend from the median up, or visits about quarterly. Tier C: everyone else.
Spend is the gross total of issued and balanced Invoices in the look-back window and of the billable ChargeItems
no counted Invoice bills; visits are finished Encounters in it (DOMAIN.md section 1). Both are summed per
patient by the store (Store.tally: one GROUP BY, no body read). At type level the whole population is
tiered, with the count per tier, against spend lines computed then; one patient's tier uses lines kept from
the last computation for up to CARELOOP_COHORT_CACHE_SECONDS (the answer says when they were computed).
https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from operations.cohort import (
    CARELOOP,
    DAY_MS,
    CohortRules,
    PopulationCache,
    calendar_months,
    percentile,
    scan_each,
    scan_stored,
    tally,
)
from operations.context import OperationCall
from operations.parameters import parameters, part
from operations.persist import current, observation, persist_asked, write
from operations.segment import HEALTH, SERVICE, STAGE, VALUE, Profile, gather, health_of, referrals, stage_of
from resources.guard import GUARD
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import format_instant
from resources.store.protocol import GroupKey, Measure, Tallies

TIER = CARELOOP + "tier"


@dataclass(frozen=True)
class Standing:
    """What a patient's tier is decided from."""

    spend: float
    visits: int
    programme: bool


@dataclass(frozen=True)
class Lines:
    """The population's spend lines for A and B."""

    a: float
    b: float


def tier_of(standing: Standing, lines: Lines, rules: CohortRules, months: int) -> tuple[str, list[str]]:
    """The tier and the reasons that decided it (months: the calendar months the window spans)."""
    reasons = []
    if standing.spend > 0 and standing.spend >= lines.a:
        reasons.append(f"spend {standing.spend:.2f} at or above the top line {lines.a:.2f}")
    if standing.visits >= rules.tier_a_visits_per_month * months:
        reasons.append(f"{standing.visits} visits in {rules.window_days} days "
                       f"(at least {rules.tier_a_visits_per_month:g} a month over {months} calendar months)")
    if standing.programme:
        reasons.append("an active long-term programme")
    if reasons:
        return "A", reasons
    if standing.spend > 0 and standing.spend >= lines.b:
        reasons.append(f"spend {standing.spend:.2f} at or above the median line {lines.b:.2f}")
    if standing.visits >= rules.tier_b_visits_per_window:
        reasons.append(f"{standing.visits} visits in {rules.window_days} days "
                       f"(at least {rules.tier_b_visits_per_window})")
    if reasons:
        return "B", reasons
    return "C", [f"spend {standing.spend:.2f} and {standing.visits} visits in {rules.window_days} days"]


_PATIENT = GroupKey("patient", "reference")
_INVOICE_PAYER = GroupKey("patient", "reference", also=("recipient",))  # the subject, else the recipient
_INVOICE_TOTAL = Measure("sum", "totalgross", also=("totalnet",))
_PRICE = Measure("sum", "price-override")  # a ChargeItem's priceOverride is its total price


def _charge_window(start: int, end: int) -> GroupKey:
    """A ChargeItem's band by its end of occurrence, else its entered date: "1" when in [start, end]."""
    # the window is judged on occurrence, else enteredDate: a search on either alone would miss the other
    return GroupKey("occurrence", "date", bands=(end, start - 1), bound="high", also=("entered-date",))


async def _spend(repo: Repository, rules: CohortRules, start: int, end: int, patient: str | None
                 ) -> dict[str, float]:
    """Each patient's spend in the window: Invoices' totals and ChargeItems' prices summed per patient by the store
    (GROUP BY); ChargeItems that a counted Invoice bills are summed the same way and taken off."""
    params = [("date", "ge" + format_instant(start)), ("date", "le" + format_instant(end))]
    mine = [("patient", patient)] if patient is not None else []
    totals: dict[str, float] = defaultdict(float)
    for (who,), _, (value,) in await tally(repo, "Invoice", [*params, ("status", "issued,balanced"), *mine],
                                           (_INVOICE_PAYER,), (_INVOICE_TOTAL,)):
        if who is not None and value is not None:
            totals[who] += value
    window = _charge_window(start, end)
    charges = [("status", rules.charge_statuses), *mine]
    charged = await tally(repo, "ChargeItem", charges, (_PATIENT, window), (_PRICE,))
    for (who, band), _, (value,) in charged:
        if who is not None and band == "1" and value is not None:
            totals[who] += value
    if any(band == "1" for (_, band), _, _ in charged):
        # ChargeItems a counted Invoice bills are in its total already: taken off as they were added
        for (who, band), _, (value,) in await _billed(repo, charges, window, [*params, *mine]):
            if who is not None and band == "1" and value is not None:
                totals[who] -= value
    # summed by the store in another order than one by one: a millionth is far below any money amount
    return {who: round(total, 6) for who, total in totals.items()}


async def _billed(repo: Repository, charges: list[tuple[str, str]], window: GroupKey,
                  invoices: list[tuple[str, str]]) -> Tallies:
    """The tally of the ChargeItems (of `charges`) that the Invoices (of `invoices`) bill, by patient and window.

    Only Invoices that bill a ChargeItem (CareLoop's `chargeitem` parameter) are read, for their line items.
    """
    billing = [*invoices, ("chargeitem:missing", "false")]
    refs = {str((line.get("chargeItemReference") or {}).get("reference", ""))
            for found in await scan_each(repo, "Invoice", billing, "status", ("issued", "balanced"))
            for line in orjson.loads(found.body or b"{}").get("lineItem") or []}
    ids = sorted(ref.split("/", 1)[1] for ref in refs if ref.startswith("ChargeItem/"))
    found: Tallies = []
    step = repo.search_limits.max_or_values  # one search may OR only so many values
    for at in range(0, len(ids), step):
        found.extend(await tally(repo, "ChargeItem", [*charges, ("_id", ",".join(ids[at:at + step]))],
                                 (_PATIENT, window), (_PRICE,)))
    return found


async def _lines(repo: Repository, rules: CohortRules, cache: PopulationCache, now: int, fresh: bool,
                 back: int = 0, known: dict[str, float] | None = None) -> tuple[int, Lines]:
    """(computed at, lines) of the window `back` windows ago: kept ones for one patient, new ones for everyone
    (known: everyone's spend in that window, when the caller computed it already)."""
    key = ("spend-lines", back, rules.window_days, rules.tier_a_spend_percentile, rules.tier_b_spend_percentile)
    kept = None if fresh else cache.get(key, now)
    if kept is not None:
        return kept[0], kept[1]
    # The lines are the whole population's, so a caller who may see one patient is still compared with
    # everyone: they are computed as the server's own work and only the two aggregate lines are reported.
    end = now - back * rules.window_days * DAY_MS
    if known is not None:
        everyone = list(known.values())
    else:
        token = GUARD.set(None)
        try:
            everyone = list((await _spend(repo, rules, end - rules.window_days * DAY_MS, end, None)).values())
        finally:
            GUARD.reset(token)
    lines = Lines(percentile(everyone, rules.tier_a_spend_percentile),
                  percentile(everyone, rules.tier_b_spend_percentile))
    cache.put(key, lines, now)
    return now, lines


async def _referrals(repo: Repository, cache: PopulationCache, now: int, fresh: bool) -> dict[str, list[str]]:
    """Who referred whom, read anew for the population's answer and kept like the spend lines for one patient's.

    No search parameter finds a patient's referrals (the extension is on the referred patient), so one
    patient's stage would read every Patient. Like the spend lines they are read as the server's own work,
    and only a patient's own count is reported.
    """
    kept = None if fresh else cache.get(("referrals",), now)
    if kept is not None:
        found: dict[str, list[str]] = kept[1]
        return found
    token = GUARD.set(None)
    try:
        found = await referrals(repo)
    finally:
        GUARD.reset(token)
    cache.put(("referrals",), found, now)
    return found


@dataclass(frozen=True)
class Segment:
    """One patient's tier, three dimensions and lifecycle stage, each with the evidence for it."""

    patient: str
    tier: str
    reasons: list[str]
    standing: Standing
    value: str
    health: str
    health_evidence: list[str]
    services: dict[str, list[str]] = field(default_factory=dict)
    stage: str = "potential"
    stage_reason: str = ""
    profile: Profile = field(default_factory=Profile)


@dataclass(frozen=True)
class Segmentation:
    """Every patient's segment and the spend lines they were judged against."""

    lines_at: int
    lines: Lines
    segments: list[Segment]


async def segment(repo: Repository, rules: CohortRules, cache: PopulationCache, now: int,
                  patient: str | None) -> Segmentation:
    """One patient's segment, or every patient's the caller may see (patient None)."""
    window = rules.window_days * DAY_MS
    spend = await _spend(repo, rules, now - window, now, patient)
    previous_spend = await _spend(repo, rules, now - 2 * window, now - window - 1, patient)
    # a caller with no guard sees every patient: their spend is the population's, no need to sum it again
    everyone = patient is None and GUARD.get() is None
    lines_at, lines = await _lines(repo, rules, cache, now, fresh=patient is None, known=spend if everyone else None)
    _, previous_lines = await _lines(repo, rules, cache, now, fresh=patient is None, back=1)
    profiles = await gather(repo, rules, now, patient)
    for referrer, referred in (await _referrals(repo, cache, now, patient is None)).items():
        profiles[referrer].referred.extend(referred)
    patients = [patient] if patient is not None else [p.id async for p in scan_stored(repo, "Patient", [])]
    months = calendar_months(now - window, now)
    found = []
    for who in patients:
        profile = profiles.get(who, Profile())
        standing = Standing(spend.get(who, 0.0), profile.visits, bool(profile.services.get("health-management")))
        tier, reasons = tier_of(standing, lines, rules, months)
        value = {"A": "high", "B": "mid", "C": "low"}[tier_of(Standing(standing.spend, standing.visits, False),
                                                              lines, rules, months)[0]]
        before = previous_spend.get(who, 0.0)
        previous_ab = (before > 0 and before >= previous_lines.b) or profile.previous_visits >= \
            rules.tier_b_visits_per_window
        health, evidence = health_of(profile)
        stage, why = stage_of(profile, tier, previous_ab, rules, now)
        found.append(Segment(who, tier, reasons, standing, value, health, evidence, dict(profile.services), stage,
                             why, profile))
    return Segmentation(lines_at, lines, found)


def _coded(name: str, system: str, code: str, evidence: list[str], reason: str | None = None) -> dict[str, Any]:
    parts = [part("code", "Coding", {"system": system, "code": code}), part("reason", "String", reason),
             *[part("evidence", "Reference", {"reference": ref}) for ref in evidence]]
    return {"name": name, "part": [p for p in parts if p is not None]}


def _patient_part(found: Segment) -> dict[str, Any]:
    standing = found.standing
    parts = [part("patient", "Reference", {"reference": f"Patient/{found.patient}"}),
             part("tier", "Coding", {"system": TIER, "code": found.tier}),
             part("spend", "Decimal", round(standing.spend, 2)), part("visits", "Integer", standing.visits),
             part("programme", "Boolean", standing.programme),
             *[part("reason", "String", r) for r in found.reasons],
             _coded("health-status", HEALTH, found.health, found.health_evidence),
             *[_coded("service-type", SERVICE, code, refs) for code, refs in sorted(found.services.items())],
             _coded("value", VALUE, found.value, []),
             _coded("lifecycle", STAGE, found.stage, [], found.stage_reason)]
    return {"name": "result", "part": [p for p in parts if p is not None]}


async def persist(repo: Repository, done: Segmentation, now: int, patient: str | None) -> int:
    """Write each patient's tier and lifecycle Observations whose value changed; how many were written.

    A changed stage records the stage it came from (component previous-stage): the history of the lifecycle
    Observation is the patient's transitions.
    """
    existing = {**await current(repo, "Observation", "tier", patient),
                **await current(repo, "Observation", "lifecycle", patient)}
    results = []
    for found in done.segments:
        results.append(observation("tier", found.patient, TIER, found.tier, found.reasons, now))
        before = existing.get(f"lifecycle-{found.patient}")
        was = next((c.get("code") for c in ((before or {}).get("valueCodeableConcept") or {}).get("coding") or []),
                   None)
        results.append(observation("lifecycle", found.patient, STAGE, found.stage, [found.stage_reason], now,
                                   previous=was if was != found.stage else None))
    return await write(repo, results, existing)


async def run(call: OperationCall) -> dict[str, Any]:
    """One patient's tier (instance level) or every patient's, with the count per tier (type level)."""
    rules, repo = call.context.cohort, call.context.repository
    now = now_ms()
    asked = persist_asked(call.input, "tier")
    target = await call.target()
    patient = str(target["id"]) if target is not None else None
    done = await segment(repo, rules, call.context.population, now, patient)
    written = await persist(repo, done, now, patient) if asked else None
    counts = Counter(s.tier for s in done.segments)
    summary = [part(f"count-{t}", "Integer", counts.get(t, 0)) for t in ("A", "B", "C")]
    return parameters(*[_patient_part(s) for s in done.segments], *summary, part("written", "Integer", written),
                      part("spend-line-a", "Decimal", round(done.lines.a, 2)),
                      part("spend-line-b", "Decimal", round(done.lines.b, 2)),
                      part("spend-lines-at", "Instant", format_instant(done.lines_at)),
                      {"name": "rules", "part": rules.as_parts()})
