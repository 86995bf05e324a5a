"""Issue 31: the per-patient sums and counts of Patient/$tier, computed by the store, equal the same figures
computed one resource at a time in Python from what a search returns, for a varied population.

The reference here is the computation $tier made before it moved into the store (every body streamed and
judged in Python); the population has every shape the store must read the same way: payer by subject or by
recipient, gross or net totals, ChargeItems by occurrence date, period or entered date, ChargeItems an Invoice
bills (counted once), statuses counted and not, visits in this window, the one before, older and later, service
types coded or by class, ongoing periods. tests/conformance runs it on the MongoDB adapter.
https://hl7.org/fhir/R4B/operations.html https://www.sqlite.org/lang_select.html
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from operations.cohort import DAY_MS, CohortRules, calendar_months, percentile, tally
from operations.segment import SERVICE, Profile, service_of, stage_of
from operations.tier import Lines, Standing, tier_of
from resources.ids import now_ms
from resources.search.dates import date_range, format_instant
from resources.store.protocol import GroupKey, Measure
from tests.auth.conftest import World
from tests.auth.conftest import world as world  # noqa: F401 -- the fixture: SMART on, real signed tokens
from tests.conftest import FHIR_JSON, body
from tests.consent.test_enforcement import clinician, consent, store
from tests.server.test_cohort import invoice, results, visit

pytestmark = pytest.mark.anyio
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def _population(seed: int, now: int, patients: int = 24) -> list[dict[str, Any]]:
    """A clinic's varied records, with ids (a transaction's PUT entries)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []

    def at(days: float) -> str:
        return format_instant(now - int(days * DAY_MS))

    def new(resource: dict[str, Any]) -> str:
        ident = str(uuid.UUID(int=rng.getrandbits(128)))
        out.append({**resource, "id": ident})
        return ident

    for n in range(patients):
        pid = new({"resourceType": "Patient", "name": [{"family": f"V{n}"}]})
        ref = {"reference": f"Patient/{pid}"}
        for _ in range(rng.randint(0, 7)):
            end = rng.choice([-20, 2, 40, 200, 364, 366, 500, 729, 731, 900])  # days ago; -20: ends later
            kind = rng.choice([None, "checkup", "inpatient", "outpatient"])
            period = ({"start": at(end + 0.1)} if rng.random() < 0.15 else  # ongoing: judged by its start
                      {"start": at(end + 0.1), "end": at(end)})
            new({"resourceType": "Encounter", "status": rng.choice(["finished"] * 4 + ["in-progress"]),
                 "class": {"system": ACT, "code": rng.choice(["AMB", "IMP", "EMER", "ACUTE"])}, "subject": ref,
                 "period": period, **({"type": [{"coding": [{"system": SERVICE, "code": kind}]}]} if kind else {})})
        charges = []
        for _ in range(rng.randint(0, 4)):
            when = rng.choice([10, 100, 300, 400, 700, 800])
            dated = rng.choice([{"occurrenceDateTime": at(when)},
                                {"occurrencePeriod": {"start": at(when + 1), "end": at(when)}},
                                {"enteredDate": at(when)}])
            charges.append(new({"resourceType": "ChargeItem", "status": rng.choice(["billable", "billed", "planned"]),
                                "code": {"text": "visit"}, "subject": ref, **dated,
                                "priceOverride": {"value": round(rng.uniform(5, 400), 2), "currency": "EUR"}}))
        for _ in range(rng.randint(0, 4)):
            total = {"totalGross" if rng.random() < 0.7 else "totalNet": {"value": round(rng.uniform(10, 900), 2),
                                                                          "currency": "EUR"}}
            payer = ({"subject": ref} if rng.random() < 0.8 else
                     {"subject": {"reference": "Group/g1"}, "recipient": ref})
            lines = ([{"sequence": 1, "chargeItemReference": {"reference": f"ChargeItem/{charges.pop()}"}}]
                     if charges and rng.random() < 0.5 else [])
            new({"resourceType": "Invoice", "status": rng.choice(["issued", "issued", "balanced", "draft"]),
                 "date": at(rng.choice([5, 200, 380, 600, 800])), **total, **payer,
                 **({"lineItem": lines} if lines else {})})
    return out


