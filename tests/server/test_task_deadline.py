"""Worklists: the shipped `deadline` search parameter on Task (Task.restriction.period.end), sortable, and the
Tasks stored before it existed reindexed (issue 30, item 4). Run on MongoDB by tests/conformance too.

https://hl7.org/fhir/R4B/searchparameter.html, https://hl7.org/fhir/R4B/search.html#sort
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from resources.ids import now_ms
from resources.search.dates import format_instant
from subscriptions.seed import shipped
from tests.conftest import FHIR_JSON, body, create
from tests.factories import patient

pytestmark = pytest.mark.anyio
MIN = 60_000
DEADLINE = next(r for r in shipped() if r["resourceType"] == "SearchParameter" and r["code"] == "deadline")
STRICT = {"Prefer": "handling=strict"}


def task(owner: str | None, deadline: int, patient_id: str, status: str) -> dict[str, Any]:
    found: dict[str, Any] = {"resourceType": "Task", "status": status, "intent": "order", "priority": "routine",
                             "for": {"reference": f"Patient/{patient_id}"},
                             "restriction": {"period": {"end": format_instant(deadline)}}}
    if owner:
        found["owner"] = {"reference": owner}
    return found


async def shipped_deadline(client: httpx.AsyncClient) -> None:
    """The shipped SearchParameter, as the seed writes it (stores started without the pathway seed lack it)."""
    if (await client.get("/fhir/SearchParameter/careloop-task-deadline")).status_code == 200:
        return
    response = await client.put("/fhir/SearchParameter/careloop-task-deadline", content=body(DEADLINE),
                                headers=FHIR_JSON)
    assert response.status_code == 201, response.text


async def ids(client: httpx.AsyncClient, params: dict[str, str]) -> list[str]:
    response = await client.get("/fhir/Task", params=params, headers=STRICT)
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


async def worklist(client: httpx.AsyncClient) -> tuple[str, int, dict[str, str]]:
    someone = await create(client, patient())
    ward = await create(client, {"resourceType": "Organization", "name": "Ward"})
    owner, now = f"Organization/{ward['id']}", now_ms()
    made = {}
    for name, offset, status in (("late", -30, "requested"), ("soon", 10, "in-progress"), ("later", 90, "requested"),
                                 ("done", -60, "completed"), ("elsewhere", 5, "requested")):
        made[name] = (await create(client, task(owner if name != "elsewhere" else None, now + offset * MIN,
                                                someone["id"], status)))["id"]
    return owner, now, made


async def test_worklist_by_owner_sorted_by_deadline(client: httpx.AsyncClient) -> None:
    await shipped_deadline(client)
    owner, now, made = await worklist(client)
    assert await ids(client, {"owner": owner, "status": "requested,in-progress", "_sort": "deadline"}) == [
        made["late"], made["soon"], made["later"]]
    assert await ids(client, {"owner": owner, "_sort": "-deadline"}) == [made["later"], made["soon"], made["late"],
                                                                         made["done"]]
    assert await ids(client, {"deadline": "lt" + format_instant(now), "status:not": "completed"}) == [made["late"]]
    assert sorted(await ids(client, {"deadline": "ge" + format_instant(now)})) == sorted(
        [made["soon"], made["later"], made["elsewhere"]])


async def test_tasks_stored_before_the_parameter_are_reindexed(client: httpx.AsyncClient) -> None:
    # a store that never had the parameter (an upgrade): its Tasks are found once the parameter is stored
    if (await client.get("/fhir/SearchParameter/careloop-task-deadline")).status_code == 200:
        assert (await client.delete("/fhir/SearchParameter/careloop-task-deadline")).status_code in (200, 204)
    refused = await client.get("/fhir/Task", params={"_sort": "deadline"}, headers=STRICT)
    assert refused.status_code == 400
    _, now, made = await worklist(client)
    await shipped_deadline(client)  # the commit starts a reindex of Task in the background
    started = await client.post("/fhir/$reindex", params={"_type": "Task"})  # and so can an operator
    assert started.status_code == 202
    job = started.headers["content-location"].split("job=")[1]
    for _ in range(200):
        status = (await client.get("/fhir/$reindex", params={"job": job})).json()
        values = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in status["parameter"]}
        if values["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    assert values["status"] == "completed" and values["processed"] >= 5
    assert await ids(client, {"deadline": "lt" + format_instant(now), "status:not": "completed"}) == [made["late"]]
