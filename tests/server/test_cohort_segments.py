"""Issue 31: the three dimensions, the lifecycle stage and its transitions, and persisted results.

Hand-built patients on both sides of every threshold; persisted results searched for and superseded.
https://hl7.org/fhir/R4B/operations.html https://hl7.org/fhir/R4B/riskassessment.html
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON, body, create
from tests.factories import patient
from tests.server.test_cohort import CARELOOP, ago, invoice, results, scalar, visit

pytestmark = pytest.mark.anyio
SCT = "http://snomed.info/sct"
RESULT = "http://careloop.health/fhir/CodeSystem/careloop"
REFERRED_BY = "http://careloop.health/fhir/StructureDefinition/referred-by"


def coded(found: dict[str, Any], name: str) -> list[tuple[str, list[str]]]:
    """A judged part's codes with their evidence references."""
    out = []
    for parts in found.get(name, []):
        named: dict[str, list[Any]] = {}
        for p in parts:
            named.setdefault(p["name"], []).append(next(v for k, v in p.items() if k.startswith("value")))
        out.append((named["code"][0]["code"], [e["reference"] for e in named.get("evidence", [])]))
    return out


def condition(pid: str, code: str, status: str = "active") -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": status}]},
            "code": {"coding": [{"system": SCT, "code": code}]}}


def reading(pid: str, days: float, flag: str | None) -> dict[str, Any]:
    obs: dict[str, Any] = {"resourceType": "Observation", "status": "final", "effectiveDateTime": ago(days),
                           "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
                           "subject": {"reference": f"Patient/{pid}"},
                           "valueQuantity": {"value": 9.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                                             "code": "mmol/L"}}
    if flag is not None:
        obs["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                              "v3-ObservationInterpretation", "code": flag}]}]
    return obs


async def everyone(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/fhir/Patient/$tier")
    assert response.status_code == 200, response.text
    return results(response.json())


async def test_health_status_from_conditions_and_abnormal_recent_observations(client: httpx.AsyncClient) -> None:
    names = ["healthy", "abnormal", "old-abnormal", "normal", "prediabetes", "diabetes", "resolved", "cancer"]
    ids = {n: (await create(client, patient(family=n)))["id"] for n in names}
    flagged = await create(client, reading(ids["abnormal"], 10, "H"))
    await create(client, reading(ids["old-abnormal"], 100, "HH"))  # older than 90 days
    await create(client, reading(ids["normal"], 5, "N"))
    pre = await create(client, condition(ids["prediabetes"], "15777000"))
    diabetes = await create(client, condition(ids["diabetes"], "44054006"))
    await create(client, condition(ids["resolved"], "44054006", status="resolved"))
    cancer = await create(client, condition(ids["cancer"], "363346000"))
    await create(client, condition(ids["cancer"], "44054006"))  # chronic too: severe wins
    found = await everyone(client)
    status = {n: coded(found[ids[n]], "health-status")[0] for n in names}
    assert status == {
        "healthy": ("healthy", []), "abnormal": ("sub-healthy", [f"Observation/{flagged['id']}"]),
        "old-abnormal": ("healthy", []), "normal": ("healthy", []),
        "prediabetes": ("sub-healthy", [f"Condition/{pre['id']}"]),
        "diabetes": ("chronic", [f"Condition/{diabetes['id']}"]), "resolved": ("healthy", []),
        "cancer": ("severe", [f"Condition/{cancer['id']}"])}


async def test_service_types_from_encounters_programmes_and_medication(client: httpx.AsyncClient) -> None:
    pid, other = (await create(client, patient()))["id"], (await create(client, patient(family="Other")))["id"]
    outpatient = await create(client, visit(pid, 10))
    stay = await create(client, {**visit(pid, 20), "class": {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}})
    checkup = await create(client, {**visit(pid, 30), "type": [{"coding": [{"system": f"{CARELOOP}service-type",
                                                                             "code": "checkup"}]}]})
    plan = await create(client, {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                                 "category": [{"coding": [{"system": f"{CARELOOP}service-type",
                                                           "code": "postpartum"}]}],
                                 "subject": {"reference": f"Patient/{pid}"}})
    order = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
             "medicationCodeableConcept": {"text": "metformin"}, "subject": {"reference": f"Patient/{pid}"}}
    long_term = await create(client, order)
    await create(client, {**order, "subject": {"reference": f"Patient/{other}"}, "courseOfTherapyType": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                    "code": "acute"}]}})
    await create(client, visit(other, 400))  # before the window
    found = await everyone(client)
    assert sorted(coded(found[pid], "service-type")) == [
        ("checkup", [f"Encounter/{checkup['id']}"]), ("health-management", [f"CarePlan/{plan['id']}"]),
        ("inpatient", [f"Encounter/{stay['id']}"]), ("outpatient", [f"Encounter/{outpatient['id']}"]),
        ("pharmacy", [f"MedicationRequest/{long_term['id']}"])]
    assert coded(found[other], "service-type") == []