async def load(client: httpx.AsyncClient, resources: list[dict[str, Any]]) -> None:
    """Store a population in one transaction."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}
    response = await client.post("/fhir", content=body(bundle), headers=FHIR_JSON)
    assert response.status_code == 200, response.text


def _end(value: Any) -> int | None:
    """The end of a date or Period; an ongoing period (no end) by its start."""
    if isinstance(value, dict):
        if value.get("end") is None:
            span = date_range(value["start"]) if isinstance(value.get("start"), str) else None
            return span[0] if span else None
        value = value["end"]
    span = date_range(value) if isinstance(value, str) else None
    return span[1] if span else None


def _who(resource: dict[str, Any], *keys: str) -> str | None:
    for key in keys or ("subject",):
        ref = (resource.get(key) or {}).get("reference", "")
        if ref.startswith("Patient/"):
            return str(ref.split("/")[1])
    return None


def reference_spend(resources: list[dict[str, Any]], rules: CohortRules, start: int, end: int) -> dict[str, float]:
    """Each patient's spend, one body at a time: counted Invoices' totals, then unbilled counted ChargeItems."""
    totals: dict[str, float] = defaultdict(float)
    billed: set[str] = set()
    for r in resources:
        if r["resourceType"] != "Invoice" or r["status"] not in ("issued", "balanced"):
            continue
        span = date_range(r["date"])
        if span is None or span[1] < start or span[0] > end:
            continue
        value = (r.get("totalGross") or r.get("totalNet") or {}).get("value")
        if (who := _who(r, "subject", "recipient")) is not None:
            totals[who] += value
        billed.update(line["chargeItemReference"]["reference"] for line in r.get("lineItem", []))
    for r in resources:
        if r["resourceType"] != "ChargeItem" or r["status"] not in rules.charge_statuses.split(","):
            continue
        when = _end(r.get("occurrenceDateTime") or r.get("occurrencePeriod") or r.get("enteredDate"))
        if when is not None and start <= when <= end and f"ChargeItem/{r['id']}" not in billed:
            totals[_who(r) or ""] += r["priceOverride"]["value"]
    return dict(totals)


def reference_profiles(resources: list[dict[str, Any]], rules: CohortRules, now: int) -> dict[str, Profile]:
    """Each patient's visits, service evidence and first and last service, one Encounter body at a time."""
    profiles: dict[str, Profile] = defaultdict(Profile)
    start, before = now - rules.window_days * DAY_MS, now - 2 * rules.window_days * DAY_MS
    for r in resources:  # in the order stored, as a search lists them
        if r["resourceType"] != "Encounter" or r["status"] != "finished":
            continue
        who, ended, ref = _who(r), _end(r.get("period")), f"Encounter/{r['id']}"
        assert who is not None and ended is not None
        p = profiles[who]
        if p.first_service is None or ended < p.first_service:
            p.first_service = ended
        if p.last_service is None or ended > p.last_service:
            p.last_service, p.last_encounter = ended, ref
        if start <= ended <= now:
            p.visits += 1
            p.services[service_of(r)].append(ref)
        elif before <= ended < start:
            p.previous_visits += 1
    return profiles


def _evidence(found: dict[str, Any]) -> dict[str, list[str]]:
    out = {}
    for parts in found.get("service-type", []):
        code = next(p["valueCoding"]["code"] for p in parts if p["name"] == "code")
        out[code] = [p["valueReference"]["reference"] for p in parts if p["name"] == "evidence"]
    return out


