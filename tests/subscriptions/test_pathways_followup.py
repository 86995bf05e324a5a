"""Pathways as a clinic uses them (issue 30): owners, Provenance, no duplicates, surgery and complaints as data,
imports versus late entries. https://hl7.org/fhir/R4B/task.html, https://hl7.org/fhir/R4B/provenance.html
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import FHIR_JSON, body, create
from tests.factories import observation, patient
from tests.subscriptions.conftest import engine, just_now, pain_score

pytestmark = pytest.mark.anyio
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SCT = "http://snomed.info/sct"
FT = "http://careloop.health/fhir/CodeSystem/follow-up-task"
ROLE = "http://careloop.health/fhir/CodeSystem/care-role"
IMPORT = {"system": "http://careloop.health/fhir/CodeSystem/careloop", "code": "import"}


def instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ago(**delta: float) -> str:
    return instant(datetime.now(UTC) - timedelta(**delta))


def encounter(patient_id: str, status: str = "finished", klass: str = "AMB", end: str | None = None,
              **extra: Any) -> dict[str, Any]:
    found = {"resourceType": "Encounter", "status": status, "class": {"system": ACT, "code": klass},
             "subject": {"reference": f"Patient/{patient_id}"}, **extra}
    if end is not None:
        found["period"] = {"start": end, "end": end}
    return found


def procedure(patient_id: str, code: str | None = None, category: str | None = None,
              when: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"resourceType": "Procedure", "status": "completed",
                             "subject": {"reference": f"Patient/{patient_id}"},
                             "performedDateTime": when or just_now()}
    if code is not None:
        found["code"] = {"coding": [{"system": SCT, "code": code}]}
    if category is not None:
        found["category"] = {"coding": [{"system": SCT, "code": category}]}
    return found


def complaint(patient_id: str, *codes: str) -> dict[str, Any]:
    return {"resourceType": "Communication", "status": "completed", "sent": just_now(),
            "category": [{"coding": [{"system": FT, "code": c}]} for c in codes],
            "subject": {"reference": f"Patient/{patient_id}"}, "payload": [{"contentString": "unhappy"}]}


async def tasks_for(client: httpx.AsyncClient, focus: str) -> list[dict[str, Any]]:
    page = (await client.get("/fhir/Task", params={"focus": focus, "_count": "100"})).json()
    return [e["resource"] for e in page.get("entry", [])]


def codes(tasks: list[dict[str, Any]]) -> list[str]:
    return sorted(t["code"]["coding"][0]["code"] for t in tasks)


def hours_due(task: dict[str, Any]) -> float:
    period = task["restriction"]["period"]
    return (parse(period["end"]) - parse(period["start"])).total_seconds() / 3600


def hours_from_now(task: dict[str, Any]) -> float:
    return (parse(task["restriction"]["period"]["end"]) - datetime.now(UTC)).total_seconds() / 3600


async def put(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", content=body(resource),
                                headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    stored: dict[str, Any] = response.json()
    return stored


async def test_tasks_have_owner_performer_type_and_a_provenance(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    high = await create(client, pain_score(someone["id"], 7))
    await engine(app).settled()
    [task] = await tasks_for(client, f"Observation/{high['id']}")
    assert task["owner"] == {"reference": "CareTeam/on-duty-doctors"}  # nobody on the rota: the default team
    assert task["performerType"][0]["coding"][0] == {"system": ROLE, "code": "on-duty-doctor",
                                                     "display": "On-duty doctor"}
    listed = (await client.get("/fhir/Task", params={"owner": "CareTeam/on-duty-doctors"})).json()
    assert task["id"] in [e["resource"]["id"] for e in listed["entry"]]
    page = (await client.get("/fhir/Provenance", params={"target": f"Task/{task['id']}"})).json()
    [provenance] = [e["resource"] for e in page["entry"]]
    assert provenance["entity"][0]["what"] == {"reference": f"Observation/{high['id']}/_history/1"}
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "careloop-pathway-engine"
    # an on-duty rota as data: the doctor whose duty covers now gets the next call-back
    rota = (await client.get("/fhir/CareTeam/on-duty-doctors")).json()
    rota["participant"] = [
        {"member": {"reference": "PractitionerRole/night"}, "period": {"start": ago(days=2), "end": ago(days=1)}},
        {"member": {"reference": "PractitionerRole/today"}, "period": {"start": ago(hours=2),
                                                                       "end": instant(datetime.now(UTC) +
                                                                                      timedelta(hours=6))}}]
    await put(client, rota)
    again = await create(client, pain_score(someone["id"], 8))
    await engine(app).settled()
    [task] = await tasks_for(client, f"Observation/{again['id']}")
    assert task["owner"] == {"reference": "PractitionerRole/today"}


async def test_tier_a_patients_get_their_own_health_manager(app: FastAPI, client: httpx.AsyncClient) -> None:
    tier = "http://careloop.health/fhir/CodeSystem/careloop"

    async def with_tier(code: str, **extra: Any) -> dict[str, Any]:
        found = await create(client, patient(**extra))
        await create(client, {"resourceType": "Observation", "status": "final",
                              "code": {"coding": [{"system": tier, "code": "tier"}]},
                              "subject": {"reference": f"Patient/{found['id']}"}, "effectiveDateTime": just_now(),
                              "valueCodeableConcept": {"coding": [{"system": "http://careloop.health/fhir/CodeSystem/"
                                                                   "tier", "code": code}]}})
        return found

    managed = await with_tier("A", generalPractitioner=[{"reference": "Practitioner/gp-1"}])
    await create(client, {"resourceType": "CareTeam", "status": "active",
                          "subject": {"reference": f"Patient/{managed['id']}"}, "participant": [
                              {"role": [{"coding": [{"system": ROLE, "code": "doctor"}]}],
                               "member": {"reference": "Practitioner/doc-9"}},
                              {"role": [{"coding": [{"system": ROLE, "code": "health-manager"}]}],
                               "member": {"reference": "PractitionerRole/hm-7"}}]})
    gp_only = await with_tier("A", generalPractitioner=[{"reference": "Practitioner/gp-2"}])
    tier_b = await with_tier("B", generalPractitioner=[{"reference": "Practitioner/gp-3"}])
    owners = {}
    for who in (managed, gp_only, tier_b):
        visit = await create(client, encounter(who["id"]))
        await engine(app).settled()
        owners[who["id"]] = {t["owner"]["reference"] for t in await tasks_for(client, f"Encounter/{visit['id']}")
                             if t["code"]["coding"][0]["code"] == "results-notice"}
    assert owners == {managed["id"]: {"PractitionerRole/hm-7"}, gp_only["id"]: {"Practitioner/gp-2"},
                      tier_b["id"]: {"CareTeam/follow-up-team"}}


async def test_one_task_per_clinically_new_event(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    high = await create(client, pain_score(someone["id"], 7))
    await engine(app).settled()
    await put(client, high)  # the same reading sent again: an identical PUT
    await put(client, {**high, "note": [{"text": "re-sent by the device gateway"}]})
    glucose = await create(client, observation(f"Patient/{someone['id']}", value=20.0, when=just_now()))
    await engine(app).settled()
    await put(client, {**glucose, "valueQuantity": {**glucose["valueQuantity"], "value": 20.0},
                       "note": [{"text": "amended: same value"}]})
    await engine(app).settled()
    assert len(await tasks_for(client, f"Observation/{high['id']}")) == 1
    assert len(await tasks_for(client, f"Observation/{glucose['id']}")) == 1
    # a retry (the engine reading the whole feed again, as after a crash before its mark was saved) adds nothing
    engine(app).cursor = 0
    await engine(app).settled()
    assert len(await tasks_for(client, f"Observation/{high['id']}")) == 1
    assert len(await tasks_for(client, f"Observation/{glucose['id']}")) == 1
    # what the criteria read changed (the pain is now 9): a clinically new event, a new call-back
    await put(client, {**high, "valueQuantity": {**high["valueQuantity"], "value": 9}})
    await engine(app).settled()
    assert len(await tasks_for(client, f"Observation/{high['id']}")) == 2


async def test_surgery_is_recognised_from_a_value_set_the_clinic_edits(app: FastAPI,
                                                                       client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    blood_draw = await create(client, procedure(someone["id"], code="82078001"))
    appendectomy = await create(client, procedure(someone["id"], code="80146002"))
    by_category = await create(client, procedure(someone["id"], code="1234567", category="387713003"))
    await engine(app).settled()
    assert await tasks_for(client, f"Procedure/{blood_draw['id']}") == []
    assert len(await tasks_for(client, f"Procedure/{appendectomy['id']}")) == 5
    assert sorted(hours_due(t) for t in await tasks_for(client, f"Procedure/{by_category['id']}")) == pytest.approx([
        6.0, 48.0, 168.0, 720.0, 2160.0], abs=0.01)
    value_set = (await client.get("/fhir/ValueSet/surgical-procedures")).json()
    value_set["compose"]["include"][0]["concept"].append({"code": "82078001"})
    await put(client, value_set)
    another = await create(client, procedure(someone["id"], code="82078001"))
    await engine(app).settled()
    assert len(await tasks_for(client, f"Procedure/{another['id']}")) == 5


async def test_a_medical_complaint_goes_to_medical_affairs(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    medical = await create(client, complaint(someone["id"], "complaint", "medical-complaint"))
    other = await create(client, complaint(someone["id"], "complaint"))
    await engine(app).settled()
    [calming] = await tasks_for(client, f"Communication/{medical['id']}")
    assert (calming["code"]["coding"][0]["code"], calming["owner"]) == (
        "complaint-medical-handover", {"reference": "Organization/medical-affairs"})
    assert hours_due(calming) == pytest.approx(24.0, abs=0.01)
    [resolve] = await tasks_for(client, f"Communication/{other['id']}")
    assert (resolve["code"]["coding"][0]["code"], resolve["owner"]) == (
        "complaint-resolution", {"reference": "Organization/customer-service"})
    assert hours_due(resolve) * 60 == pytest.approx(30.0, abs=0.1)


async def test_imports_start_nothing_and_late_entries_start_their_pathway(app: FastAPI,
                                                                          client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    late = await create(client, encounter(someone["id"], end=ago(days=5)))
    imported = await create(client, {**encounter(someone["id"], end=ago(days=1)), "meta": {"tag": [IMPORT]}})
    late_surgery = await create(client, procedure(someone["id"], code="80146002", when=ago(days=5)))
    await engine(app).settled()
    assert await tasks_for(client, f"Encounter/{imported['id']}") == []
    notices = {t["code"]["coding"][0]["code"]: t for t in await tasks_for(client, f"Encounter/{late['id']}")}
    # its 24-hour results notice is long past: due 24 h from when it was recorded, not already overdue
    assert hours_from_now(notices["results-notice"]) == pytest.approx(24.0, abs=0.1)
    # a step still ahead keeps its time from the event: the 90-day follow-up is 85 days away
    surgery = {round(hours_from_now(t) / 24) for t in await tasks_for(client, f"Procedure/{late_surgery['id']}")}
    assert 85 in surgery and 90 not in surgery