async def test_value_is_spend_and_frequency_without_the_programme(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, patient(family=f"V{n}")))["id"] for n in range(6)]
    for pid, amount in zip(ids[:5], (1000, 800, 500, 100, 99), strict=True):
        await create(client, invoice(pid, amount))
    await create(client, {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                          "category": [{"coding": [{"system": f"{CARELOOP}service-type", "code": "rehab"}]}],
                          "subject": {"reference": f"Patient/{ids[5]}"}})
    answer = (await client.get("/fhir/Patient/$tier")).json()
    assert scalar(answer, "spend-line-a") == 800 and scalar(answer, "spend-line-b") == 500
    found = results(answer)
    assert [coded(found[pid], "value")[0][0] for pid in ids] == ["high", "high", "mid", "low", "low", "low"]
    assert found[ids[5]]["tier"][0]["code"] == "A"  # the programme makes the tier, not the value


async def test_lifecycle_stages_on_both_sides_of_each_threshold(client: httpx.AsyncClient) -> None:
    names = ["potential", "new", "just-not-new", "active", "lost", "referrer", "sustained", "only-now"]
    ids = {n: (await create(client, patient(family=n)))["id"] for n in names}
    await create(client, visit(ids["new"], 89))
    await create(client, visit(ids["just-not-new"], 91))
    await create(client, visit(ids["active"], 179))
    await create(client, visit(ids["active"], 300))
    await create(client, visit(ids["lost"], 181))
    await create(client, visit(ids["referrer"], 150))
    await create(client, patient(family="Referred", extension=[
        {"url": REFERRED_BY, "valueReference": {"reference": f"Patient/{ids['referrer']}"}}]))
    for n in range(4):  # about quarterly in this window and in the one before: B for 12 months and more
        await create(client, visit(ids["sustained"], 10 + n * 80))
        await create(client, visit(ids["sustained"], 380 + n * 80))
        await create(client, visit(ids["only-now"], 10 + n * 80))
    await create(client, visit(ids["only-now"], 380))
    found = await everyone(client)
    stages = {n: coded(found[ids[n]], "lifecycle")[0][0] for n in names}
    assert stages == {"potential": "potential", "new": "new", "just-not-new": "active", "active": "active",
                      "lost": "lost", "referrer": "loyal", "sustained": "loyal", "only-now": "active"}
    assert found[ids["only-now"]]["tier"][0]["code"] == "B"


