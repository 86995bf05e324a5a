"""The three dimensions of a patient (health status, service type, value) and their lifecycle stage.

DOMAIN.md section 1: health status from active Conditions in editable ValueSets and abnormal recent
Observations; service type from finished Encounters, active programme CarePlans and long-term
MedicationRequests; lifecycle stage from the first and last service, tier and referrals. The finished
Encounters are counted per patient by the store (Store.tally: no Encounter is read); the other evidence is
gathered from one scan per resource type (narrowed to one patient when one is asked for), then judged by pure
functions.
https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from operations.cohort import CARELOOP, DAY_MS, SERVICE_SPAN, CohortRules, patient_of, scan, scan_each, tally
from resources.errors import Invalid
from resources.repository import Repository
from resources.search.dates import format_instant
from resources.store.protocol import GroupKey, Measure

HEALTH = CARELOOP + "health-status"
SERVICE = CARELOOP + "service-type"
VALUE = CARELOOP + "value-segment"
STAGE = CARELOOP + "lifecycle-stage"
REFERRED_BY = "http://careloop.health/fhir/StructureDefinition/referred-by"
_INPATIENT = {"IMP", "ACUTE", "NONAC"}  # v3-ActCode Encounter classes of a stay
log = logging.getLogger("careloop.cohort")


@dataclass
class Profile:
    """What one patient's dimensions and stage are judged from (references are the evidence)."""

    first_service: int | None = None  # end of the earliest finished Encounter, ms
    last_service: int | None = None
    last_encounter: str | None = None  # reference of the latest finished Encounter
    visits: int = 0  # finished Encounters in the window
    previous_visits: int = 0  # in the window before it
    services: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    conditions: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # status -> Conditions
    abnormal: list[str] = field(default_factory=list)  # abnormal recent Observations
    referred: list[str] = field(default_factory=list)  # Patients this one referred