async def check_store_aggregates_equal_python(client: httpx.AsyncClient, seed: int) -> None:
    """$tier over a varied population answers what the one-by-one computation gives."""
    rules, now = CohortRules(), now_ms()
    resources = _population(seed, now)
    await load(client, resources)
    response = await client.get("/fhir/Patient/$tier")
    assert response.status_code == 200, response.text
    answer = results(response.json())
    window = rules.window_days * DAY_MS
    spend = reference_spend(resources, rules, now - window, now)
    before = reference_spend(resources, rules, now - 2 * window, now - window - 1)
    lines = Lines(percentile(list(spend.values()), rules.tier_a_spend_percentile),
                  percentile(list(spend.values()), rules.tier_b_spend_percentile))
    previous_lines = Lines(percentile(list(before.values()), rules.tier_a_spend_percentile),
                           percentile(list(before.values()), rules.tier_b_spend_percentile))
    profiles = reference_profiles(resources, rules, now)
    months = calendar_months(now - window, now)
    patients = [r["id"] for r in resources if r["resourceType"] == "Patient"]
    assert sorted(answer) == sorted(patients)
    assert any(v > 0 for v in spend.values()) and any(p.previous_visits for p in profiles.values())
    for pid in patients:
        found, profile = answer[pid], profiles.get(pid, Profile())
        assert found["spend"] == [pytest.approx(round(spend.get(pid, 0.0), 2), abs=0.005)], pid
        assert found["visits"] == [profile.visits], pid
        assert _evidence(found) == dict(profile.services), pid
        standing = Standing(spend.get(pid, 0.0), profile.visits, False)
        tier = tier_of(standing, lines, rules, months)[0]
        assert found["tier"][0]["code"] == tier, pid
        previous = before.get(pid, 0.0)
        previous_ab = (previous > 0 and previous >= previous_lines.b) or (
            profile.previous_visits >= rules.tier_b_visits_per_window)
        stage = next(p["valueCoding"]["code"] for p in found["lifecycle"][0] if p["name"] == "code")
        assert stage == stage_of(profile, tier, previous_ab, rules, now)[0], pid
    # $churn-risk's days since the last visit: the latest finished Encounter per patient, by the store too
    response = await client.get("/fhir/Patient/$churn-risk")
    assert response.status_code == 200, response.text
    for pid, found in results(response.json()).items():
        days = next(next(p.get("valueDecimal") for p in signal if p["name"] == "value") if any(
            p["name"] == "value" for p in signal) else None for signal in found["signal"] if any(
            p.get("valueCoding", {}).get("code") == "days-since-last-visit" for p in signal))
        last = profiles.get(pid, Profile()).last_service
        assert (days is None) == (last is None), pid
        if last is not None:
            assert days == pytest.approx(max(0.0, (now - last) / DAY_MS), abs=0.2), pid


@pytest.mark.parametrize("seed", [31, 7])
async def test_store_aggregates_equal_the_one_by_one_computation(client: httpx.AsyncClient, seed: int) -> None:
    await check_store_aggregates_equal_python(client, seed)


async def test_store_sums_count_only_what_the_callers_consent_lets_them_see(world: World) -> None:
    alice = world.ids["alice"]
    for resource in (visit(alice, 10), visit(alice, 20), invoice(alice, 500), invoice(alice, 250, days=40),
                     {"resourceType": "ChargeItem", "status": "billable", "code": {"text": "visit"},
                      "subject": {"reference": f"Patient/{alice}"}, "occurrenceDateTime": format_instant(now_ms()),
                      "priceOverride": {"value": 40, "currency": "EUR"}}):
        await store(world, resource)

    async def alices() -> dict[str, Any]:
        response = await world.client.get("/fhir/Patient/$tier", headers=clinician(world))
        assert response.status_code == 200, response.text
        return results(response.json())[alice]

    found = await alices()
    assert (found["spend"], found["visits"]) == ([790.0], [2])
    # alice withholds her Encounters and Invoices from everyone: the store's sums no longer see them
    await store(world, consent(alice, {"type": "permit", "provision": [
        {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Encounter"},
                                   {"system": "http://hl7.org/fhir/resource-types", "code": "Invoice"}]}]}))
    found = await alices()
    assert (found["spend"], found["visits"], _evidence(found)) == ([40.0], [0], {})


