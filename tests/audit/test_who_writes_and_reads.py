"""Append-only, written by the server and audit sources only, read by auditors and by a patient about themselves.

https://profiles.ihe.net/ITI/BALP/, SECURITY.md §4
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audit.conftest import access, auditor, caller_app, forge, of_request, sequence, trail
from tests.auth.conftest import FHIR_JSON, World

pytestmark = pytest.mark.anyio
EVENT = {"resourceType": "AuditEvent", "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                "code": "110100"},
         "recorded": "2026-01-01T00:00:00Z", "agent": [{"requestor": True, "who": {"display": "glucometer 7"}}],
         "source": {"observer": {"display": "device gateway"}}}


def issue(response: httpx.Response) -> str:
    return str(response.json()["issue"][0]["code"])


async def test_update_patch_and_delete_answer_405_whatever_the_scope(world: World) -> None:
    [stored] = await trail(world.client, await auditor(world), _count="1")
    aid = stored["id"]
    callers = {"system/*.cruds": world.admin,
               "system/AuditEvent.cruds": forge(world, scope="system/AuditEvent.cruds"),
               "user/*.cruds": forge(world, scope="user/*.cruds", fhirUser=f"Practitioner/{world.ids['practitioner']}"),
               "patient/*.cruds": forge(world, scope="patient/*.cruds", patient=world.ids["alice"],
                                        fhirUser=f"Patient/{world.ids['alice']}")}
    patch = [{"op": "remove", "path": "/agent"}]
    for name, headers in callers.items():
        headers = {**headers, **FHIR_JSON}
        for response in (
                await world.client.put(f"/fhir/AuditEvent/{aid}", json={**stored}, headers=headers),
                await world.client.put("/fhir/AuditEvent/chosen", json={**EVENT, "id": "chosen"}, headers=headers),
                await world.client.patch(f"/fhir/AuditEvent/{aid}", json=patch,
                                         headers={**headers, "content-type": "application/json-patch+json"}),
                await world.client.delete(f"/fhir/AuditEvent/{aid}", headers=headers),
                await world.client.put(f"/fhir/AuditEvent?_id={aid}", json={**stored}, headers=headers),
                await world.client.patch(f"/fhir/AuditEvent?_id={aid}", json=patch,
                                         headers={**headers, "content-type": "application/json-patch+json"}),
                await world.client.delete(f"/fhir/AuditEvent?_id={aid}", headers=headers)):
            assert response.status_code == 405 and issue(response) == "not-supported", (name, response.text)
        for method, body in (("DELETE", None), ("PUT", stored), ("POST", EVENT)):
            entry: dict[str, Any] = {"request": {"method": method, "url": "AuditEvent" if method == "POST" else
                                                 f"AuditEvent/{aid}"}}
            if body is not None:
                entry["resource"] = body
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
            response = await world.client.post("/fhir", json=bundle, headers=headers)
            assert response.status_code in (403, 405), (name, method, response.text)
            if method != "POST":
                assert response.status_code == 405, (name, method, response.text)
    after = await world.client.get(f"/fhir/AuditEvent/{aid}", headers=await auditor(world))
    assert after.json() == stored


async def test_only_audit_sources_create_and_their_events_join_the_chain(tmp_path: Path,
                                                                          seeded_database: Path) -> None:
    async with caller_app(tmp_path, seeded_database) as (_, client, caller):
        caller["access"] = access("system/*.cruds", client_id="admin")
        refused = await client.post("/fhir/AuditEvent", json=EVENT, headers=FHIR_JSON)
        assert refused.status_code == 403 and issue(refused) == "forbidden"
        caller["access"] = access("system/AuditEvent.c", client_id="gateway", audit_source=True)
        created = await client.post("/fhir/AuditEvent", json=EVENT, headers={**FHIR_JSON, "X-Request-Id": "gw-1"})
        assert created.status_code == 201, created.text
        caller.clear()
        events = await trail(client)
        mine = next(e for e in events if e["id"] == created.json()["id"])
        assert mine["source"] == EVENT["source"] and sequence(mine) > 0
        # the submission is itself audited: a create by the gateway naming the stored event
        [audit] = of_request(events, "gw-1")
        assert audit["subtype"][0]["code"] == "create" and audit["outcome"] == "0"
        assert audit["agent"][0]["who"]["identifier"]["value"] == "gateway"
        assert any(e["what"].get("reference", "").startswith(f"AuditEvent/{mine['id']}") for e in audit["entity"])
        assert [sequence(e) for e in events] == list(range(1, len(events) + 1))


async def test_reading_needs_an_auditor_an_audit_scope_or_the_patient_themselves(world: World) -> None:
    smith = forge(world, scope="user/*.rs", fhirUser=f"Practitioner/{world.ids['practitioner']}")
    for headers in (world.admin, forge(world, scope="system/*.rs"), smith):
        for path in ("/fhir/AuditEvent", "/fhir/$verify-audit"):
            response = await world.client.get(path, headers=headers)
            assert response.status_code == 403 and issue(response) == "forbidden", response.text
    assert (await world.client.get("/fhir/AuditEvent", headers=await auditor(world))).status_code == 200
    alice = forge(world, scope="patient/AuditEvent.rs", patient=world.ids["alice"],
                  fhirUser=f"Patient/{world.ids['alice']}")
    await world.client.get(f"/fhir/Observation/{world.ids['bob_vital']}", headers=world.admin)
    await world.client.get(f"/fhir/Observation/{world.ids['alice_vital']}", headers=smith)
    seen = await trail(world.client, alice)
    assert seen and all(f"Patient/{world.ids['alice']}" in str(e["entity"]) for e in seen)
    assert not any(f"Patient/{world.ids['bob']}" in str(e["entity"]) for e in seen)
    response = await world.client.get("/fhir/$verify-audit", headers=alice)
    assert response.status_code == 403


@pytest.mark.parametrize(("shows", "expected"), [
    ("roles", {"display": "clinician"}), ("none", None), ("names", "Practitioner")])
async def test_a_patient_sees_the_staff_as_the_clinic_configures(tmp_path: Path, seeded_database: Path, shows: str,
                                                                 expected: Any) -> None:
    async with caller_app(tmp_path, seeded_database, audit_patient_shows_staff=shows) as (_, client, caller):
        patient = (await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)).json()
        caller["access"] = access("user/*.rs", fhir_user="Practitioner/smith", roles=("clinician",),
                                  client_id="ward")
        read = await client.get(f"/fhir/Patient/{patient['id']}", headers={"X-Request-Id": "seen-by-smith"})
        assert read.status_code == 200
        caller["access"] = access("patient/AuditEvent.rs", patient=patient["id"], client_id="portal",
                                  fhir_user=f"Patient/{patient['id']}")
        [event] = of_request(await trail(client), "seen-by-smith")
        [user] = [a for a in event["agent"] if a["requestor"]]
        assert "network" not in user and "policy" not in user
        if expected is None:
            assert "who" not in user and "role" not in user
        elif shows == "names":
            assert user["who"] == {"reference": "Practitioner/smith"}
        else:
            assert user["who"] == expected
        caller["access"] = access("user/AuditEvent.rs", fhir_user="Practitioner/auditor", roles=("auditor",))
        [event] = of_request(await trail(client), "seen-by-smith")
        [user] = [a for a in event["agent"] if a["requestor"]]
        assert user["who"] == {"reference": "Practitioner/smith"} and user["network"]["address"] == "127.0.0.1"
