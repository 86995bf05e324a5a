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
from dataclasses import dataclass
from typing import Any

from operations.cohort import (
    CARELOOP,
    DAY_MS,
    CohortRules,
    calendar_months,
    end_ms,
    patient_of,
    percentile,
    scan,
    scan_stored,
    since,
)
from operations.context import OperationCall
from operations.parameters import parameters, part
from resources.guard import GUARD
from resources.ids import now_ms
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


async def _spend(call: OperationCall, rules: CohortRules, now: int, patient: str | None) -> dict[str, float]:
    params = [("date", since(now, rules.window_days)), ("status", "issued,balanced")]
    if patient is not None:
        params.append(("patient", patient))
    totals: dict[str, float] = defaultdict(float)
    billed: set[str] = set()  # ChargeItems an Invoice counted already
    async for invoice in scan(call.context.repository, "Invoice", params):
        who = patient_of(invoice, "subject", "recipient")
        value = (invoice.get("totalGross") or invoice.get("totalNet") or {}).get("value")
        if who is not None and isinstance(value, int | float):
            totals[who] += float(value)
        billed.update(str((line.get("chargeItemReference") or {}).get("reference", ""))
                      for line in invoice.get("lineItem") or [])
    await _charges(call, rules, now, patient, billed, totals)
    return totals


async def _charges(call: OperationCall, rules: CohortRules, now: int, patient: str | None, billed: set[str],
                   totals: dict[str, float]) -> None:
    """Add the ChargeItems of the window that no counted Invoice bills (priceOverride is their total price)."""
    statuses = set(rules.charge_statuses.split(","))
    start = now - rules.window_days * DAY_MS
    params = [("patient", patient)] if patient is not None else []
    async for item in scan(call.context.repository, "ChargeItem", params):
        # the window is judged on occurrence, else enteredDate: a search on either alone would miss the other
        when = end_ms(item.get("occurrenceDateTime") or item.get("occurrencePeriod") or item.get("enteredDate"))
        value = (item.get("priceOverride") or {}).get("value")
        who = patient_of(item)
        if (item.get("status") in statuses and when is not None and start <= when <= now and who is not None
                and isinstance(value, int | float) and f"ChargeItem/{item.get('id')}" not in billed):
            totals[who] += float(value)


async def _visits(call: OperationCall, rules: CohortRules, now: int, patient: str | None) -> Counter[str]:
    params = [("date", since(now, rules.window_days)), ("status", "finished")]
    if patient is not None:
        params.append(("patient", patient))
    counts: Counter[str] = Counter()
    async for encounter in scan(call.context.repository, "Encounter", params):
        who = patient_of(encounter)
        if who is not None:
            counts[who] += 1
    return counts


async def _programmes(call: OperationCall, rules: CohortRules, patient: str | None) -> set[str]:
    # a child of the programme category (chronic-programme, rehab...) is a programme too: judged by subsumption
    params = [("status", "active"), ("category:below", rules.programme_category)]
    if patient is not None:
        params.append(("patient", patient))
    return {who async for plan in scan(call.context.repository, "CarePlan", params)
            if (who := patient_of(plan)) is not None}


def _patient_part(patient: str, tier: str, standing: Standing, reasons: list[str]) -> dict[str, Any]:
    parts = [part("patient", "Reference", {"reference": f"Patient/{patient}"}),
             part("tier", "Coding", {"system": TIER, "code": tier}),
             part("spend", "Decimal", round(standing.spend, 2)), part("visits", "Integer", standing.visits),
             part("programme", "Boolean", standing.programme),
             *[part("reason", "String", r) for r in reasons]]
    return {"name": "result", "part": [p for p in parts if p is not None]}


async def _lines(call: OperationCall, rules: CohortRules, now: int, fresh: bool) -> tuple[int, Lines]:
    """(computed at, lines): kept ones for one patient's answer, new ones for the population's."""
    cache = call.context.population
    key = ("spend-lines", rules.window_days, rules.tier_a_spend_percentile, rules.tier_b_spend_percentile)
    kept = None if fresh else cache.get(key, now)
    if kept is not None:
        return kept[0], kept[1]
    # The lines are the whole population's, so a caller who may see one patient is still compared with
    # everyone: they are computed as the server's own work and only the two aggregate lines are reported.
    token = GUARD.set(None)
    try:
        everyone = list((await _spend(call, rules, now, None)).values())
    finally:
        GUARD.reset(token)
    lines = Lines(percentile(everyone, rules.tier_a_spend_percentile),
                  percentile(everyone, rules.tier_b_spend_percentile))
    cache.put(key, lines, now)
    return now, lines


async def run(call: OperationCall) -> dict[str, Any]:
    """One patient's tier (instance level) or every patient's, with the count per tier (type level)."""
    rules, repository = call.context.cohort, call.context.repository
    now = now_ms()
    target = await call.target()
    patient = str(target["id"]) if target is not None else None
    lines_at, lines = await _lines(call, rules, now, fresh=patient is None)
    spend = await _spend(call, rules, now, patient)
    visits = await _visits(call, rules, now, patient)
    programmes = await _programmes(call, rules, patient)
    patients = [patient] if patient is not None else [p.id async for p in scan_stored(repository, "Patient", [])]
    months = calendar_months(now - rules.window_days * DAY_MS, now)
    results, counts = [], Counter[str]()
    for who in patients:
        standing = Standing(spend.get(who, 0.0), visits.get(who, 0), who in programmes)
        tier, reasons = tier_of(standing, lines, rules, months)
        counts[tier] += 1
        results.append(_patient_part(who, tier, standing, reasons))
    summary = [part(f"count-{t}", "Integer", counts.get(t, 0)) for t in ("A", "B", "C")]
    return parameters(*results, *summary, part("spend-line-a", "Decimal", round(lines.a, 2)),
                      part("spend-line-b", "Decimal", round(lines.b, 2)),
                      part("spend-lines-at", "Instant", format_instant(lines_at)),
                      {"name": "rules", "part": rules.as_parts()})
