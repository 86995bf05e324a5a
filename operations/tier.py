"""Patient/$tier: each patient's service tier (A core, B potential, C basic) with the reasons for it.

Tier A: spend at or above the population's top-20% line, or two or more visits a month, or an active
long-term programme. Tier B: spend from the median up, or visits about quarterly. Tier C: everyone else.
Spend is the gross total of issued and balanced Invoices in the look-back window; visits are finished
Encounters in it (DOMAIN.md section 1). At type level the whole population is tiered, with the count per
tier, against spend lines computed then; one patient's tier uses lines kept from the last computation for
up to CARELOOP_COHORT_CACHE_SECONDS (the answer says when they were computed).
https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from operations.cohort import (
    CARELOOP,
    DAY_MS,
    CohortRules,
    PopulationCache,
    calendar_months,
    end_ms,
    patient_of,
    percentile,
    scan,
    scan_stored,
)
from operations.context import OperationCall
from operations.parameters import parameters, part
from operations.persist import current, observation, persist_asked, write
from operations.segment import HEALTH, SERVICE, STAGE, VALUE, Profile, gather, health_of, referrals, stage_of
from resources.guard import GUARD
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import format_instant

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


async def _spend(repo: Repository, rules: CohortRules, start: int, end: int, patient: str | None
                 ) -> dict[str, float]:
    params = [("date", "ge" + format_instant(start)), ("date", "le" + format_instant(end)),
              ("status", "issued,balanced")]
    if patient is not None:
        params.append(("patient", patient))
    totals: dict[str, float] = defaultdict(float)
    billed: set[str] = set()  # ChargeItems an Invoice counted already
    async for invoice in scan(repo, "Invoice", params):
        who = patient_of(invoice, "subject", "recipient")
        value = (invoice.get("totalGross") or invoice.get("totalNet") or {}).get("value")
        if who is not None and isinstance(value, int | float):
            totals[who] += float(value)
        billed.update(str((line.get("chargeItemReference") or {}).get("reference", ""))
                      for line in invoice.get("lineItem") or [])
    await _charges(repo, rules, start, end, patient, billed, totals)
    return totals


async def _charges(repo: Repository, rules: CohortRules, start: int, end: int, patient: str | None,
                   billed: set[str], totals: dict[str, float]) -> None:
    """Add the ChargeItems of the window that no counted Invoice bills (priceOverride is their total price)."""
    statuses = set(rules.charge_statuses.split(","))
    params = [("patient", patient)] if patient is not None else []
    async for item in scan(repo, "ChargeItem", params):
        # the window is judged on occurrence, else enteredDate: a search on either alone would miss the other
        when = end_ms(item.get("occurrenceDateTime") or item.get("occurrencePeriod") or item.get("enteredDate"))
        value = (item.get("priceOverride") or {}).get("value")
        who = patient_of(item)
        if (item.get("status") in statuses and when is not None and start <= when <= end and who is not None
                and isinstance(value, int | float) and f"ChargeItem/{item.get('id')}" not in billed):
            totals[who] += float(value)


async def _lines(repo: Repository, rules: CohortRules, cache: PopulationCache, now: int, fresh: bool,
                 back: int = 0) -> tuple[int, Lines]:
    """(computed at, lines) of the window `back` windows ago: kept ones for one patient, new ones for everyone."""
    key = ("spend-lines", back, rules.window_days, rules.tier_a_spend_percentile, rules.tier_b_spend_percentile)
    kept = None if fresh else cache.get(key, now)
    if kept is not None:
        return kept[0], kept[1]
    # The lines are the whole population's, so a caller who may see one patient is still compared with
    # everyone: they are computed as the server's own work and only the two aggregate lines are reported.
    end = now - back * rules.window_days * DAY_MS
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
    lines_at, lines = await _lines(repo, rules, cache, now, fresh=patient is None)
    _, previous_lines = await _lines(repo, rules, cache, now, fresh=patient is None, back=1)
    window = rules.window_days * DAY_MS
    spend = await _spend(repo, rules, now - window, now, patient)
    previous_spend = await _spend(repo, rules, now - 2 * window, now - window - 1, patient)
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
