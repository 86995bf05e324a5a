"""Service-level escalation (DOMAIN.md section 4): overdue open Tasks are escalated on a clock the test controls.

First and second level along the supervisor chain, Provenance and AuditEvent of each, the maximum, a second
worker and a restart in between. https://hl7.org/fhir/R4B/task.html
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from resources.ids import now_ms
from resources.search.dates import format_instant
from server.app import create_app
from server.settings import Settings
from subscriptions.escalation import ESCALATION, LEVEL, EscalationConfig, EscalationWorker, raised
from tests.conftest import create
from tests.factories import patient

pytestmark = pytest.mark.anyio
MIN = 60_000
SUPERVISOR = {"coding": [{"system": ESCALATION, "code": "supervisor"}]}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self) -> int:
        return self.at


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The worker's own loop runs once at start and then waits an hour: the test drives the rounds."""
    return settings.model_copy(update={"escalation_interval_seconds": 3600.0})


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(settings)
    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver") as c:
        yield application, c


def worker(app: FastAPI) -> EscalationWorker:
    found: EscalationWorker = app.state.escalation
    return found


async def departments(client: httpx.AsyncClient) -> dict[str, str]:
    """A clinic with a ward: a nurse and the ward's head, and the clinic's director."""
    clinic = await create(client, {"resourceType": "Organization", "name": "Clinic"})
    ward = await create(client, {"resourceType": "Organization", "name": "Ward",
                                 "partOf": {"reference": f"Organization/{clinic['id']}"}})
    refs = {"clinic": f"Organization/{clinic['id']}", "ward": f"Organization/{ward['id']}"}
    for name, org, code in (("nurse", "ward", None), ("head", "ward", SUPERVISOR), ("director", "clinic", SUPERVISOR)):
        role: dict[str, Any] = {"resourceType": "PractitionerRole", "active": True,
                                "organization": {"reference": refs[org]}}
        if code:
            role["code"] = [code]
        refs[name] = f"PractitionerRole/{(await create(client, role))['id']}"
    return refs


def task(owner: str | None, deadline: int, patient_id: str, priority: str = "routine") -> dict[str, Any]:
    found: dict[str, Any] = {"resourceType": "Task", "status": "requested", "intent": "order", "priority": priority,
                             "for": {"reference": f"Patient/{patient_id}"},
                             "authoredOn": format_instant(deadline - 60 * MIN),
                             "restriction": {"period": {"start": format_instant(deadline - 60 * MIN),
                                                        "end": format_instant(deadline)}}}
    if owner:
        found["owner"] = {"reference": owner}
    return found


