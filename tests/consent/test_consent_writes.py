"""A Consent whose decision cannot be derived is refused at write with 422 naming the element (SECURITY.md C3)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON, issue_code
from tests.consent.builders import LAB, consent, prov

pytestmark = pytest.mark.anyio


async def _patient(client: httpx.AsyncClient) -> str:
    response = await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    assert response.status_code == 201
    return str(response.json()["id"])


def _new(given: dict[str, Any], patient: str) -> dict[str, Any]:
    out = {k: v for k, v in given.items() if k not in ("id", "meta")}
    return {**out, "patient": {"reference": f"Patient/{patient}"}}


async def test_unevaluable_consent_is_refused(client: httpx.AsyncClient) -> None:
    patient = await _patient(client)
    bad = _new(consent(prov("permit", children=(prov(None, cls=(LAB,)), prov("deny", data=(
        ("dependents", "Encounter/e1"),))))), patient)
    response = await client.post("/fhir/Consent", json=bad, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    assert issue_code(response) == "processing"
    issues = response.json()["issue"]
    assert [i["expression"] for i in issues] == [["Consent.provision.provision[0].type"],
                                                 ["Consent.provision.provision[1].data[0].meaning"]]
    assert "cannot be derived" in issues[0]["diagnostics"]
    # nothing was stored
    found = await client.get("/fhir/Consent", params={"patient": patient})
    assert found.json().get("total", 0) == 0 and not found.json().get("entry")


async def test_refused_on_update_and_in_a_transaction(client: httpx.AsyncClient) -> None:
    patient = await _patient(client)
    good = _new(consent(prov("permit")), patient)
    created = await client.post("/fhir/Consent", json=good, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    no_base = {**good, "id": cid, "provision": {"purpose": [{"system": "urn:x", "code": "y"}]}}
    response = await client.put(f"/fhir/Consent/{cid}", json=no_base, headers=FHIR_JSON)
    assert response.status_code == 422 and response.json()["issue"][0]["expression"] == ["Consent.provision.type"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "tx1"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**good, "provision": {"type": "permit", "provision": [{"purpose": [{"system": "urn:x",
                                                                                          "code": "y"}]}]}},
         "request": {"method": "POST", "url": "Consent"}}]}
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.provision.provision[0].type"]
    assert not (await client.get("/fhir/Patient", params={"identifier": "urn:test|tx1"})).json().get("entry")
    assert (await client.get(f"/fhir/Consent/{cid}")).json()["provision"] == {"type": "permit"}


async def test_drafts_and_other_scopes_are_not_checked(client: httpx.AsyncClient) -> None:
    patient = await _patient(client)
    draft = {**_new(consent({"purpose": [{"system": "urn:x", "code": "y"}]}), patient), "status": "draft"}
    assert (await client.post("/fhir/Consent", json=draft, headers=FHIR_JSON)).status_code == 201
    research = {**_new(consent(None), patient), "scope": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]}}
    assert (await client.post("/fhir/Consent", json=research, headers=FHIR_JSON)).status_code == 201
    # and making the draft active is refused
    draft_id = (await client.get("/fhir/Consent", params={"patient": patient, "status": "draft"})).json()[
        "entry"][0]["resource"]["id"]
    response = await client.put(f"/fhir/Consent/{draft_id}", json={**draft, "id": draft_id, "status": "active"},
                                headers=FHIR_JSON)
    assert response.status_code == 422
