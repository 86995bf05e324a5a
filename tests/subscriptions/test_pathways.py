"""Follow-up pathways: events on the shipped topics create Tasks with their service levels (DOMAIN.md §3-4).

https://hl7.org/fhir/R4B/plandefinition.html, https://hl7.org/fhir/R4B/task.html
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from server.settings import Settings
from subscriptions.pathways import PATHWAY_EVENT
from tests.conftest import FHIR_JSON, body, client_for, create
from tests.factories import observation, patient
from tests.subscriptions.conftest import engine, just_now, pain_score

pytestmark = pytest.mark.anyio
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def encounter(patient_id: str, status: str, klass: str = "AMB") -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": status, "class": {"system": ACT, "code": klass},
            "subject": {"reference": f"Patient/{patient_id}"}}


async def tasks_for(client: httpx.AsyncClient, focus: str) -> list[dict[str, Any]]:
    page = (await client.get("/fhir/Task", params={"focus": focus, "_count": "100"})).json()
    return [e["resource"] for e in page.get("entry", [])]


def hours_due(task: dict[str, Any]) -> float:
    period = task["restriction"]["period"]
    start, end = (datetime.fromisoformat(period[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return (end - start).total_seconds() / 3600


async def test_finished_visit_makes_three_follow_ups_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    visit = await create(client, encounter(someone["id"], "in-progress"))
    await engine(app).settled()
    assert await tasks_for(client, f"Encounter/{visit['id']}") == []
    finished = {**visit, "status": "finished"}
    await client.put(f"/fhir/Encounter/{visit['id']}", content=body(finished), headers=FHIR_JSON)
    await engine(app).settled()
    tasks = await tasks_for(client, f"Encounter/{visit['id']}")
    # the patient's first-ever visit: the satisfaction follow-up of first visits (7 days) joins the three
    assert sorted((t["code"]["coding"][0]["code"], hours_due(t)) for t in tasks) == [
        ("phone-follow-up", 72.0), ("results-notice", 24.0), ("satisfaction-follow-up", 168.0),
        ("satisfaction-survey", 72.0)]
    for task in tasks:
        assert task["status"] == "requested" and task["intent"] == "order" and task["priority"] == "routine"
        assert task["for"] == {"reference": f"Patient/{someone['id']}"}
        assert task["basedOn"] in ([{"reference": "PlanDefinition/visit-follow-up"}],
                                   [{"reference": "PlanDefinition/first-visit-follow-up"}])
        assert task["identifier"][0]["system"] == PATHWAY_EVENT
        assert task["instantiatesCanonical"].startswith(("http://careloop.health/fhir/ActivityDefinition/visit-",
                                                         "http://careloop.health/fhir/ActivityDefinition/first-visit-"))
    # still finished after another change: the topic fires on the transition only
    await client.put(f"/fhir/Encounter/{visit['id']}", content=body({**finished, "id": visit["id"],
                     "serviceType": {"text": "checkup"}}), headers=FHIR_JSON)
    await engine(app).settled()
    assert len(await tasks_for(client, f"Encounter/{visit['id']}")) == 4
    inpatient = await create(client, encounter(someone["id"], "finished", "IMP"))
    historical = await create(client, {**encounter(someone["id"], "finished"),
                                       "period": {"start": "2018-02-01T09:00:00Z", "end": "2018-02-01T10:00:00Z"}})
    await engine(app).settled()
    surgery = await tasks_for(client, f"Encounter/{inpatient['id']}")
    assert sorted(hours_due(t) for t in surgery) == [6.0, 48.0, 168.0, 720.0, 2160.0]
    assert await tasks_for(client, f"Encounter/{historical['id']}") == []


async def test_pain_score_and_critical_reading(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    high = await create(client, pain_score(someone["id"], 7))
    low = await create(client, pain_score(someone["id"], 2))
    critical = await create(client, observation(f"Patient/{someone['id']}", value=20.0, when=just_now()))
    normal = await create(client, observation(f"Patient/{someone['id']}", value=5.0, when=just_now()))
    # an old reading (a historical import) is stored and interpreted, but starts no follow-up
    old = await create(client, observation(f"Patient/{someone['id']}", value=20.0, when="2019-05-01T08:00:00Z"))
    old_pain = await create(client, pain_score(someone["id"], 9, when="2019-05-01T08:00:00Z"))
    await engine(app).settled()
    callback = await tasks_for(client, f"Observation/{high['id']}")
    assert [(t["priority"], t["code"]["coding"][0]["code"]) for t in callback] == [("stat", "urgent-callback")]
    assert hours_due(callback[0]) * 60 == pytest.approx(5.0)
    assert await tasks_for(client, f"Observation/{low['id']}") == []
    review = await tasks_for(client, f"Observation/{critical['id']}")
    assert [(t["priority"], hours_due(t)) for t in review] == [("stat", 0.5)]
    assert await tasks_for(client, f"Observation/{normal['id']}") == []
    assert old["interpretation"][0]["coding"][0]["code"] == "HH"
    assert await tasks_for(client, f"Observation/{old['id']}") == []
    assert await tasks_for(client, f"Observation/{old_pain['id']}") == []


async def test_pathways_are_data_a_clinic_can_change(app: FastAPI, client: httpx.AsyncClient) -> None:
    template = (await client.get("/fhir/ActivityDefinition/pain-urgent-callback")).json()
    template["timingDuration"] = {"value": 15, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}
    response = await client.put("/fhir/ActivityDefinition/pain-urgent-callback", content=body(template),
                                headers=FHIR_JSON)
    assert response.status_code == 200
    someone = await create(client, patient())
    await engine(app).settled()
    high = await create(client, pain_score(someone["id"], 9))
    await engine(app).settled()
    assert [hours_due(t) * 60 for t in await tasks_for(client, f"Observation/{high['id']}")] == [
        pytest.approx(15.0)]
    plan = (await client.get("/fhir/PlanDefinition/pain-callback")).json()
    await client.put("/fhir/PlanDefinition/pain-callback", content=body({**plan, "status": "retired"}),
                     headers=FHIR_JSON)
    again = await create(client, pain_score(someone["id"], 9))
    await engine(app).settled()
    assert await tasks_for(client, f"Observation/{again['id']}") == []


async def test_events_while_the_engine_was_off_are_handled_after_restart(settings: Settings,
                                                                         tmp_path: Path) -> None:
    async with client_for(settings) as client:  # the engine records its position in the feed
        someone = await create(client, patient())
    async with client_for(settings.model_copy(update={"subscriptions": False})) as client:
        visit = await create(client, encounter(someone["id"], "finished"))
    restarted = settings.model_copy()
    async with client_for(restarted) as client:
        for _ in range(100):
            if len(await tasks_for(client, f"Encounter/{visit['id']}")) == 4:
                break
            await asyncio.sleep(0.05)
        assert len(await tasks_for(client, f"Encounter/{visit['id']}")) == 4  # a first visit: 3 + its survey call
    async with client_for(restarted) as client:  # handled once: a further restart makes no second set
        assert len(await tasks_for(client, f"Encounter/{visit['id']}")) == 4