async def read(client: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    response = await client.get(f"/fhir/{reference}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def provenances(client: httpx.AsyncClient, reference: str) -> list[dict[str, Any]]:
    page = (await client.get("/fhir/Provenance", params={"target": reference, "_count": "50"})).json()
    return [e["resource"] for e in page.get("entry", [])]


def level(found: dict[str, Any]) -> int:
    return next((e["valueInteger"] for e in found.get("extension", []) if e["url"] == LEVEL), 0)


def deadline_ms(found: dict[str, Any]) -> str:
    return str(found["restriction"]["period"]["end"])


@pytest.mark.parametrize(("before", "after"), [("routine", "urgent"), ("urgent", "asap"), ("asap", "stat"),
                                               ("stat", "stat"), (None, "urgent")])
def test_priority_is_raised_one_step(before: str | None, after: str) -> None:
    assert raised(before) == after


async def test_two_levels_up_the_supervisor_chain_then_exhausted(settings: Settings) -> None:
    async with running(settings) as (app, client):
        await worker(app).settled()
        refs = await departments(client)
        someone = await create(client, patient())
        start = now_ms() + 24 * 60 * MIN  # later than anything real: only the test clock makes it overdue
        made = await create(client, task(refs["nurse"], start + 60 * MIN, someone["id"]))
        ref = f"Task/{made['id']}"
        clock = worker(app).clock = Clock(start + 30 * MIN)
        assert await worker(app).run_once() == 0  # not yet due
        assert (await read(client, ref))["meta"]["versionId"] == "1"

        clock.at = start + 61 * MIN
        assert await worker(app).run_once() == 1
        first = await read(client, ref)
        assert first["meta"]["versionId"] == "2"
        assert first["businessStatus"]["coding"] == [{"system": ESCALATION, "code": "escalated"}]
        assert (first["priority"], first["owner"], level(first)) == ("urgent", {"reference": refs["head"]}, 1)
        assert deadline_ms(first) == format_instant(clock.at + 120 * MIN)  # urgent: 2 hours (DOMAIN.md §4)
        [made_by] = await provenances(client, ref)
        assert made_by["target"] == [{"reference": f"{ref}/_history/2"}]
        assert made_by["reason"][0]["coding"][0]["code"] == "escalated"
        assert made_by["entity"] == [{"role": "revision", "what": {"reference": f"{ref}/_history/1"}}]
        assert await worker(app).run_once() == 0  # the same moment again: nothing escalated twice

        clock.at += 121 * MIN
        assert await worker(app).run_once() == 1
        second = await read(client, ref)
        assert (second["priority"], second["owner"], level(second)) == ("asap", {"reference": refs["director"]}, 2)
        assert len(await provenances(client, ref)) == 2

        clock.at += 121 * MIN  # past the last allowed escalation (CARELOOP_ESCALATION_MAX_LEVEL=2)
        assert await worker(app).run_once() == 1
        last = await read(client, ref)
        assert last["businessStatus"]["coding"][0]["code"] == "exhausted"
        assert (last["priority"], last["owner"], level(last)) == ("asap", {"reference": refs["director"]}, 2)
        assert len(await provenances(client, ref)) == 2
        assert await worker(app).run_once() == 0  # left alone from now on


async def test_escalation_is_audited_with_the_system_as_agent(settings: Settings) -> None:
    async with running(settings) as (app, client):
        await worker(app).settled()
        someone = await create(client, patient())
        start = now_ms() + 24 * 60 * MIN
        made = await create(client, task(None, start, someone["id"]))
        worker(app).clock = Clock(start + MIN)
        assert await worker(app).run_once() == 1
        found = await read(client, f"Task/{made['id']}")
        assert "owner" not in found and found["priority"] == "urgent"  # no owner: no one to hand it to
        page = (await client.get("/fhir/AuditEvent", params={
            "subtype": "http://careloop.health/fhir/CodeSystem/audit-subtype|task-escalated"})).json()
        [event] = [e["resource"] for e in page["entry"]]
        assert event["action"] == "U" and event["outcome"] == "0"
        assert [a["who"]["display"] for a in event["agent"]] == ["CareLoop escalation worker"]
        assert {e["what"]["reference"] for e in event["entity"]} == {f"Task/{made['id']}/_history/2",
                                                                     f"Patient/{someone['id']}"}


async def test_only_open_tasks_are_escalated(settings: Settings) -> None:
    async with running(settings) as (app, client):
        await worker(app).settled()
        someone = await create(client, patient())
        start = now_ms() + 24 * 60 * MIN
        ids = {}
        for status in ("requested", "received", "accepted", "in-progress", "on-hold", "completed", "cancelled",
                       "failed", "rejected", "draft"):
            made = await create(client, {**task(None, start, someone["id"]), "status": status})
            ids[status] = made["id"]
        worker(app).clock = Clock(start + MIN)
        assert await worker(app).run_once() == 5
        escalated = {s for s, i in ids.items() if level(await read(client, f"Task/{i}")) == 1}
        assert escalated == {"requested", "received", "accepted", "in-progress", "on-hold"}


async def test_a_department_without_head_hands_up_to_its_parent(settings: Settings) -> None:
    async with running(settings) as (app, client):
        await worker(app).settled()
        clinic = await create(client, {"resourceType": "Organization", "name": "Clinic"})
        desk = await create(client, {"resourceType": "Organization", "name": "Front desk",
                                     "partOf": {"reference": f"Organization/{clinic['id']}"}})
        someone = await create(client, patient())
        start = now_ms() + 24 * 60 * MIN
        made = await create(client, task(f"Organization/{desk['id']}", start, someone["id"], "stat"))
        worker(app).clock = Clock(start + MIN)
        assert await worker(app).run_once() == 1
        found = await read(client, f"Task/{made['id']}")
        assert found["owner"] == {"reference": f"Organization/{clinic['id']}"}  # no head anywhere: the parent
        assert found["priority"] == "stat"
        assert deadline_ms(found) == format_instant(start + MIN + 30 * MIN)


async def test_two_workers_escalate_a_task_once(settings: Settings) -> None:
    async with running(settings) as (app, client):
        await worker(app).settled()
        refs = await departments(client)
        someone = await create(client, patient())
        start = now_ms() + 24 * 60 * MIN
        made = [await create(client, task(refs["nurse"], start + n, someone["id"])) for n in range(5)]
        at = Clock(start + MIN)
        pair = [EscalationWorker(app.state.services.repository, EscalationConfig(page=2), at) for _ in range(2)]
        counts = await asyncio.gather(*(w.run_once() for w in pair))
        assert sum(counts) == 5
        for one in made:
            found = await read(client, f"Task/{one['id']}")
            assert (found["meta"]["versionId"], level(found)) == ("2", 1)
            assert len(await provenances(client, f"Task/{one['id']}")) == 1


async def test_restart_misses_nothing_and_repeats_nothing(settings: Settings) -> None:
    # real time here: the worker's first round at start is what finds the Tasks that fell due while it was down
    quiet = settings.model_copy(update={"escalation": False})
    async with running(quiet) as (_, client):
        someone = await create(client, patient())
        overdue = await create(client, task(None, now_ms() - 10 * MIN, someone["id"]))
        later = await create(client, task(None, now_ms() + 60 * MIN, someone["id"]))
    async with running(settings) as (app, client):
        await worker(app).settled()  # the round at start
        first = await read(client, f"Task/{overdue['id']}")
        assert (first["meta"]["versionId"], level(first)) == ("2", 1)
        assert (await read(client, f"Task/{later['id']}"))["meta"]["versionId"] == "1"
    async with running(settings) as (app, client):
        await worker(app).settled()
        worker(app).clock = Clock(now_ms() + 90 * MIN)  # `later` is due, `overdue`'s new deadline (2 h) is not
        assert await worker(app).run_once() == 1
        again = await read(client, f"Task/{overdue['id']}")
        assert (again["meta"]["versionId"], level(again)) == ("2", 1)
        assert len(await provenances(client, f"Task/{overdue['id']}")) == 1
        assert level(await read(client, f"Task/{later['id']}")) == 1



async def test_escalation_keeps_the_tasks_tags_profiles_and_security_labels(settings: Settings) -> None:
    # found by the crash trials (issue 34): the escalated version had lost meta, so a Task tagged for a
    # worklist (or labelled for segmentation) left its worklist at the first escalation
    async with running(settings) as (app, client):
        await worker(app).settled()
        someone = await create(client, patient())
        start = now_ms() + 24 * 60 * MIN
        meta = {"tag": [{"system": "http://example.org/worklist", "code": "ward-3"}],
                "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}
        made = await create(client, {**task(None, start, someone["id"]), "meta": meta})
        worker(app).clock = Clock(start + MIN)
        assert await worker(app).run_once() == 1
        found = await read(client, f"Task/{made['id']}")
        assert level(found) == 1 and found["meta"]["versionId"] == "2"
        assert found["meta"]["tag"] == meta["tag"] and found["meta"]["security"] == meta["security"]
        tagged = (await client.get("/fhir/Task", params={"_tag": "http://example.org/worklist|ward-3"})).json()
        assert [e["resource"]["id"] for e in tagged["entry"]] == [made["id"]]
