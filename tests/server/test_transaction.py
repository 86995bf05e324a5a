"""Batch and transaction bundles: order, placeholders, conditional references, atomicity.

https://hl7.org/fhir/R4B/http.html#transaction
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import FHIR_JSON, body, changes_since_start, create, issue_code
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None, if_none_exist: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    if if_none_exist:
        entry["request"]["ifNoneExist"] = if_none_exist
    return entry


async def send(client: httpx.AsyncClient, value: dict[str, Any], url: str = "/fhir") -> httpx.Response:
    return await client.post(url, content=body(value), headers=FHIR_JSON)


async def test_transaction_resolves_placeholders(client: httpx.AsyncClient) -> None:
    pat = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"
    tx = bundle("transaction", post(observation(pat), "urn:uuid:0d5a1e5e-0d37-4f4e-9a43-3c1c3e0e4a01"),
                post(patient(mrn="42"), pat))
    response = await send(client, tx)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    obs_location, pat_location = (e["response"]["location"] for e in result["entry"])
    assert pat_location.startswith("Patient/") and pat_location.endswith("/_history/1")
    obs = (await client.get(f"/fhir/{obs_location.rsplit('/_history', 1)[0]}")).json()
    patient_ref = pat_location.rsplit("/_history", 1)[0]
    assert obs["subject"]["reference"] == patient_ref
    found = (await client.get("/fhir/Observation", params={"subject": patient_ref})).json()
    assert len(found["entry"]) == 1


async def test_transaction_is_atomic(client: httpx.AsyncClient) -> None:
    existing = await create(client, patient(family="Keep"))
    tx = bundle("transaction",
                post(patient(family="New")),
                {"resource": {**existing, "active": True},
                 "request": {"method": "PUT", "url": f"Patient/{existing['id']}"}},
                {"request": {"method": "DELETE", "url": "Patient/whatever"}},
                post({"resourceType": "Observation", "status": "final"}))  # missing code: invalid
    response = await send(client, tx)
    assert response.status_code == 400
    assert "Bundle.entry[3]" in response.text
    history = (await client.get("/fhir/_history", params=changes_since_start())).json()
    assert len(history["entry"]) == 1
    assert (await client.get(f"/fhir/Patient/{existing['id']}")).json()["meta"]["versionId"] == "1"


async def test_transaction_rolls_back_on_failed_if_match(client: httpx.AsyncClient) -> None:
    existing = await create(client, patient())
    tx = bundle("transaction", post(patient(family="Another")),
                {"resource": existing, "request": {"method": "PUT", "url": f"Patient/{existing['id']}",
                                                   "ifMatch": 'W/"5"'}})
    response = await send(client, tx)
    assert response.status_code == 412
    assert len((await client.get("/fhir/Patient")).json()["entry"]) == 1


async def test_transaction_processing_order(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Patient/p1", content=body(patient(id="p1")), headers=FHIR_JSON)
    tx = bundle("transaction",
                {"request": {"method": "GET", "url": "Patient/p2"}},
                {"resource": patient(id="p2", family="Put"), "request": {"method": "PUT", "url": "Patient/p2"}},
                post(patient(family="Posted"), "urn:uuid:2b1c6a43-4b52-4f0e-bb36-8f5bb0a4b9a1"),
                {"request": {"method": "DELETE", "url": "Patient/p1"}})
    response = await send(client, tx)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK", "201 Created", "201 Created", "204 No Content"]
    assert entries[0]["resource"]["name"][0]["family"] == "Put"
    assert (await client.get("/fhir/Patient/p1")).status_code == 410


async def test_failing_read_fails_the_whole_transaction(client: httpx.AsyncClient) -> None:
    tx = bundle("transaction", post(patient(family="Never")), {"request": {"method": "GET", "url": "Patient/nope"}})
    response = await send(client, tx)
    assert response.status_code == 404
    assert "Bundle.entry[1]" in response.text
    assert "entry" not in (await client.get("/fhir/_history", params=changes_since_start())).json()


async def test_transaction_get_runs_after_writes(client: httpx.AsyncClient) -> None:
    tx = bundle("transaction", {"request": {"method": "GET", "url": "Patient?family=Later"}},
                post(patient(family="Later")))
    response = await send(client, tx)
    result = response.json()["entry"][0]
    assert result["response"]["status"] == "200 OK"
    assert result["resource"]["type"] == "searchset"
    assert len(result["resource"]["entry"]) == 1


async def test_conditional_create_and_conditional_reference_in_transaction(client: httpx.AsyncClient) -> None:
    known = await create(client, patient(mrn="777"))
    tx = bundle("transaction",
                post(patient(mrn="777"), "urn:uuid:6f2ab3a8-1c2e-4e5f-9d1a-0a0b0c0d0e0f",
                     if_none_exist="identifier=urn:oid:1.2.36.146.595.217.0.1|777"),
                post(observation("urn:uuid:6f2ab3a8-1c2e-4e5f-9d1a-0a0b0c0d0e0f")),
                post(observation("Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|777", code="789-8")))
    response = await send(client, tx)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["response"]["location"].startswith(f"Patient/{known['id']}/")
    for entry in entries[1:]:
        obs = (await client.get(f"/fhir/{entry['response']['location'].split('/_history')[0]}")).json()
        assert obs["subject"]["reference"] == f"Patient/{known['id']}"
    assert len((await client.get("/fhir/Patient")).json()["entry"]) == 1


async def test_unresolvable_conditional_reference_fails_transaction(client: httpx.AsyncClient) -> None:
    tx = bundle("transaction", post(observation("Patient?identifier=urn:x|missing")))
    response = await send(client, tx)
    assert response.status_code == 412
    assert issue_code(response) == "not-found"
    assert "entry" not in (await client.get("/fhir/_history", params=changes_since_start())).json()


async def test_transaction_conditional_update_and_delete(client: httpx.AsyncClient) -> None:
    await create(client, patient(mrn="1", family="Old"))
    await create(client, patient(mrn="2", family="Gone"))
    tx = bundle("transaction",
                {"resource": patient(mrn="1", family="Renamed"),
                 "request": {"method": "PUT", "url": "Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|1"}},
                {"request": {"method": "DELETE", "url": "Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|2"}})
    response = await send(client, tx)
    assert response.status_code == 200, response.text
    names = [e["resource"]["name"][0]["family"] for e in (await client.get("/fhir/Patient")).json()["entry"]]
    assert names == ["Renamed"]


async def test_transaction_patch_entry(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    patch = base64.b64encode(orjson.dumps([{"op": "add", "path": "/active", "value": True}])).decode()
    tx = bundle("transaction", {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                                             "data": patch},
                                "request": {"method": "PATCH", "url": f"Patient/{stored['id']}"}})
    response = await send(client, tx)
    assert response.status_code == 200, response.text
    assert (await client.get(f"/fhir/Patient/{stored['id']}")).json()["active"] is True


async def test_duplicate_resource_in_transaction_is_refused(client: httpx.AsyncClient) -> None:
    tx = bundle("transaction",
                {"resource": patient(id="d1"), "request": {"method": "PUT", "url": "Patient/d1"}},
                {"resource": patient(id="d1"), "request": {"method": "PUT", "url": "Patient/d1"}})
    response = await send(client, tx)
    assert response.status_code == 400
    assert issue_code(response) == "duplicate"


async def test_batch_answers_per_entry(client: httpx.AsyncClient) -> None:
    batch = bundle("batch", post(patient(family="Fine")), post({"resourceType": "Patient", "active": "nope"}),
                   {"request": {"method": "GET", "url": "Patient/missing"}},
                   {"request": {"method": "PUT", "url": "Patient/b1"}, "resource": patient(id="b1")})
    response = await send(client, batch)
    assert response.status_code == 200
    result = response.json()
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "201 Created"]
    assert result["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert len((await client.get("/fhir/Patient")).json()["entry"]) == 2


@pytest.mark.parametrize("url", ["/fhir", "/fhir/"])
async def test_both_base_urls_accept_bundles(client: httpx.AsyncClient, url: str) -> None:
    response = await send(client, bundle("transaction", post(patient())), url)
    assert response.status_code == 200


@pytest.mark.parametrize("value", [
    {"resourceType": "Patient"},
    {"resourceType": "Bundle", "type": "collection"},
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}}]},
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST", "url": "Patient"}}]},
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "BREW", "url": "Patient"}}]},
])
async def test_malformed_bundles_are_400(client: httpx.AsyncClient, value: dict[str, Any]) -> None:
    response = await send(client, value)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_transaction_to_unknown_type_is_404(client: httpx.AsyncClient) -> None:
    response = await send(client, bundle("transaction", {"request": {"method": "POST", "url": "Unicorn"},
                                                         "resource": {"resourceType": "Unicorn"}}))
    assert response.status_code == 404


async def test_transaction_prefer_minimal_omits_resources(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir", content=body(bundle("transaction", post(patient()))),
                                  headers={**FHIR_JSON, "Prefer": "return=minimal"})
    entry = response.json()["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["etag"] == 'W/"1"'
