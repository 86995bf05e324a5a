"""$cohort-stats: counts by dimension and cross-tab equal hand counts; trends; referrals; only visible patients.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.settings import Settings
from tests.auth.conftest import open_world
from tests.conftest import client_for, create
from tests.factories import patient
from tests.server.test_cohort import CARELOOP, ago, invoice, visit
from tests.server.test_cohort_segments import REFERRED_BY, RESULT, post
from tests.server.test_operation_definitions import _declared, _undeclared

pytestmark = pytest.mark.anyio
IDENT = "http://careloop.health/fhir/sid/segment-result"
RISK = "http://terminology.hl7.org/CodeSystem/risk-probability"


def born(years: int, days: int = 0) -> str:
    """The birth date of someone `years` old today, `days` later (so a year younger once days > 0)."""
    today = datetime.now(UTC).date()
    day = 28 if (today.month, today.day) == (2, 29) else today.day
    return (date(today.year - years, today.month, day) + timedelta(days=days)).isoformat()


def person(sex: str, birth: str | None, state: str | None, **extra: Any) -> dict[str, Any]:
    found = patient(gender=sex, **extra)
    if birth is not None:
        found["birthDate"] = birth
    if state is not None:
        found["address"] = [{"city": "Town", "state": state}]
    return found


def result(kind: str, pid: str, code: str, when: str | None = None) -> dict[str, Any]:
    ident = [{"system": IDENT, "value": f"{kind}-{pid}"}]
    if kind == "churn":
        return {"resourceType": "RiskAssessment", "status": "final", "identifier": ident,
                "subject": {"reference": f"Patient/{pid}"}, "occurrenceDateTime": when or ago(1),
                "prediction": [{"outcome": {"coding": [{"system": RESULT, "code": "churn"}]},
                                "qualitativeRisk": {"coding": [{"system": RISK, "code": code}]}}]}
    system = CARELOOP + ("tier" if kind == "tier" else "lifecycle-stage")
    return {"resourceType": "Observation", "status": "final", "identifier": ident,
            "code": {"coding": [{"system": RESULT, "code": kind}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": when or ago(1), "valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}


def tables(answer: dict[str, Any]) -> dict[Any, dict[Any, int]]:
    """By dimension (or pair of dimensions, or ('trend', kind)): value (or values) -> count."""
    out: dict[Any, dict[Any, int]] = {}
    for param in answer["parameter"]:
        if param["name"] not in ("by", "cross", "trend"):
            continue
        dims = tuple(p["valueCode"] for p in param["part"] if p["name"] == "dimension")
        key = ("trend", *dims) if param["name"] == "trend" else dims[0] if len(dims) == 1 else dims
        cells = {}
        for group in (p for p in param["part"] if p["name"] == "group"):
            values = tuple(p["valueString"] for p in group["part"] if p["name"] == "value")
            cells[values[0] if len(values) == 1 else values] = next(
                p["valueInteger"] for p in group["part"] if p["name"] == "count")
        out[key] = cells
    return out


def value(answer: dict[str, Any], name: str) -> Any:
    return next(next(v for k, v in p.items() if k.startswith("value")) for p in answer["parameter"]
                if p["name"] == name)


# (sex, birth, state, tier, lifecycle, churn)
POPULATION = [
    ("female", born(35, 1), "CA", "A", "new", "low"),  # 34 until tomorrow: under 35
    ("female", born(35), "CA", "A", "loyal", "moderate"),  # 35 today: 35-50
    ("male", born(51, 1), "NY", "B", "active", "high"),  # 50 until tomorrow: 35-50
    ("male", born(51), "NY", "C", "lost", "high"),  # 51 today: over 50
    ("other", None, None, "C", "potential", "low"),  # no birth date, no address
]


async def populate(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> list[str]:
    ids = []
    for sex, birth, state, tier, stage, churn in POPULATION:
        pid = (await create(client, person(sex, birth, state)))["id"] if headers is None else None
        if headers is not None:
            made = await client.post("/fhir/Patient", json=person(sex, birth, state), headers=headers)
            assert made.status_code == 201, made.text
            pid = made.json()["id"]
        assert pid is not None
        for kind, code in (("tier", tier), ("lifecycle", stage), ("churn", churn)):
            body = result(kind, pid, code)
            if headers is None:
                await create(client, body)
            else:
                made = await client.post(f"/fhir/{body['resourceType']}", json=body, headers=headers)
                assert made.status_code == 201, made.text
        ids.append(pid)
    return ids


async def test_counts_and_cross_tabs_equal_hand_counts(client: httpx.AsyncClient) -> None:
    await populate(client)
    answer = (await client.get("/fhir/$cohort-stats", params=[("cross", "tier|age-band"),
                                                              ("cross", "churn|sex")])).json()
    assert value(answer, "total") == 5
    found = tables(answer)
    assert found["tier"] == {"A": 2, "B": 1, "C": 2}
    assert found["lifecycle"] == {"new": 1, "loyal": 1, "active": 1, "lost": 1, "potential": 1}
    assert found["age-band"] == {"<35": 1, "35-50": 2, ">50": 1, "unknown": 1}
    assert found["sex"] == {"female": 2, "male": 2, "other": 1}
    assert found["region"] == {"CA": 2, "NY": 2, "unknown": 1}
    assert found["churn"] == {"low": 2, "moderate": 1, "high": 2}
    assert found[("tier", "age-band")] == {("A", "<35"): 1, ("A", "35-50"): 1, ("B", "35-50"): 1,
                                           ("C", ">50"): 1, ("C", "unknown"): 1}
    assert found[("churn", "sex")] == {("low", "female"): 1, ("moderate", "female"): 1, ("high", "male"): 2,
                                       ("low", "other"): 1}
    for dimension in ("tier", "lifecycle", "age-band", "sex", "region", "churn"):
        assert sum(found[dimension].values()) == 5


async def test_age_bands_are_settings(settings: Settings) -> None:
    async with client_for(settings.model_copy(update={"cohort_rules": {"age_bands": "30,40,60"}})) as client:
        for years in (29, 30, 45, 61):
            await create(client, person("female", born(years), None))
        found = tables((await client.get("/fhir/$cohort-stats")).json())
        assert found["age-band"] == {"<30": 1, "30-40": 1, "40-60": 1, ">60": 1}
        assert found["tier"] == {"unknown": 4}  # nothing persisted yet


async def test_trends_count_the_results_that_changed_within_the_period(client: httpx.AsyncClient) -> None:
    rich, plain = (await create(client, patient(family="Rich")))["id"], (await create(client, patient()))["id"]
    await create(client, invoice(rich, 900))
    await create(client, visit(rich, 40))
    await post(client, "/fhir/Patient/$tier", persist=True)
    await post(client, "/fhir/Patient/$churn-risk", persist=True)
    await create(client, visit(plain, 100))  # plain: potential -> active
    await post(client, f"/fhir/Patient/{plain}/$tier", persist=True)
    response = await client.get("/fhir/$cohort-stats", params={"start": ago(1)})
    assert response.status_code == 200, response.text
    answer = response.json()
    found = tables(answer)
    assert found[("trend", "tier")]["A"] >= 1 and found[("trend", "tier")].get("C", 0) >= 1
    assert found[("trend", "lifecycle")][("potential", "active")] == 1
    assert found[("trend", "lifecycle")][("none", "new")] >= 1  # first results have no previous stage
    assert sum(found[("trend", "churn")].values()) == value(answer, "total")
    before = tables((await client.get("/fhir/$cohort-stats", params={"start": ago(400), "end": ago(300)})).json())
    assert before[("trend", "tier")] == {}
    future = await client.get("/fhir/$cohort-stats", params={"start": ago(-1)})
    assert future.status_code == 400 and "after" in future.text
    bad = await client.get("/fhir/$cohort-stats", params={"start": "yesterday"})
    assert bad.status_code == 400 and "start" in bad.text
    assert (await client.get("/fhir/$cohort-stats", params={"cross": "tier|tier"})).status_code == 400
    assert (await client.get("/fhir/$cohort-stats", params={"bogus": "1"})).status_code == 400


async def test_referral_chains(client: httpx.AsyncClient) -> None:
    def referred(by: str) -> dict[str, Any]:
        return patient(extension=[{"url": REFERRED_BY, "valueReference": {"reference": f"Patient/{by}"}}])
    root = (await create(client, patient(family="Root")))["id"]
    child = (await create(client, referred(root)))["id"]
    grandchild = (await create(client, referred(child)))["id"]
    sibling = (await create(client, referred(root)))["id"]
    answer = (await client.get("/fhir/$cohort-stats")).json()
    assert value(answer, "referral-count") == 3
    pairs = {(p["part"][0]["valueReference"]["reference"], p["part"][1]["valueReference"]["reference"])
             for p in answer["parameter"] if p["name"] == "referral"}
    assert pairs == {(f"Patient/{root}", f"Patient/{child}"), (f"Patient/{child}", f"Patient/{grandchild}"),
                     (f"Patient/{root}", f"Patient/{sibling}")}
    chains = sorted([q["valueReference"]["reference"].split("/")[1] for q in p["part"]]
                    for p in answer["parameter"] if p["name"] == "chain")
    assert chains == sorted([[root, child, grandchild], [root, sibling]])


async def test_counts_only_the_patients_the_caller_may_see(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        await populate(world.client, world.admin)
        everyone = (await world.client.get("/fhir/$cohort-stats", headers=world.admin)).json()
        assert value(everyone, "total") == 7  # the world's alice and bob, and the five
        token = await world.backend_token("system/Patient.rs?gender=female system/Observation.rs "
                                          "system/RiskAssessment.rs")
        women = await world.client.get("/fhir/$cohort-stats", headers=world.bearer(token))
        assert women.status_code == 200, women.text
        found = tables(women.json())
        assert value(women.json(), "total") == 2
        assert found["tier"] == {"A": 2} and found["sex"] == {"female": 2}
        nothing = await world.backend_token("system/Observation.rs")
        refused = await world.client.get("/fhir/$cohort-stats", headers=world.bearer(nothing))
        assert refused.status_code == 403, refused.text


async def test_the_answer_uses_only_what_the_definition_declares(client: httpx.AsyncClient) -> None:
    await populate(client)
    definition = (await client.get("/fhir/OperationDefinition/cohort-stats")).json()
    assert definition["url"] == "http://careloop.health/fhir/OperationDefinition/cohort-stats"
    assert (definition["system"], definition["type"], definition["instance"]) == (True, False, False)
    outputs = [p for p in definition["parameter"] if p["use"] == "out"]
    answer = (await client.get("/fhir/$cohort-stats", params={"start": ago(2)})).json()
    assert _undeclared(answer["parameter"], _declared(outputs)) == []
    required = {p["name"] for p in outputs if p["min"] >= 1}
    assert required <= {p["name"] for p in answer["parameter"]}
    inputs = {p["name"] for p in definition["parameter"] if p["use"] == "in"}
    assert inputs == {"start", "end", "cross"}
