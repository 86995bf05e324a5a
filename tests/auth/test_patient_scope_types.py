"""Issue 27 items 2, 3 and 8: what a `patient/` token reaches beyond R4B's patient compartment, hop by hop.

CareLoop's patient compartment extends R4B's with the references that make a resource about a patient (Task,
Device, Binary); Subscriptions belong to the client that created it; definitional and directory content is
read-only under patient scopes and everything else is refused. Writes to what the token may not see answer
exactly like writes to a missing id. https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth.conftest import FHIR_JSON, World
from tests.auth.test_security_cases import forge, ids, issue
from tests.subscriptions.conftest import subscription

pytestmark = pytest.mark.anyio
BOB_PHONE = "+1-555-0199"
CRITERIA = "Observation?code=http://loinc.org|8867-4"  # an R4-style criteria: no topic needs seeding


def patient_bearer(world: World, who: str, scope: str = "patient/*.rs", client_id: str = "patient-app") -> dict[
        str, str]:
    """A patient-context token (signed by the server's key) with the JSON content type."""
    token = forge(world, scope=scope, patient=world.ids[who], client_id=client_id, sub=who,
                  fhirUser=f"Patient/{world.ids[who]}", jti=f"{who}-{client_id}-{scope}")
    return {**world.bearer(token), **FHIR_JSON}


async def create(world: World, resource: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    response = await world.client.post(f"/fhir/{resource['resourceType']}", json=resource,
                                       headers=headers or world.admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def task(patient: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": f"Patient/{patient}"}, **extra}


@pytest.fixture
async def stored(world: World) -> dict[str, str]:
    """Tasks, Devices, Binaries and a Subscription of alice's and bob's, as an EHR would store them."""
    alice, bob = world.ids["alice"], world.ids["bob"]
    await world.client.put(f"/fhir/Patient/{bob}", headers=world.admin, json={
        "resourceType": "Patient", "id": bob, "name": [{"family": "Beta", "given": ["Bob"]}],
        "telecom": [{"system": "phone", "value": BOB_PHONE}]})
    found = {
        "alice_task": await create(world, task(alice)),
        "bob_task": await create(world, task(bob)),
        "bob_owned_task": await create(world, task(alice, owner={"reference": f"Patient/{bob}"})),
        "alice_device": await create(world, {"resourceType": "Device", "patient": {"reference": f"Patient/{alice}"}}),
        "bob_device": await create(world, {"resourceType": "Device", "patient": {"reference": f"Patient/{bob}"}}),
        "alice_binary": await create(world, {"resourceType": "Binary", "contentType": "text/plain", "data": "QQ==",
                                             "securityContext": {"reference": f"Patient/{alice}"}}),
        "bob_binary": await create(world, {"resourceType": "Binary", "contentType": "text/plain", "data": "Qg==",
                                           "securityContext": {"reference": f"Patient/{bob}"}}),
        "subscription": await create(world, subscription("https://receiver.example.org/hook", topic=CRITERIA,
                                                         reason="EHR")),
    }
    performer = await create(world, {"resourceType": "Practitioner", "name": [{"family": "Bobsdoctor"}]})
    found["performer"] = performer
    found["bob_height"] = await create(world, {
        "resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org",
                                                                               "code": "8302-2"}]},
        "subject": {"reference": f"Patient/{bob}"}, "performer": [{"reference": f"Practitioner/{performer}"}],
        "valueQuantity": {"value": 173, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}})
    return found


async def test_tasks_of_another_patient_are_out_of_reach(world: World, stored: dict[str, str]) -> None:
    alice = patient_bearer(world, "alice")
    # a Task is about every patient it is for, owned by or requested by
    assert ids(await world.client.get("/fhir/Task", headers=alice)) == {stored["alice_task"], stored["bob_owned_task"]}
    for query in (f"patient={world.ids['bob']}", f"subject=Patient/{world.ids['bob']}",
                  f"owner=Patient/{world.ids['bob']}"):
        response = await world.client.get(f"/fhir/Task?{query}", headers=alice)
        assert response.status_code == 403 and issue(response) == "forbidden", query
    response = await world.client.get("/fhir?_type=Task", headers=alice)
    assert response.status_code == 403, response.text
    response = await world.client.get(f"/fhir/Task/{stored['bob_task']}", headers=alice)
    missing = await world.client.get("/fhir/Task/no-such-task", headers=alice)
    assert response.status_code == 404 and response.json()["issue"][0]["code"] == "not-found"
    assert response.json()["issue"][0]["diagnostics"].replace(stored["bob_task"], "X") == \
        missing.json()["issue"][0]["diagnostics"].replace("no-such-task", "X")
    # bob reaches the Task he owns, though it is for alice
    bob = patient_bearer(world, "bob")
    assert ids(await world.client.get("/fhir/Task", headers=bob)) == {stored["bob_task"], stored["bob_owned_task"]}


async def test_devices_and_binaries_follow_their_patient(world: World, stored: dict[str, str]) -> None:
    alice = patient_bearer(world, "alice")
    assert (await world.client.get(f"/fhir/Device/{stored['alice_device']}", headers=alice)).status_code == 200
    assert (await world.client.get(f"/fhir/Device/{stored['bob_device']}", headers=alice)).status_code == 404
    assert ids(await world.client.get("/fhir/Device", headers=alice)) == {stored["alice_device"]}
    assert (await world.client.get(f"/fhir/Binary/{stored['alice_binary']}", headers=alice)).status_code == 200
    assert (await world.client.get(f"/fhir/Binary/{stored['bob_binary']}", headers=alice)).status_code == 404


async def test_patient_everything_holds_the_extended_compartment(world: World, stored: dict[str, str]) -> None:
    alice = patient_bearer(world, "alice")
    response = await world.client.get(f"/fhir/Patient/{world.ids['alice']}/$everything", headers=alice)
    found = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in response.json()["entry"]}
    assert {f"Task/{stored['alice_task']}", f"Device/{stored['alice_device']}",
            f"Binary/{stored['alice_binary']}"} <= found
    assert not {f"Task/{stored['bob_task']}", f"Device/{stored['bob_device']}",
                f"Binary/{stored['bob_binary']}"} & found


