"""Each BALP shape field by field (SECURITY.md §4), through real requests with real signed tokens.

https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.audit.conftest import access, auditor, caller_app, forge, of_request, trail
from tests.auth.conftest import FHIR_JSON, World

pytestmark = pytest.mark.anyio
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def coding(value: dict[str, Any]) -> tuple[str, str]:
    """(system, code) of a Coding, or of a CodeableConcept's first coding."""
    found = value["coding"][0] if "coding" in value else value
    return found["system"], found["code"]


def agent(event: dict[str, Any], code: str) -> dict[str, Any]:
    """The agent of a type code (110150 client, 110153 server, IRCP user)."""
    return next(a for a in event["agent"] if coding(a["type"])[1] == code)


def entities(event: dict[str, Any], code: str) -> list[dict[str, Any]]:
    """The entities of a type code (1 patient, 2 data or query, XrequestId)."""
    return [e for e in event["entity"] if e["type"]["code"] == code]


def patients(event: dict[str, Any]) -> list[str]:
    """The patients an event names."""
    return [e["what"]["reference"] for e in event["entity"] if e.get("role", {}).get("code") == "1"]


async def test_read_is_a_patient_read_with_every_agent_and_the_request_id(world: World) -> None:
    smith = forge(world, sub="drsmith", client_id="ward-app", scope="user/*.rs", jti="tok-123",
                  fhirUser=f"Practitioner/{world.ids['practitioner']}")
    response = await world.client.get(f"/fhir/Observation/{world.ids['alice_vital']}",
                                      headers={**smith, "X-Request-Id": "req-read-1"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "req-read-1"
    [event] = of_request(await trail(world.client, await auditor(world)), "req-read-1")
    assert coding(event["type"]) == ("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest")
    assert [coding(s) for s in event["subtype"]] == [("http://hl7.org/fhir/restful-interaction", "read")]
    assert event["action"] == "R" and event["outcome"] == "0" and event["recorded"].endswith("Z")
    client = agent(event, "110150")
    assert client["who"]["identifier"]["value"] == "ward-app" and client["requestor"] is False
    assert client["network"] == {"address": "127.0.0.1", "type": "2"}
    assert agent(event, "110153")["requestor"] is False
    user = agent(event, "IRCP")
    assert coding(user["type"]) == ("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP")
    assert user["requestor"] is True and user["who"] == {"reference": f"Practitioner/{world.ids['practitioner']}"}
    [transaction] = entities(event, "XrequestId")
    assert transaction["what"]["identifier"]["value"] == "req-read-1"
    [data] = [e for e in entities(event, "2") if e["role"]["code"] == "4"]
    assert data["what"]["reference"] == f"Observation/{world.ids['alice_vital']}/_history/1"
    [patient] = entities(event, "1")
    assert patient["role"]["code"] == "1" and patient["what"]["reference"] == f"Patient/{world.ids['alice']}"
    assert event["source"]["type"][0]["code"] == "4"


async def test_a_request_without_an_id_gets_one_minted_and_returned(world: World) -> None:
    response = await world.client.get(f"/fhir/Patient/{world.ids['bob']}", headers=world.admin)
    minted = response.headers["x-request-id"]
    assert len(minted) >= 32
    [event] = of_request(await trail(world.client, await auditor(world)), minted)
    assert patients(event) == [f"Patient/{world.ids['bob']}"]
    # a header that is no plain id (control characters, too long) is replaced, never echoed
    response = await world.client.get(f"/fhir/Patient/{world.ids['bob']}", headers={**world.admin,
                                                                                     "X-Request-Id": "a b"})
    assert response.headers["x-request-id"] != "a b"


async def test_a_search_spanning_three_patients_is_one_query_event_per_patient(world: World) -> None:
    carol = (await world.client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=world.admin)).json()
    observation = {"resourceType": "Observation", "status": "final", "code": {"coding": [
        {"system": "http://loinc.org", "code": "8867-4"}]}, "subject": {"reference": f"Patient/{carol['id']}"}}
    assert (await world.client.post("/fhir/Observation", json=observation, headers=world.admin)).status_code == 201
    response = await world.client.get("/fhir/Observation?code=http://loinc.org%7C8867-4&_count=50",
                                      headers={**world.admin, "X-Request-Id": "req-search"})
    assert response.status_code == 200 and len(response.json()["entry"]) == 4
    events = of_request(await trail(world.client, await auditor(world)), "req-search")
    assert sorted(p for e in events for p in patients(e)) == sorted(
        f"Patient/{p}" for p in (world.ids["alice"], world.ids["bob"], carol["id"]))
    for event in events:
        assert len(patients(event)) == 1 and event["action"] == "E"
        assert [coding(s)[1] for s in event["subtype"]] == ["search-type"]
        [query] = [e for e in entities(event, "2") if e["role"]["code"] == "24"]
        assert base64.b64decode(query["query"]) == b"GET /fhir/Observation?code=http://loinc.org%7C8867-4&_count=50"
        assert query["description"] == "GET /fhir/Observation?code=http://loinc.org|8867-4&_count=50"


async def test_the_raw_query_keeps_malicious_input_and_the_description_is_cleaned(world: World) -> None:
    response = await world.client.get("/fhir/Patient?name=%00%3Cscript%3E", headers={**world.admin,
                                                                                     "X-Request-Id": "req-evil"})
    assert response.status_code == 200
    [event] = of_request(await trail(world.client, await auditor(world)), "req-evil")
    [query] = [e for e in entities(event, "2") if e["role"]["code"] == "24"]
    assert base64.b64decode(query["query"]) == b"GET /fhir/Patient?name=%00%3Cscript%3E"
    assert query["description"] == "GET /fhir/Patient?name=<script>"
    assert patients(event) == []


async def test_create_update_patch_delete_are_patient_variants_with_their_actions(world: World) -> None:
    headers = {**world.admin, **FHIR_JSON}
    condition = {"resourceType": "Condition", "subject": {"reference": f"Patient/{world.ids['alice']}"},
                 "code": {"text": "cough"}}
    created = await world.client.post("/fhir/Condition", json=condition, headers={**headers, "X-Request-Id": "c1"})
    cid = created.json()["id"]
    await world.client.put(f"/fhir/Condition/{cid}", json={**condition, "id": cid}, headers={**headers,
                                                                                             "X-Request-Id": "u1"})
    await world.client.patch(f"/fhir/Condition/{cid}", json=[{"op": "replace", "path": "/code/text", "value": "x"}],
                              headers={**headers, "content-type": "application/json-patch+json",
                                       "X-Request-Id": "p1"})
    await world.client.delete(f"/fhir/Condition/{cid}", headers={**headers, "X-Request-Id": "d1"})
    events = await trail(world.client, await auditor(world))
    expected = {"c1": ("C", "create", 1), "u1": ("U", "update", 2), "p1": ("U", "patch", 3), "d1": ("D", "delete", 4)}
    for rid, (action, subtype, vid) in expected.items():
        [event] = of_request(events, rid)
        assert event["action"] == action and coding(event["subtype"][0])[1] == subtype and event["outcome"] == "0"
        [data] = entities(event, "2")
        assert data["what"]["reference"] == f"Condition/{cid}/_history/{vid}"
        if action != "D":  # a deletion has no content left to place it in a compartment
            assert patients(event) == [f"Patient/{world.ids['alice']}"]


async def test_an_operation_is_subtyped_with_its_name(world: World) -> None:
    response = await world.client.get(f"/fhir/Patient/{world.ids['alice']}/$everything",
                                      headers={**world.admin, "X-Request-Id": "op1"})
    assert response.status_code == 200
    [event] = of_request(await trail(world.client, await auditor(world)), "op1")
    assert [coding(s) for s in event["subtype"]] == [("http://hl7.org/fhir/restful-interaction", "operation"),
                                                     ("http://careloop.health/fhir/CodeSystem/operation",
                                                      "$everything")]
    assert patients(event) == [f"Patient/{world.ids['alice']}"]
    assert [e["what"]["reference"] for e in entities(event, "2") if e["role"]["code"] == "4"] == [
        f"Patient/{world.ids['alice']}"]


async def test_failures_are_recorded_with_their_outcome(world: World) -> None:
    missing = await world.client.get("/fhir/Patient/nobody", headers={**world.admin, "X-Request-Id": "f1"})
    assert missing.status_code == 404
    refused = await world.client.get("/fhir/Patient", headers={"X-Request-Id": "f2"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "f2"
    events = await trail(world.client, await auditor(world))
    [event] = of_request(events, "f1")
    assert event["outcome"] == "4" and "not known" in event["outcomeDesc"]
    assert [e["what"]["reference"] for e in entities(event, "2")] == ["Patient/nobody"]
    [event] = of_request(events, "f2")
    assert event["outcome"] == "4" and agent(event, "110150")["who"]["identifier"]["value"] == "unknown"


async def test_the_authorization_server_records_tokens_sign_ins_and_launches(world: World) -> None:
    record, secret = world.auth.add_client("ehr", "confidential-symmetric", "system/*.rs", [], ehr=True)
    issued = await world.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                                     auth=(record.client_id, secret or ""))
    assert issued.status_code == 200
    refused = await world.client.post("/auth/token", data={"grant_type": "client_credentials"},
                                      auth=(record.client_id, "wrong"))
    assert refused.status_code == 401
    token = issued.json()["access_token"]
    launch = await world.client.post("/auth/launch", data={"patient": world.ids["alice"]},
                                     headers=world.bearer(token))
    assert launch.status_code == 201
    revoked = await world.client.post("/auth/revoke", data={"token": token}, auth=(record.client_id, secret or ""))
    assert revoked.status_code == 200
    client_id, _ = world.app_client("patient/*.rs")
    page = await world.client.post("/auth/authorize", data={
        "response_type": "code", "client_id": client_id, "redirect_uri": "http://localhost:9999/callback",
        "scope": "patient/*.rs", "state": "s", "aud": "http://localhost:8080/fhir", "code_challenge": "x" * 43,
        "code_challenge_method": "S256", "username": "alice", "password": "wrong"})
    assert page.status_code == 401
    events = await trail(world.client, await auditor(world), type=f"{DCM}|110114")
    seen = [(coding(e["subtype"][-1])[1], e["outcome"], agent(e, "110150")["who"]["identifier"]["value"])
            for e in events]
    assert ("token-issued", "0", record.client_id) in seen
    assert ("token-refused", "4", "unknown") in seen
    assert ("launch-created", "0", record.client_id) in seen
    assert ("token-revoked", "0", record.client_id) in seen
    assert ("signin-failed", "4", client_id) in seen
    failed = next(e for e in events if coding(e["subtype"][-1])[1] == "signin-failed")
    assert coding(failed["subtype"][0]) == (DCM, "110122") and "alice" in failed["outcomeDesc"]


async def test_break_glass_purpose_role_and_token_are_recorded_before_the_data_leaves(tmp_path: Path,
                                                                                      seeded_database: Path) -> None:
    async with caller_app(tmp_path, seeded_database) as (_, client, caller):
        patient = (await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)).json()
        caller["access"] = access("user/*.rs", client_id="er-app", fhir_user="Practitioner/er", roles=("clinician",),
                                  purposes=("BTG",), btg_reason="unconscious on arrival", jti="tok-btg")
        response = await client.get(f"/fhir/Patient/{patient['id']}", headers={"X-Request-Id": "btg-1"})
        assert response.status_code == 200
        caller.clear()
        events = of_request(await trail(client, policy="urn:ietf:params:oauth:jti:tok-btg"), "btg-1")
    assert [coding(e["subtype"][0])[1] for e in events] == ["break-glass", "read"]
    glass, read = events
    assert coding(glass["type"]) == (DCM, "110113") and glass["outcomeDesc"] == "unconscious on arrival"
    for event in events:
        assert coding(event["purposeOfEvent"][0]) == ("http://terminology.hl7.org/CodeSystem/v3-ActReason", "BTG")
        user = agent(event, "IRCP")
        assert coding(user["purposeOfUse"][0])[1] == "BTG" and user["role"][0]["text"] == "clinician"
        assert user["policy"] == ["urn:ietf:params:oauth:jti:tok-btg"]
        assert patients(event) == [f"Patient/{patient['id']}"]
    assert read["outcomeDesc"] == "unconscious on arrival"