async def judged_by_terminology(repo: Repository, resource_type: str, params: Sequence[tuple[str, str]],
                                fallback: Sequence[tuple[str, str]] | None,
                                each: tuple[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """A search that needs the terminology (`:below`, `:in`); on a server without it (CARELOOP_TERMINOLOGY_SEED
    off), the fallback search (exact codes) or nothing, with a warning, rather than failing the whole answer.

    each: a token parameter and its values, searched one value at a time (see scan_each)."""
    try:
        if each is not None:
            return [orjson.loads(r.body or b"{}") for r in await scan_each(repo, resource_type, params, *each)]
        return [body async for body in scan(repo, resource_type, params)]
    except Invalid as exc:
        if exc.issues[0].code not in ("not-supported", "not-found"):  # no such code system or value set
            raise
        log.warning("Segmentation without terminology: %s", exc.issues[0].diagnostics)
        return [] if fallback is None else [body async for body in scan(repo, resource_type, fallback)]


def service_of(encounter: dict[str, Any]) -> str:
    """checkup, outpatient or inpatient: a type coded in CareLoop's service types wins, else the class."""
    for concept in encounter.get("type") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == SERVICE and coding.get("code") in ("checkup", "outpatient", "inpatient"):
                return str(coding["code"])
    return "inpatient" if (encounter.get("class") or {}).get("code") in _INPATIENT else "outpatient"


def health_of(profile: Profile) -> tuple[str, list[str]]:
    """The health status and its evidence: the most serious that applies."""
    for status in ("severe", "chronic"):
        if profile.conditions.get(status):
            return status, profile.conditions[status]
    if profile.conditions.get("sub-healthy") or profile.abnormal:
        return "sub-healthy", [*profile.conditions.get("sub-healthy", []), *profile.abnormal]
    return "healthy", []


def stage_of(profile: Profile, tier: str, previous_ab: bool, rules: CohortRules, now: int) -> tuple[str, str]:
    """The lifecycle stage and the reason for it (previous_ab: A or B over the window before this one)."""
    if profile.first_service is None or profile.last_service is None:
        return "potential", "no finished Encounter yet"
    idle = (now - profile.last_service) / DAY_MS
    if idle >= rules.lost_days:
        return "lost", f"no service for {idle:.0f} days (at least {rules.lost_days})"
    since_first = (now - profile.first_service) / DAY_MS
    if since_first <= rules.new_days:
        return "new", f"first service {since_first:.0f} days ago (at most {rules.new_days})"
    if len(profile.referred) >= rules.loyal_referrals > 0:
        return "loyal", f"referred {len(profile.referred)} patient(s)"
    if tier in ("A", "B") and previous_ab:
        return "loyal", f"tier {tier}, and A or B in the {rules.window_days} days before: 12 months or more"
    return "active", f"last service {idle:.0f} days ago, first {since_first:.0f} days ago"


async def gather(repo: Repository, rules: CohortRules, now: int, patient: str | None) -> dict[str, Profile]:
    """Every patient's profile (or one patient's) from one scan per resource type, as the caller may see them."""
    profiles: dict[str, Profile] = defaultdict(Profile)
    mine = [("patient", patient)] if patient is not None else []
    start, before = now - rules.window_days * DAY_MS, now - 2 * rules.window_days * DAY_MS
    await _services(repo, [*mine, ("status", "finished")], now, start, before, profiles)
    programmes = [*mine, ("status", "active"), ("category:below", rules.programme_category)]
    exact = [*mine, ("status", "active"), ("category", rules.programme_category)]
    for plan in await judged_by_terminology(repo, "CarePlan", programmes, exact):
        if (who := patient_of(plan)) is not None:
            profiles[who].services["health-management"].append(f"CarePlan/{plan['id']}")
    async for order in scan(repo, "MedicationRequest", [*mine, ("status", "active")]):
        # long-term medication: any course but an acute one
        course = {c.get("code") for c in (order.get("courseOfTherapyType") or {}).get("coding") or []}
        if (who := patient_of(order)) is not None and "acute" not in course:
            profiles[who].services["pharmacy"].append(f"MedicationRequest/{order['id']}")
    for status, url in (("severe", rules.severe_conditions), ("chronic", rules.chronic_conditions),
                        ("sub-healthy", rules.sub_healthy_conditions)):
        params = [*mine, ("code:in", url)]
        statuses = ("clinical-status", ("active", "recurrence", "relapse"))
        for condition in await judged_by_terminology(repo, "Condition", params, None, statuses):
            if (who := patient_of(condition)) is not None:
                profiles[who].conditions[status].append(f"Condition/{condition['id']}")
    abnormal = set(rules.abnormal_interpretations.split(","))
    recent = [*mine, ("date", "ge" + format_instant(now - rules.abnormal_days * DAY_MS))]
    for found in await scan_each(repo, "Observation", recent, "status", ("final", "amended")):
        obs = orjson.loads(found.body or b"{}")
        codes = {c.get("code") for concept in obs.get("interpretation") or [] for c in concept.get("coding") or []}
        if codes & abnormal and (who := patient_of(obs)) is not None:
            profiles[who].abnormal.append(f"Observation/{obs['id']}")
    return profiles


_SERVICE_CODES = ("checkup", "outpatient", "inpatient")


async def _services(repo: Repository, finished: list[tuple[str, str]], now: int, start: int, before: int,
                    profiles: dict[str, Profile]) -> None:
    """First and last service, visits in this window and the one before, and the service types of this window's
    visits, per patient: counted by the store over the finished Encounters' index entries (no body read).

    A visit is judged by the end of its period (an ongoing period by its start).
    """
    for (who,), _, (first, last, latest) in await tally(repo, "Encounter", finished, *SERVICE_SPAN):
        if who is not None and first is not None:
            p = profiles[who]
            p.first_service, p.last_service, p.last_encounter = first, last, f"Encounter/{latest}"
    keys = (GroupKey("patient", "reference"),
            GroupKey("date", "date", bands=(now, start - 1, before - 1), bound="high"),  # "1": this window
            GroupKey("type", "token", system=SERVICE, codes=_SERVICE_CODES), GroupKey("class", "token"))
    seen: dict[str, dict[str, list[tuple[int, str]]]] = defaultdict(lambda: defaultdict(list))
    for (who, band, typed, kind), count, (ids,) in await tally(
            repo, "Encounter", [*finished, ("date", "ge" + format_instant(before))], keys, (Measure("ids"),)):
        if who is None:
            continue
        if band == "1":
            profiles[who].visits += count
            service = typed or ("inpatient" if kind in _INPATIENT else "outpatient")
            seen[who][service].extend(ids)
        elif band == "2":
            profiles[who].previous_visits += count
    for who, services in seen.items():
        for service, found in services.items():  # the evidence in the order stored, as a search would list it
            profiles[who].services[service].extend(f"Encounter/{ident}" for _, ident in sorted(found))


async def referrals(repo: Repository) -> dict[str, list[str]]:
    """Who referred whom: per referrer, the Patients whose `referred-by` extension names them."""
    found: dict[str, list[str]] = defaultdict(list)
    async for person in scan(repo, "Patient", []):
        for ext in person.get("extension") or []:
            referrer = patient_of(ext, "valueReference") if ext.get("url") == REFERRED_BY else None
            if referrer is not None:
                found[referrer].append(f"Patient/{person['id']}")
    return dict(found)