async def test_subscriptions_belong_to_their_client(world: World, stored: dict[str, str]) -> None:
    alice = patient_bearer(world, "alice", "patient/*.cruds")
    sid = stored["subscription"]
    assert (await world.client.get(f"/fhir/Subscription/{sid}", headers=alice)).status_code == 404
    assert ids(await world.client.get("/fhir/Subscription", headers=alice)) == set()
    gone = await world.client.delete(f"/fhir/Subscription/{sid}", headers=alice)
    missing = await world.client.delete("/fhir/Subscription/no-such-one", headers=alice)
    assert gone.status_code == missing.status_code
    assert (await world.client.get(f"/fhir/Subscription/{sid}", headers=world.admin)).status_code == 200
    # a Subscription the app's client created is its own to read and delete, and nobody else's (patient apps
    # cannot subscribe to patient data themselves: notifications are not narrowed to a patient, so the app's
    # backend side creates it)
    scope = "system/Subscription.cruds system/Observation.rs"
    backend = {**world.bearer(forge(world, scope=scope, client_id="patient-app", jti="backend-of-patient-app")),
               **FHIR_JSON}
    own = await create(world, subscription("https://app.example.org/hook", topic=CRITERIA, reason="mine"), backend)
    assert ids(await world.client.get("/fhir/Subscription", headers=alice)) == {own}
    other_app = patient_bearer(world, "alice", "patient/*.cruds", client_id="another-app")
    assert (await world.client.get(f"/fhir/Subscription/{own}", headers=other_app)).status_code == 404
    assert (await world.client.delete(f"/fhir/Subscription/{own}", headers=alice)).status_code == 200


async def test_channel_headers_are_shown_masked_to_their_owner_only(world: World, stored: dict[str, str]) -> None:
    sid = stored["subscription"]
    own = (await world.client.get(f"/fhir/Subscription/{sid}", headers=world.admin)).json()
    assert own["channel"]["header"] == ["Authorization: ***"]
    other = {**world.bearer(await world.backend_token("system/Subscription.rs")), **FHIR_JSON}
    for response in (await world.client.get(f"/fhir/Subscription/{sid}", headers=other),
                     await world.client.get(f"/fhir/Subscription/{sid}/_history/1", headers=other)):
        assert response.status_code == 200 and "header" not in response.json()["channel"], response.text
    found = (await world.client.get("/fhir/Subscription", headers=other)).json()["entry"]
    assert all("header" not in e["resource"]["channel"] for e in found)
    assert "receiver-secret" not in (await world.client.get(f"/fhir/Subscription/{sid}/_history",
                                                            headers=other)).text
    # the owner writes back what it read: the secret it cannot see is kept, not replaced by the mask
    own["reason"] = "EHR, renamed"
    response = await world.client.put(f"/fhir/Subscription/{sid}", json=own, headers=world.admin)
    assert response.status_code == 200, response.text
    engine = world.app.state.services.repository
    stored_body = (await engine.store.read("Subscription", sid)).body
    assert b"Authorization: Bearer receiver-secret" in stored_body and b"***" not in stored_body


