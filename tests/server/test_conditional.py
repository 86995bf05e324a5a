"""Conditional create, update, patch and delete.

https://hl7.org/fhir/R4B/http.html#ccreate
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import FHIR_JSON, body, create, issue_code
from tests.factories import patient

pytestmark = pytest.mark.anyio
MRN = "urn:oid:1.2.36.146.595.217.0.1"


async def count_patients(client: httpx.AsyncClient) -> int:
    return len((await client.get("/fhir/Patient")).json().get("entry", []))


async def test_if_none_exist_header(client: httpx.AsyncClient) -> None:
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier={MRN}|55"}
    first = await client.post("/fhir/Patient", content=body(patient(mrn="55")), headers=headers)
    assert first.status_code == 201
    second = await client.post("/fhir/Patient", content=body(patient(mrn="55")), headers=headers)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert await count_patients(client) == 1


async def test_conditional_create_in_query_string(client: httpx.AsyncClient) -> None:
    url = f"/fhir/Patient?identifier={MRN}|56"
    first = await client.post(url, content=body(patient(mrn="56")), headers=FHIR_JSON)
    second = await client.post(url, content=body(patient(mrn="56")), headers=FHIR_JSON)
    assert (first.status_code, second.status_code) == (201, 200)
    assert await count_patients(client) == 1


async def test_conditional_create_with_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await create(client, patient(family="Twin", mrn="1"))
    await create(client, patient(family="Twin", mrn="2"))
    response = await client.post("/fhir/Patient", content=body(patient(family="Twin")),
                                 headers={**FHIR_JSON, "If-None-Exist": "family=Twin"})
    assert response.status_code == 412
    assert await count_patients(client) == 2


async def test_conditional_create_with_unknown_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", content=body(patient()),
                                 headers={**FHIR_JSON, "If-None-Exist": "shoe-size=42"})
    assert response.status_code == 400
    assert "shoe-size" in response.text
    assert await count_patients(client) == 0


async def test_conditional_update(client: httpx.AsyncClient) -> None:
    url = f"/fhir/Patient?identifier={MRN}|60"
    created = await client.put(url, content=body(patient(mrn="60", family="First")), headers=FHIR_JSON)
    assert created.status_code == 201
    updated = await client.put(url, content=body(patient(mrn="60", family="Second")), headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"
    wrong_id = await client.put(url, content=body(patient(mrn="60", id="other")), headers=FHIR_JSON)
    assert wrong_id.status_code == 400


async def test_conditional_update_multiple_matches_is_412(client: httpx.AsyncClient) -> None:
    await create(client, patient(family="Same"))
    await create(client, patient(family="Same"))
    response = await client.put("/fhir/Patient?family=Same", content=body(patient()), headers=FHIR_JSON)
    assert response.status_code == 412
    assert issue_code(response) == "multiple-matches"


async def test_conditional_update_needs_criteria(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient", content=body(patient()), headers=FHIR_JSON)
    assert response.status_code == 400
    assert issue_code(response) == "required"


async def test_conditional_patch(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient(mrn="70"))
    response = await client.patch(f"/fhir/Patient?identifier={MRN}|70", content=body(
        [{"op": "add", "path": "/active", "value": False}]), headers={"content-type": "application/json-patch+json"})
    assert response.status_code == 200
    assert response.json()["id"] == stored["id"]
    assert response.json()["active"] is False
    none = await client.patch(f"/fhir/Patient?identifier={MRN}|71", content=body([]),
                              headers={"content-type": "application/json-patch+json"})
    assert none.status_code == 404


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient(mrn="80"))
    response = await client.delete(f"/fhir/Patient?identifier={MRN}|80")
    assert response.status_code == 200
    assert (await client.get(f"/fhir/Patient/{stored['id']}")).status_code == 410
    nothing = await client.delete(f"/fhir/Patient?identifier={MRN}|80")
    assert nothing.status_code == 200
    await create(client, patient(family="Many"))
    await create(client, patient(family="Many"))
    many = await client.delete("/fhir/Patient?family=Many")
    assert many.status_code == 412
    assert await count_patients(client) == 2
