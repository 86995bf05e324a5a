"""Chronic programme cadences over a simulated quarter (issue 30, must-add 2; DOMAIN.md §3).

https://hl7.org/fhir/R4B/careplan.html
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from subscriptions.cadence import CADENCE, CARELOOP, CadenceWorker, running, window
from tests.conftest import FHIR_JSON, body, create
from tests.factories import patient
from tests.subscriptions.conftest import engine

FT = "http://careloop.health/fhir/CodeSystem/follow-up-task"
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
DAY = 86_400_000


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@pytest.mark.parametrize(("repeat", "at", "expected"), [
    ({"period": 1, "periodUnit": "wk"}, T0, (0, T0, T0 + timedelta(weeks=1))),
    ({"period": 1, "periodUnit": "wk"}, T0 + timedelta(days=13), (1, T0 + timedelta(weeks=1), T0 + timedelta(weeks=2))),
    ({"period": 1, "periodUnit": "d"}, T0 + timedelta(days=89, hours=23), (89, T0 + timedelta(days=89),
                                                                            T0 + timedelta(days=90))),
    ({"period": 1, "periodUnit": "mo"}, datetime(2026, 2, 1, 7, 59, tzinfo=UTC),
     (0, T0, datetime(2026, 2, 1, 8, tzinfo=UTC))),
    ({"period": 1, "periodUnit": "mo"}, datetime(2026, 3, 15, tzinfo=UTC),
     (2, datetime(2026, 3, 1, 8, tzinfo=UTC), datetime(2026, 4, 1, 8, tzinfo=UTC))),
    ({"period": 3, "periodUnit": "mo"}, datetime(2026, 4, 1, 8, tzinfo=UTC),
     (1, datetime(2026, 4, 1, 8, tzinfo=UTC), datetime(2026, 7, 1, 8, tzinfo=UTC))),
    ({"period": 1, "periodUnit": "a"}, datetime(2026, 12, 31, tzinfo=UTC),
     (0, T0, datetime(2027, 1, 1, 8, tzinfo=UTC))),
    ({"period": 1, "periodUnit": "wk"}, T0 - timedelta(days=1), None),  # not started
    ({"period": 1, "periodUnit": "h"}, T0, None),  # not a unit programmes use
    ({}, T0, None),
])
def test_window(repeat: dict[str, Any], at: datetime, expected: tuple[int, datetime, datetime] | None) -> None:
    found = window(ms(T0), repeat, ms(at))
    assert found == (None if expected is None else (expected[0], ms(expected[1]), ms(expected[2])))


def test_month_windows_keep_the_day_or_take_the_months_last() -> None:
    start = datetime(2026, 1, 31, 8, tzinfo=UTC)
    assert window(ms(start), {"period": 1, "periodUnit": "mo"}, ms(datetime(2026, 2, 28, 9, tzinfo=UTC))) == (
        1, ms(datetime(2026, 2, 28, 8, tzinfo=UTC)), ms(datetime(2026, 3, 31, 8, tzinfo=UTC)))


@pytest.mark.parametrize(("plan", "at", "expected"), [
    ({"status": "active", "period": {"start": "2026-01-01T08:00:00Z"}}, T0, ms(T0)),
    ({"status": "active", "period": {"start": "2026-01-01T08:00:00Z", "end": "2026-02-01"}},
     datetime(2026, 2, 2, tzinfo=UTC), None),
    ({"status": "completed", "period": {"start": "2026-01-01T08:00:00Z"}}, T0, None),
    ({"status": "revoked", "period": {"start": "2026-01-01T08:00:00Z"}}, T0, None),
    ({"status": "active", "period": {"start": "2026-02-01"}}, T0, None),
    ({"status": "active"}, T0, None),
])
def test_running(plan: dict[str, Any], at: datetime, expected: int | None) -> None:
    assert running(plan, ms(at)) == expected


def activity(code: str, period: int, unit: str) -> dict[str, Any]:
    return {"detail": {"kind": "Task", "status": "scheduled", "code": {"coding": [{"system": FT, "code": code}]},
                       "scheduledTiming": {"repeat": {"frequency": 1, "period": period, "periodUnit": unit}}}}


def diabetes_plan(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "category": [{"coding": [{"system": CARELOOP, "code": "chronic-programme"}]},
                         {"coding": [{"system": CARELOOP, "code": "diabetes"}]}],
            "subject": {"reference": f"Patient/{patient_id}"}, "period": {"start": "2026-01-01T08:00:00Z"},
            "careTeam": [{"reference": "CareTeam/follow-up-team"}],
            "activity": [activity("weekly-glucose", 1, "wk"), activity("medication-reminder", 1, "d"),
                         activity("personalised-reminder", 1, "mo"), activity("complication-screening", 3, "mo"),
                         activity("in-depth-review", 3, "mo")]}


async def programme_tasks(client: httpx.AsyncClient, plan_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    url: str | None = f"/fhir/Task?based-on=CarePlan/{plan_id}&_count=200"
    while url:
        page = (await client.get(url)).json()
        found += [e["resource"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return found


def code_of(task: dict[str, Any]) -> str:
    return str(task["code"]["coding"][0]["code"])



@pytest.mark.anyio
async def test_a_quarter_of_a_diabetes_programme(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    plan = await create(client, diabetes_plan(someone["id"]))
    worker = engine(app).cadence
    glucose_done = 0
    for day in range(90):  # 1 January to 31 March, one tick a day (and a second one: nothing more)
        at = ms(T0) + day * DAY + 3_600_000
        await worker.tick(at)
        assert await worker.tick(at) == 0
        if day % 14 == 0:  # the patient measures every other week and misses the others
            [open_glucose] = [t for t in await programme_tasks(client, plan["id"])
                              if code_of(t) == "weekly-glucose" and t["status"] == "requested"]
            done = {**open_glucose, "status": "completed"}
            await client.put(f"/fhir/Task/{done['id']}", content=body(done), headers=FHIR_JSON)
            glucose_done += 1
        made = await programme_tasks(client, plan["id"])
        opened = Counter(code_of(t) for t in made if t["status"] == "requested")
        assert set(opened.values()) == {1}  # never more than one open Task per activity: no pile-up
    made = await programme_tasks(client, plan["id"])
    assert Counter(code_of(t) for t in made) == {"medication-reminder": 90, "weekly-glucose": 13,
                                                 "personalised-reminder": 3, "complication-screening": 1,
                                                 "in-depth-review": 1}
    glucose = [t for t in made if code_of(t) == "weekly-glucose"]
    assert sum(t["status"] == "completed" for t in glucose) == glucose_done == 7
    missed = [t for t in glucose if t["status"] == "cancelled"]
    assert len(missed) == 13 - 7 and all(t["businessStatus"]["coding"][0]["code"] == "missed" for t in missed)
    assert all(t["owner"] == {"reference": "CareTeam/follow-up-team"} and
               t["for"] == {"reference": f"Patient/{someone['id']}"} for t in made)
    weekly = sorted(glucose, key=lambda t: t["restriction"]["period"]["start"])
    assert weekly[1]["restriction"]["period"] == {"start": "2026-01-08T08:00:00.000Z",
                                                   "end": "2026-01-15T08:00:00.000Z"}
    # a restart: a new worker on the same store makes nothing twice; the quarter turns: the quarterly ones come
    restarted = CadenceWorker(engine(app).repository)
    assert await restarted.tick(ms(T0) + 89 * DAY + 7_200_000) == 0
    await restarted.tick(ms(datetime(2026, 4, 1, 9, tzinfo=UTC)))
    made = await programme_tasks(client, plan["id"])
    assert Counter(code_of(t) for t in made)["complication-screening"] == 2
    # the programme ends: nothing more is made
    ended = {**(await client.get(f"/fhir/CarePlan/{plan['id']}")).json(), "status": "completed"}
    await client.put(f"/fhir/CarePlan/{plan['id']}", content=body(ended), headers=FHIR_JSON)
    before = len(made)
    assert await restarted.tick(ms(datetime(2026, 4, 9, 9, tzinfo=UTC))) == 0
    assert len(await programme_tasks(client, plan["id"])) == before
    assert all(t["identifier"][0]["system"] == CADENCE for t in made)