async def test_patient_writes_reach_only_their_own_compartment(world: World, stored: dict[str, str]) -> None:
    alice = patient_bearer(world, "alice", "patient/*.cruds")
    response = await world.client.post("/fhir/Task", json=task(world.ids["bob"]), headers=alice)
    assert response.status_code == 403 and issue(response) == "forbidden"
    assert (await world.client.post("/fhir/Task", json=task(world.ids["alice"]), headers=alice)).status_code == 201
    # deleting another patient's Task answers exactly like deleting a missing one, and deletes nothing
    other = await world.client.delete(f"/fhir/Task/{stored['bob_task']}", headers=alice)
    missing = await world.client.delete("/fhir/Task/no-such-task", headers=alice)
    assert (other.status_code, issue(other)) == (missing.status_code, issue(missing))
    assert (await world.client.get(f"/fhir/Task/{stored['bob_task']}", headers=world.admin)).status_code == 200


async def test_put_and_patch_of_another_patients_id_answer_like_a_missing_id(world: World,
                                                                             stored: dict[str, str]) -> None:
    alice = patient_bearer(world, "alice", "patient/*.cruds")
    bob_task, body = stored["bob_task"], task(world.ids["alice"])
    other = await world.client.put(f"/fhir/Task/{bob_task}", json={**body, "id": bob_task}, headers=alice)
    missing = await world.client.put("/fhir/Task/no-such-task", json={**body, "id": "no-such-task"}, headers=alice)
    assert (other.status_code, issue(other)) == (missing.status_code, issue(missing)) == (404, "not-found")
    patch = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    json_patch = {**alice, "content-type": "application/json-patch+json"}
    other = await world.client.patch(f"/fhir/Task/{bob_task}", json=patch, headers=json_patch)
    missing = await world.client.patch("/fhir/Task/no-such-task", json=patch, headers=json_patch)
    assert (other.status_code, issue(other)) == (missing.status_code, issue(missing)) == (404, "not-found")
    after = (await world.client.get(f"/fhir/Task/{bob_task}", headers=world.admin)).json()
    assert after["status"] == "requested" and after["for"]["reference"] == f"Patient/{world.ids['bob']}"


async def test_definitional_content_is_read_only_and_the_rest_refused(world: World) -> None:
    alice = patient_bearer(world, "alice", "patient/*.cruds")
    for resource in ({"resourceType": "PlanDefinition", "id": "evil-plan", "status": "active"},
                     {"resourceType": "ObservationDefinition", "id": "evil-od",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}},
                     {"resourceType": "SearchParameter", "id": "evil-sp", "url": "http://evil.example/sp",
                      "name": "evil", "status": "active", "description": "x", "code": "evil", "base": ["Patient"],
                      "type": "string", "expression": "Patient.name"}):
        kind = resource["resourceType"]
        response = await world.client.put(f"/fhir/{kind}/{resource['id']}", json=resource, headers=alice)
        assert response.status_code == 403 and issue(response) == "forbidden", response.text
        assert (await world.client.get(f"/fhir/{kind}/{resource['id']}", headers=world.admin)).status_code == 404
        assert (await world.client.get(f"/fhir/{kind}", headers=alice)).status_code == 200
    for kind in ("Bundle", "Linkage", "MessageHeader"):
        response = await world.client.get(f"/fhir/{kind}", headers=alice)
        assert response.status_code == 403 and issue(response) == "forbidden", kind
    assert (await world.client.get("/fhir/Practitioner", headers=alice)).status_code == 200


