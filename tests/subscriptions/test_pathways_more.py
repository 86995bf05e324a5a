"""The pathways issue 30 adds: first visits, rehab after surgery, appointment reminders, the churn recall path and
the returning patient's follow-up (DOMAIN.md §2-3). https://hl7.org/fhir/R4B/plandefinition.html
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import create
from tests.factories import patient
from tests.subscriptions.conftest import engine, just_now, pain_score
from tests.subscriptions.test_pathways_followup import encounter, hours_due, instant, parse, procedure, put, tasks_for

pytestmark = pytest.mark.anyio
SURVEY = "http://careloop.health/fhir/Questionnaire/satisfaction"
CARELOOP = "http://careloop.health/fhir/CodeSystem/careloop"
RISK = "http://terminology.hl7.org/CodeSystem/risk-probability"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def code_of(task: dict[str, Any]) -> str:
    return str(task["code"]["coding"][0]["code"])


async def patient_tasks(client: httpx.AsyncClient, patient_id: str) -> list[dict[str, Any]]:
    page = (await client.get("/fhir/Task", params={"patient": f"Patient/{patient_id}", "_count": "200"})).json()
    return [e["resource"] for e in page.get("entry", [])]


def churn(patient_id: str, risk: str) -> dict[str, Any]:
    return {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": f"Patient/{patient_id}"},
            "occurrenceDateTime": just_now(), "prediction": [{
                "outcome": {"coding": [{"system": CARELOOP, "code": "churn"}]},
                "qualitativeRisk": {"coding": [{"system": RISK, "code": risk}]}}]}


def marketing_opt_in(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"}, "dateTime": "2026-01-01T00:00:00Z",
            "provision": {"type": "permit", "purpose": [{"system": ACT_REASON, "code": "HMARKT"}]}}


async def test_first_ever_visit_gets_a_satisfaction_follow_up(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    first = await create(client, encounter(someone["id"]))
    await engine(app).settled()
    second = await create(client, encounter(someone["id"]))
    await engine(app).settled()
    [follow_up] = [t for t in await tasks_for(client, f"Encounter/{first['id']}")
                   if code_of(t) == "satisfaction-follow-up"]
    assert hours_due(follow_up) == pytest.approx(168.0, abs=0.01)
    assert follow_up["input"] == [{"type": {"text": "questionnaire"}, "valueCanonical": SURVEY}]
    assert "satisfaction-follow-up" not in [code_of(t) for t in await tasks_for(client, f"Encounter/{second['id']}")]


async def test_a_low_pain_score_after_surgery_gets_next_day_rehab(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    before = await create(client, pain_score(someone["id"], 2))  # no surgery: nothing
    await engine(app).settled()
    await create(client, procedure(someone["id"], code="80146002"))
    await engine(app).settled()
    low = await create(client, pain_score(someone["id"], 3))
    high = await create(client, pain_score(someone["id"], 6))
    await engine(app).settled()
    assert await tasks_for(client, f"Observation/{before['id']}") == []
    [rehab] = await tasks_for(client, f"Observation/{low['id']}")
    assert code_of(rehab) == "rehab-guidance" and hours_due(rehab) == pytest.approx(24.0, abs=0.01)
    assert [code_of(t) for t in await tasks_for(client, f"Observation/{high['id']}")] == ["urgent-callback"]


async def test_appointment_reminder_follows_the_appointment(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    booked = await create(client, {"resourceType": "Appointment", "status": "booked", "start": instant(start),
                                   "end": instant(start + timedelta(minutes=30)), "participant": [
                                       {"actor": {"reference": f"Patient/{someone['id']}"}, "status": "accepted"}]})
    await engine(app).settled()
    [reminder] = await tasks_for(client, f"Appointment/{booked['id']}")
    assert code_of(reminder) == "appointment-reminder"
    assert parse(reminder["restriction"]["period"]["end"]) == start - timedelta(days=1)
    assert reminder["for"] == {"reference": f"Patient/{someone['id']}"}
    moved = start + timedelta(days=2)
    booked = await put(client, {**booked, "start": instant(moved), "end": instant(moved + timedelta(minutes=30))})
    await engine(app).settled()
    [reminder] = await tasks_for(client, f"Appointment/{booked['id']}")  # the same Task, moved
    assert parse(reminder["restriction"]["period"]["end"]) == moved - timedelta(days=1)
    await put(client, {**booked, "status": "cancelled"})
    await engine(app).settled()
    [reminder] = await tasks_for(client, f"Appointment/{booked['id']}")
    assert reminder["status"] == "cancelled"
    # only a booked appointment still ahead is reminded of: a proposed one, one cancelled from the start, one
    # without a start or one already past gets none
    past = start - timedelta(days=10)
    for status, when in (("proposed", start), ("cancelled", start), ("booked", None), ("booked", past)):
        other = await create(client, {"resourceType": "Appointment", "status": status, "participant": [
            {"actor": {"reference": f"Patient/{someone['id']}"}, "status": "needs-action"}],
            **({"start": instant(when), "end": instant(when + timedelta(minutes=30))} if when else {})})
        await engine(app).settled()
        assert await tasks_for(client, f"Appointment/{other['id']}") == []


async def test_high_churn_risk_starts_the_recall_path_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient(generalPractitioner=[{"reference": "Practitioner/own-gp"}]))
    opted_in = await create(client, patient())
    await create(client, marketing_opt_in(opted_in["id"]))
    await create(client, churn(someone["id"], "low"))
    high = await create(client, churn(someone["id"], "high"))
    await create(client, churn(opted_in["id"], "high"))
    await engine(app).settled()
    await create(client, churn(someone["id"], "high"))  # still high while the path runs: no second path
    await engine(app).settled()
    made = await patient_tasks(client, someone["id"])
    recall = {code_of(t): t for t in made}
    assert len(made) == len(recall)  # one path: no step twice
    # no marketing opt-in: the discount step is not created, the others are
    assert sorted(recall) == ["recall-doctor-call", "recall-free-recheck"]
    assert all(t["focus"] == {"reference": f"RiskAssessment/{high['id']}"} for t in recall.values())
    assert recall["recall-doctor-call"]["owner"] == {"reference": "Practitioner/own-gp"}
    offset = parse(recall["recall-doctor-call"]["restriction"]["period"]["start"]) - parse(
        recall["recall-free-recheck"]["restriction"]["period"]["start"])
    assert offset == timedelta(days=14)
    with_discount = {code_of(t): t for t in await patient_tasks(client, opted_in["id"])}
    assert sorted(with_discount) == ["recall-discount", "recall-doctor-call", "recall-free-recheck"]
    offset = parse(with_discount["recall-discount"]["restriction"]["period"]["start"]) - parse(
        with_discount["recall-free-recheck"]["restriction"]["period"]["start"])
    assert offset == timedelta(days=7)
    # the patient returns: the outstanding steps stop and a follow-up within a month starts
    visit = await create(client, encounter(someone["id"]))
    await engine(app).settled()
    after = {code_of(t): t for t in await patient_tasks(client, someone["id"])}
    assert after["recall-free-recheck"]["status"] == after["recall-doctor-call"]["status"] == "cancelled"
    assert after["return-follow-up"]["focus"] == {"reference": f"Encounter/{visit['id']}"}
    assert hours_due(after["return-follow-up"]) == pytest.approx(720.0, abs=0.01)
    # high again after the return: a new recall path
    again = await create(client, churn(someone["id"], "high"))
    await engine(app).settled()
    assert len(await tasks_for(client, f"RiskAssessment/{again['id']}")) == 2
