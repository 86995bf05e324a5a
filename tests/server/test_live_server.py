"""A real uvicorn process spoken to over real HTTP (TCP on loopback).

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import FHIR_JSON, body
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio


async def test_create_read_search_over_tcp(live_server: str) -> None:
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as client:
        created = await client.post("/Patient", content=body(patient(mrn="live-1")), headers=FHIR_JSON)
        assert created.status_code == 201
        location = created.headers["location"]
        assert location.startswith(f"{live_server}/Patient/")
        read = await client.get(location.split("/_history")[0])
        assert read.status_code == 200
        assert read.headers["etag"] == 'W/"1"'
        # response hygiene (issue 27): the answer does not name the server software it runs on
        assert "server" not in read.headers and read.headers["x-content-type-options"] == "nosniff"
        found = await client.get("/Patient", params={"identifier": "urn:oid:1.2.36.146.595.217.0.1|live-1"})
        assert found.json()["entry"][0]["resource"]["id"] == read.json()["id"]
        xml = await client.get("/metadata", headers={"Accept": "application/fhir+xml"})
        assert xml.status_code == 406


async def test_concurrent_if_match_over_tcp(live_server: str) -> None:
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as client:
        stored = (await client.post("/Patient", content=body(patient()), headers=FHIR_JSON)).json()

        async def attempt(n: int) -> int:
            changed = {**stored, "name": [{"family": f"W{n}"}]}
            response = await client.put(f"/Patient/{stored['id']}", content=body(changed),
                                        headers={**FHIR_JSON, "If-Match": 'W/"1"'})
            return response.status_code

        statuses = await asyncio.gather(*(attempt(n) for n in range(8)))
        assert sorted(statuses) == [200] + [412] * 7


async def test_transaction_over_tcp(live_server: str) -> None:
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:9a0c1f2e-3b4d-4c5e-8f60-718293a4b5c6", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("urn:uuid:9a0c1f2e-3b4d-4c5e-8f60-718293a4b5c6"),
         "request": {"method": "POST", "url": "Observation"}}]}
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as client:
        response = await client.post("/", content=body(tx), headers=FHIR_JSON)
        assert response.status_code == 200
        obs_url = response.json()["entry"][1]["response"]["location"].split("/_history")[0]
        obs = (await client.get(f"/{obs_url}")).json()
        assert obs["subject"]["reference"].startswith("Patient/")