async def test_audit_events_are_append_only_and_not_written_by_patient_apps(world: World) -> None:
    event = {"resourceType": "AuditEvent", "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                    "code": "110110"},
             "recorded": "2026-01-01T00:00:00Z", "agent": [{"requestor": True, "who": {"display": "x"}}],
             "source": {"observer": {"display": "careloop"}},
             "entity": [{"what": {"reference": f"Patient/{world.ids['alice']}"}}]}
    alice = patient_bearer(world, "alice", "patient/*.cruds")
    response = await world.client.post("/fhir/AuditEvent", json=event, headers=alice)
    assert response.status_code == 403 and issue(response) == "forbidden"
    # issue 29: only the server (and registered audit sources) write the trail, so system/*.cruds may not either,
    # and reading it needs a scope that names AuditEvent; the events to change are the ones the server recorded
    response = await world.client.post("/fhir/AuditEvent", json=event, headers=world.admin)
    assert response.status_code == 403 and issue(response) == "forbidden"
    auditor = world.bearer(await world.backend_token("system/AuditEvent.rs"))
    found = (await world.client.get("/fhir/AuditEvent?_count=1", headers=auditor)).json()
    original = found["entry"][0]["resource"]
    aid = original["id"]
    for response in (
            await world.client.put(f"/fhir/AuditEvent/{aid}", json={**event, "id": aid}, headers=world.admin),
            await world.client.patch(f"/fhir/AuditEvent/{aid}", json=[{"op": "remove", "path": "/entity"}],
                                     headers={**world.admin, "content-type": "application/json-patch+json"}),
            await world.client.delete(f"/fhir/AuditEvent/{aid}", headers=world.admin),
            await world.client.delete(f"/fhir/AuditEvent?_id={aid}", headers=world.admin),
            await world.client.put("/fhir/AuditEvent/new-one", json={**event, "id": "new-one"}, headers=world.admin)):
        assert response.status_code == 405 and issue(response) == "not-supported", response.text
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"AuditEvent/{aid}"}}]}
    response = await world.client.post("/fhir", json=transaction, headers=world.admin)
    assert response.status_code == 405, response.text
    assert (await world.client.get(f"/fhir/AuditEvent/{aid}", headers=auditor)).json() == original
    metadata = (await world.client.get("/fhir/metadata")).json()
    audit = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} & {"update", "patch", "delete"} == set()
    assert audit["conditionalDelete"] == "not-supported"


async def test_chains_and_has_are_narrowed_at_every_hop(world: World, stored: dict[str, str]) -> None:
    alice = patient_bearer(world, "alice")
    assert ids(await world.client.get(f"/fhir/Task?patient.telecom={BOB_PHONE}", headers=alice)) == set()
    assert ids(await world.client.get(f"/fhir/Observation?subject.telecom={BOB_PHONE}", headers=alice)) == set()
    performer = stored["performer"]
    admin = await world.client.get("/fhir/Practitioner?_has:Observation:performer:value-quantity=173",
                                   headers=world.admin)
    assert performer in ids(admin)  # the oracle existed: an unrestricted caller finds bob's doctor by value
    for query in ("_has:Observation:performer:value-quantity=173",
                  f"_has:Observation:performer:subject.telecom={BOB_PHONE}"):
        response = await world.client.get(f"/fhir/Practitioner?{query}", headers=alice)
        assert response.status_code in (200, 403), response.text
        assert response.status_code == 403 or performer not in ids(response), query
    response = await world.client.get(
        f"/fhir/Practitioner?_has:Observation:performer:subject=Patient/{world.ids['bob']}", headers=alice)
    assert response.status_code == 403 or performer not in ids(response)
    # alice's own data is still found through the same hops
    mine = await world.client.get("/fhir/Observation?subject.name=Alpha&_summary=count", headers=alice)
    assert mine.json()["total"] == 2


async def test_total_counts_only_what_the_hops_allow(world: World, stored: dict[str, str]) -> None:
    alice = patient_bearer(world, "alice")
    response = await world.client.get("/fhir/Practitioner?_has:Observation:performer:code=8302-2&_total=accurate",
                                      headers=alice)
    assert response.json()["total"] == 0 and ids(response) == set()
    unrestricted = await world.client.get(
        "/fhir/Practitioner?_has:Observation:performer:code=8302-2&_total=accurate", headers=world.admin)
    assert unrestricted.json()["total"] == 1