async def post(client: httpx.AsyncClient, url: str, **params: Any) -> dict[str, Any]:
    parts = [{"name": k, "valueBoolean" if isinstance(v, bool) else "valueString": v} for k, v in params.items()]
    response = await client.post(url, content=body({"resourceType": "Parameters", "parameter": parts}),
                                 headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def search(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


async def history(client: httpx.AsyncClient, resource: dict[str, Any]) -> list[dict[str, Any]]:
    return await search(client, f"/fhir/{resource['resourceType']}/{resource['id']}/_history")


async def test_persisted_tier_and_lifecycle_are_searchable_and_superseded(client: httpx.AsyncClient) -> None:
    rich, plain = (await create(client, patient(family="Rich")))["id"], (await create(client, patient()))["id"]
    await create(client, invoice(rich, 900))
    await create(client, visit(rich, 40))
    answer = await post(client, "/fhir/Patient/$tier", persist=True)
    assert scalar(answer, "written") >= 4
    tier_a = await search(client, f"/fhir/Observation?code={RESULT}|tier&value-concept=A")
    assert [o["subject"]["reference"] for o in tier_a] == [f"Patient/{rich}"]
    assert tier_a[0]["valueCodeableConcept"]["coding"] == [{"system": f"{CARELOOP}tier", "code": "A"}]
    assert tier_a[0]["identifier"] == [{"system": "http://careloop.health/fhir/sid/segment-result",
                                        "value": f"tier-{rich}"}]
    stage = await search(client, f"/fhir/Observation?code={RESULT}|lifecycle&subject=Patient/{rich}")
    assert [o["valueCodeableConcept"]["coding"][0]["code"] for o in stage] == ["new"]

    # nothing changed: nothing written, no new version
    assert scalar(await post(client, "/fhir/Patient/$tier", persist=True), "written") == 0
    assert len(await history(client, tier_a[0])) == 1

    # the plain patient now outspends: tiers change, the result is updated and the old one kept in history
    await create(client, invoice(plain, 5000))
    await create(client, visit(plain, 100))
    one = await post(client, f"/fhir/Patient/{plain}/$tier", persist=True)
    assert scalar(one, "written") == 2  # tier C -> A, lifecycle potential -> active
    mine = await search(client, f"/fhir/Observation?code={RESULT}|tier&subject=Patient/{plain}")
    assert len(mine) == 1 and mine[0]["valueCodeableConcept"]["coding"][0]["code"] == "A"
    versions = await history(client, mine[0])
    assert [v["valueCodeableConcept"]["coding"][0]["code"] for v in versions] == ["A", "C"]
    transition = await search(client, f"/fhir/Observation?code={RESULT}|lifecycle&subject=Patient/{plain}")
    assert transition[0]["valueCodeableConcept"]["coding"][0]["code"] == "active"
    assert transition[0]["component"][0]["code"]["coding"][0]["code"] == "previous-stage"
    assert transition[0]["component"][0]["valueCodeableConcept"]["coding"][0]["code"] == "potential"


async def test_persisting_needs_post_and_a_boolean(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    for op in ("tier", "churn-risk"):
        refused = await client.get(f"/fhir/Patient/{pid}/${op}?persist=true")
        assert refused.status_code == 405, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"
        bad = await client.get(f"/fhir/Patient/{pid}/${op}?persist=yes")
        assert bad.status_code == 400 and "persist" in bad.text
    assert await search(client, f"/fhir/Observation?subject=Patient/{pid}") == []


def churn_of(pid: str, days: float) -> list[dict[str, Any]]:
    """A patient `days` without service, with three unanswered touches and satisfaction 2: high risk."""
    return [visit(pid, days)] + [{"resourceType": "Communication", "status": "completed", "sent": ago(d),
                                  "recipient": [{"reference": f"Patient/{pid}"}]} for d in (60, 40, 20)]


async def test_a_high_churn_result_is_written_once(client: httpx.AsyncClient) -> None:
    pid, calm = (await create(client, patient(family="Drifting")))["id"], (await create(client, patient()))["id"]
    made = [await create(client, r) for r in churn_of(pid, 200)]
    await create(client, visit(calm, 5))
    answer = await post(client, "/fhir/Patient/$churn-risk", persist=True)
    assert scalar(answer, "written") >= 2
    high = await search(client, "/fhir/RiskAssessment?risk=high")
    assert [r["subject"]["reference"] for r in high] == [f"Patient/{pid}"]
    found = high[0]
    prediction = found["prediction"][0]
    assert prediction["outcome"]["coding"] == [{"system": RESULT, "code": "churn"}]
    assert prediction["qualitativeRisk"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/risk-probability", "code": "high"}]
    assert prediction["probabilityDecimal"] == pytest.approx(1 - 0.25 * 0.25)  # two high signals
    assert sorted(b["reference"] for b in found["basis"]) == sorted(
        f"{r['resourceType']}/{r['id']}" for r in made)
    low = await search(client, f"/fhir/RiskAssessment?risk=low&subject=Patient/{calm}")
    assert len(low) == 1 and low[0]["prediction"][0]["probabilityDecimal"] == 0

    # high again, nothing changed: no new version (the recall pathway is started once)
    for _ in range(2):
        assert scalar(await post(client, f"/fhir/Patient/{pid}/$churn-risk", persist=True), "written") == 0
    assert len(await history(client, found)) == 1

    # the patient comes back and answers: the risk falls, and the result is updated in place
    await create(client, visit(pid, 1))
    await create(client, {"resourceType": "Communication", "status": "completed", "sent": ago(0.5),
                          "sender": {"reference": f"Patient/{pid}"},
                          "inResponseTo": [{"reference": f"Communication/{made[-1]['id']}"}]})
    await post(client, "/fhir/Patient/$churn-risk", persist=True)
    assert await search(client, "/fhir/RiskAssessment?risk=high") == []
    versions = await history(client, found)
    assert [v["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] for v in versions] == ["low", "high"]
    assert "basis" not in versions[0]
