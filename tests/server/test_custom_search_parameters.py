"""SearchParameter resources become live search parameters; existing data is reindexed for them.

https://hl7.org/fhir/R4B/searchparameter.html
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create
from tests.factories import patient

pytestmark = pytest.mark.anyio
TIER_URL = "http://careloop.example/fhir/StructureDefinition/service-tier"


def tiered(tier: str, family: str) -> dict[str, Any]:
    return patient(family=family, extension=[{"url": TIER_URL, "valueCode": tier}])


TIER_PARAMETER = {
    "resourceType": "SearchParameter", "url": "http://careloop.example/fhir/SearchParameter/patient-tier",
    "name": "ServiceTier", "status": "active", "description": "The clinic's service tier of a patient",
    "code": "tier", "base": ["Patient"], "type": "token",
    "expression": f"Patient.extension.where(url='{TIER_URL}').value",
}


async def wait_for_jobs(client: httpx.AsyncClient, job: str) -> dict[str, Any]:
    for _ in range(200):
        status = (await client.get("/fhir/$reindex", params={"job": job})).json()
        values = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in status["parameter"]}
        if values["status"] in ("completed", "failed"):
            return values
        await asyncio.sleep(0.05)
    raise AssertionError("reindex did not finish")


async def test_new_parameter_finds_existing_and_new_data(tmp_path: Path) -> None:
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "c.db"), validation_workers=0)
    async with client_for(settings) as client:
        gold = await create(client, tiered("A", "Gold"))
        await create(client, tiered("B", "Silver"))
        before = await client.get("/fhir/Patient", params={"tier": "A"}, headers={"Prefer": "handling=strict"})
        assert before.status_code == 400
        created = await client.post("/fhir/SearchParameter", content=body(TIER_PARAMETER), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        started = await client.post("/fhir/$reindex", params={"_type": "Patient"})
        assert started.status_code == 202
        job = started.headers["content-location"].split("job=")[1]
        progress = await wait_for_jobs(client, job)
        assert progress["status"] == "completed"
        assert progress["processed"] == progress["total"] == 2
        found = (await client.get("/fhir/Patient", params={"tier": "A"})).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [gold["id"]]
        later = await create(client, tiered("A", "Later"))
        found = (await client.get("/fhir/Patient", params={"tier": "A"})).json()
        assert {e["resource"]["id"] for e in found["entry"]} == {gold["id"], later["id"]}
        cap = (await client.get("/fhir/metadata")).json()
        patient_caps = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Patient")
        assert any(p["name"] == "tier" for p in patient_caps["searchParam"])
    async with client_for(settings) as client:  # still known after a restart
        found = (await client.get("/fhir/Patient", params={"tier": "A"})).json()
        assert len(found["entry"]) == 2


async def test_retiring_a_parameter_removes_it(client: httpx.AsyncClient) -> None:
    stored = await create(client, TIER_PARAMETER)
    assert (await client.get("/fhir/Patient", params={"tier": "A"})).status_code == 200
    retired = {**stored, "status": "retired"}
    await client.put(f"/fhir/SearchParameter/{stored['id']}", content=body(retired), headers=FHIR_JSON)
    gone = await client.get("/fhir/Patient", params={"tier": "A"}, headers={"Prefer": "handling=strict"})
    assert gone.status_code == 400


@pytest.mark.parametrize("change", [
    {"expression": "Patient.name.where("}, {"base": ["Unicorn"]}, {"type": "special"},
    {"expression": "Observation.code"},
])
async def test_unusable_search_parameter_is_422(client: httpx.AsyncClient, change: dict[str, Any]) -> None:
    response = await client.post("/fhir/SearchParameter", content=body({**TIER_PARAMETER, **change}),
                                 headers=FHIR_JSON)
    assert response.status_code in (400, 422), response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    stored = (await client.get("/fhir/SearchParameter", params={"code": TIER_PARAMETER["code"]})).json()
    assert "entry" not in stored


async def test_reindex_of_unknown_type_and_job(client: httpx.AsyncClient) -> None:
    assert (await client.post("/fhir/$reindex", params={"_type": "Unicorn"})).status_code == 400
    assert (await client.get("/fhir/$reindex", params={"job": "nope"})).status_code == 404