def _encounter(ident: str, who: str, end: str | None, kind: str = "AMB") -> dict[str, Any]:
    period = {"start": "2026-01-01T00:00:00Z", **({"end": end} if end else {})}
    return {"resourceType": "Encounter", "id": ident, "status": "finished", "subject": {"reference": who},
            "class": {"system": ACT, "code": kind}, "period": period}


TALLY_RECORDS = [
    {"resourceType": "Patient", "id": "t1"}, {"resourceType": "Patient", "id": "t2"},
    _encounter("e3", "Patient/t1", "2026-03-01T00:00:00Z"),
    _encounter("e1", "Patient/t1", "2026-05-01T00:00:00Z", "IMP"),
    _encounter("e2", "Patient/t1", "2026-05-01T00:00:00Z"),  # ends with e1: e1 was stored first
    _encounter("e4", "Patient/t2", None),  # ongoing: by its start
    _encounter("e5", "Group/g", "2026-02-01T00:00:00Z"),
    {"resourceType": "Invoice", "id": "i1", "status": "issued", "subject": {"reference": "Patient/t1"},
     "totalGross": {"value": 10.5, "currency": "EUR"}},
    {"resourceType": "Invoice", "id": "i2", "status": "issued", "subject": {"reference": "Group/g"},
     "recipient": {"reference": "Patient/t2"}, "totalNet": {"value": 4, "currency": "EUR"}},
    {"resourceType": "Invoice", "id": "i3", "status": "issued", "subject": {"reference": "Patient/t2"}},
]
START, FEB, MARCH, MAY = 1767225600000, 1769904000000, 1772323200000, 1777593600000  # 2026-01-01 ... (UTC)
TALLIES = [  # (what, type, params, keys, measures, the store's answer sorted)
    ("earliest, latest and the first stored of the latest, per patient", "Encounter", [],
     (GroupKey("patient", "reference"),), (Measure("min", "date"), Measure("max", "date"), Measure("latest", "date")),
     [((None,), 1, (FEB + 999, FEB + 999, "e5")), (("t1",), 3, (MARCH + 999, MAY + 999, "e1")),
      (("t2",), 1, (START, START, "e4"))]),
    ("ids in stored order, by a token limited to codes", "Encounter", [("patient", "Patient/t1")],
     (GroupKey("class", "token", codes=("IMP",)),), (Measure("ids"),),
     [(("IMP",), 1, ([("e1",)],)), ((None,), 2, ([("e3",), ("e2",)],))]),
    ("a payer by subject else recipient; a sum of no value is none, not 0", "Invoice", [],
     (GroupKey("patient", "reference", also=("recipient",)),), (Measure("sum", "totalgross", also=("totalnet",)),),
     [(("t1",), 1, (10.5,)), (("t2",), 2, (4.0,))]),
    ("a date band on the end", "Encounter", [],
     (GroupKey("date", "date", bands=(MAY + 500, START), bound="high"),), (),
     [(("0",), 2, ()), (("1",), 2, ()), (("2",), 1, ())]),  # e4 by its start: not after START
    ("no match: no group", "Invoice", [("status", "draft")], (GroupKey("patient", "reference"),),
     (Measure("sum", "totalgross"),), []),
]


async def check_tallies(client: httpx.AsyncClient, app: FastAPI) -> None:
    """Each tally of TALLIES over TALLY_RECORDS answers what is written beside it."""
    await load(client, TALLY_RECORDS)
    repo = app.state.services.repository
    for what, kind, params, keys, measures, expected in TALLIES:
        found = await tally(repo, kind, params, keys, measures)
        shown = sorted(((k, n, tuple([(i,) for _, i in v] if isinstance(v, list) else v for v in values))
                        for k, n, values in found), key=repr)
        assert shown == sorted(expected, key=repr), what
    stored = {i: n for (_,), _, ([*pairs],) in await tally(repo, "Encounter", [], (GroupKey("patient", "reference"),),
                                                            (Measure("ids"),)) for n, i in pairs}
    assert stored["e3"] < stored["e1"] < stored["e2"]  # the stored order, not the ids' order


async def test_tallies_answer_per_group(client: httpx.AsyncClient, app: FastAPI) -> None:
    await check_tallies(client, app)
