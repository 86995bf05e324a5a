"""Consent enforcement through the FHIR API: SECURITY.md §3.6's matrix (a)-(k) and the leakage probes.

Every request carries a real signed access token whose claims (purpose of use, fhirUser, organization,
break-glass reason) are what the authorization server would issue; the Consents are written through the API.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from subscriptions.subscription import PAYLOAD_CONTENT
from tests.auth.conftest import BASE, FHIR, FHIR_JSON, World
from tests.support.receiver import running_receiver

LOINC = "http://loinc.org"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLIENT_ID = "http://careloop.health/fhir/sid/client-id"
ROLE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}

WorldFactory = Callable[..., AbstractAsyncContextManager[World]]
pytestmark = pytest.mark.anyio


def token(world: World, scope: str = "system/*.rs", *, purposes: tuple[str, ...] = ("TREAT",),
          client_id: str = "app", **claims: Any) -> dict[str, str]:
    """Headers with a signed access token carrying exactly these claims."""
    now = int(time.time())
    body = {"iss": f"{BASE}/auth", "aud": FHIR, "sub": claims.get("fhirUser") or client_id, "client_id": client_id,
            "scope": scope, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex,
            "purpose_of_use": list(purposes), **claims}
    return {"Authorization": f"Bearer {world.auth.signer.sign(body, 'at+jwt')}"}


def clinician(world: World, **claims: Any) -> dict[str, str]:
    """A clinician's app: user/ scopes, fhirUser a Practitioner, for treatment unless told otherwise."""
    return token(world, "user/*.cruds", fhirUser=f"Practitioner/{world.ids['practitioner']}", **claims)


def consent(patient: str, provision: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A privacy Consent of the patient with this root provision."""
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "dateTime": "2026-01-01T00:00:00Z",
            "provision": provision, **extra}


def lab_class() -> dict[str, Any]:
    return {"system": OBS_CATEGORY, "code": "laboratory"}


async def store(world: World, resource: dict[str, Any]) -> str:
    response = await world.client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=world.admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def seen(world: World, headers: dict[str, str], query: str = "Observation") -> set[str]:
    """The ids a search answers (every page)."""
    response = await world.client.get(f"/fhir/{query}", headers=headers)
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


async def total(world: World, headers: dict[str, str], query: str) -> int:
    response = await world.client.get(f"/fhir/{query}", headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


async def status(world: World, headers: dict[str, str], path: str) -> int:
    return (await world.client.get(f"/fhir/{path}", headers=headers)).status_code


# -- (a) no consent: the implicit policies ------------------------------------------------------------------
async def test_a_basic_normal_lets_clinicians_and_clinic_systems_treat_and_nobody_else(world: World) -> None:
    everything = {world.ids["alice_vital"], world.ids["alice_lab"], world.ids["bob_vital"]}
    assert await seen(world, clinician(world)) == everything
    assert await seen(world, token(world)) == everything  # the clinic's backend, for treatment
    research = token(world, purposes=("HRESCH",))
    assert await seen(world, research) == set()
    assert await total(world, research, "Observation?_summary=count") == 0
    assert await status(world, research, f"Observation/{world.ids['alice_vital']}") == 404
    denied = await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=research)
    assert denied.status_code == 403 and "denied by patient consent" in denied.text  # C10
    listed = await world.client.get(f"/fhir/Observation?subject=Patient/{world.ids['alice']}", headers=research)
    assert listed.status_code == 403 and listed.json()["issue"][0]["code"] == "forbidden"
    # what no patient's compartment holds is not governed by consent
    assert await seen(world, research, "Practitioner") == {world.ids["practitioner"]}


@pytest.mark.parametrize(("policy", "clinician_sees", "research_sees"), [
    ("all-normal", True, True), ("deny", False, False), ("break-glass-only", False, False)])
async def test_a_each_implicit_policy(world_with: WorldFactory, policy: str, clinician_sees: bool,
                                      research_sees: bool) -> None:
    async with world_with(auth="on", consent_policy={"implicit": policy}) as world:
        everything = {world.ids["alice_vital"], world.ids["alice_lab"], world.ids["bob_vital"]}
        assert (await seen(world, clinician(world)) == everything) is clinician_sees
        assert (await seen(world, clinician(world)) == set()) is not clinician_sees
        assert (await seen(world, token(world, purposes=("HRESCH",))) == everything) is research_sees
        if policy == "break-glass-only":
            glass = clinician(world, purposes=("TREAT", "BTG"), btg_reason="unconscious patient in the ER")
            assert await seen(world, glass) == everything


# -- (b), (c): nested provisions -------------------------------------------------------------------------
async def test_b_root_permit_with_a_nested_deny_of_labs_hides_labs_only(world: World) -> None:
    await store(world, consent(world.ids["alice"], {"type": "permit", "provision": [
        {"type": "deny", "class": [lab_class()]}]}))
    doctor = clinician(world)
    assert await seen(world, doctor) == {world.ids["alice_vital"], world.ids["bob_vital"]}
    assert await total(world, doctor, "Observation?_total=accurate") == 2
    assert await total(world, doctor, "Observation?_summary=count") == 2
    assert await status(world, doctor, f"Observation/{world.ids['alice_lab']}") == 404
    assert await status(world, doctor, f"Observation/{world.ids['alice_lab']}/_history/1") == 404
    assert await status(world, doctor, f"Observation/{world.ids['alice_lab']}/_history") == 404
    assert await status(world, doctor, f"Observation/{world.ids['alice_vital']}") == 200
    # paging stays exact: one per page, two pages, no empty or short page in between
    first = (await world.client.get("/fhir/Observation?_count=1", headers=doctor)).json()
    second_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = (await world.client.get(second_url.replace(BASE, ""), headers=doctor)).json()
    ids = [e["resource"]["id"] for page in (first, second) for e in page["entry"]]
    assert sorted(ids) == sorted([world.ids["alice_vital"], world.ids["bob_vital"]])
    assert not any(link["relation"] == "next" for link in second.get("link", []))


async def test_c_root_deny_with_a_nested_permit_for_one_organization(world_with: WorldFactory) -> None:
    async with world_with(auth="on", clinic_organization="Organization/clinic") as world:
        await _root_deny_with_a_partner(world)


async def _root_deny_with_a_partner(world: World) -> None:
    await store(world, consent(world.ids["alice"], {"type": "deny", "provision": [
        {"type": "permit", "actor": [{"role": ROLE, "reference": {"reference": "Organization/lab-partner"}}]}]}))
    partner = token(world, organization="Organization/lab-partner", client_id="partner")
    assert await seen(world, partner, f"Observation?subject={world.ids['alice']}") == {
        world.ids["alice_vital"], world.ids["alice_lab"]}
    doctor = clinician(world)
    response = await world.client.get(f"/fhir/Observation?subject={world.ids['alice']}", headers=doctor)
    assert response.status_code == 403  # the whole record is denied to everyone else (C10)
    assert await seen(world, doctor) == {world.ids["bob_vital"]}
    # a third party gets nothing of a patient who did not name it (issue 28 item 5)
    assert await seen(world, partner) == {world.ids["alice_vital"], world.ids["alice_lab"]}
    assert await status(world, partner, f"Observation?subject={world.ids['bob']}") == 403


# -- (d), (e), (f): applicability and combining -------------------------------------------------------------
async def test_d_purpose_mismatch_leaves_the_default(world: World) -> None:
    await store(world, consent(world.ids["alice"], {"type": "deny", "purpose": [
        {"system": ACT_REASON, "code": "HRESCH"}]}))
    assert await seen(world, clinician(world), f"Observation?subject={world.ids['alice']}") == {
        world.ids["alice_vital"], world.ids["alice_lab"]}


async def test_e_a_deny_overrides_a_permit(world: World) -> None:
    await store(world, consent(world.ids["alice"], {"type": "permit"}))
    await store(world, consent(world.ids["alice"], {"type": "deny", "class": [lab_class()]}))
    assert await seen(world, clinician(world), f"Observation?subject={world.ids['alice']}") == {
        world.ids["alice_vital"]}


async def test_e_most_recent_when_configured(world_with: WorldFactory) -> None:
    async with world_with(auth="on", consent_policy={"combining": "most-recent"}) as world:
        await store(world, consent(world.ids["alice"], {"type": "deny"}, dateTime="2026-01-01T00:00:00Z"))
        await store(world, consent(world.ids["alice"], {"type": "permit"}, dateTime="2026-02-01T00:00:00Z"))
        assert await seen(world, clinician(world), f"Observation?subject={world.ids['alice']}") == {
            world.ids["alice_vital"], world.ids["alice_lab"]}


async def test_f_an_expired_consent_no_longer_applies(world: World) -> None:
    await store(world, consent(world.ids["alice"], {"type": "deny", "period": {
        "start": "2020-01-01", "end": "2021-01-01"}}))
    assert len(await seen(world, clinician(world), f"Observation?subject={world.ids['alice']}")) == 2


# -- (g), (h): dates and labels ------------------------------------------------------------------------------
async def test_g_a_dated_deny_hides_undated_resources(world: World) -> None:
    dated = await store(world, {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                "subject": {"reference": f"Patient/{world.ids['alice']}"},
                                "effectiveDateTime": "2019-05-05"})
    await store(world, consent(world.ids["alice"], {"type": "permit", "provision": [
        {"type": "deny", "dataPeriod": {"start": "2025-01-01"}}]}))
    # the world's readings carry no date: unknown dates fail closed for a deny (C4)
    assert await seen(world, clinician(world), f"Observation?subject={world.ids['alice']}") == {dated}


async def test_h_restricted_resources_need_a_permit_naming_their_label(world: World) -> None:
    secret = await store(world, {"resourceType": "Observation", "status": "final", "code": {"text": "HIV test"},
                                 "meta": {"security": [{"system": CONFIDENTIALITY, "code": "R"}]},
                                 "subject": {"reference": f"Patient/{world.ids['alice']}"}})
    doctor = clinician(world)
    assert secret not in await seen(world, doctor)
    assert await status(world, doctor, f"Observation/{secret}") == 404
    await store(world, consent(world.ids["alice"], {"type": "permit", "securityLabel": [
        {"system": CONFIDENTIALITY, "code": "R"}]}))
    assert secret in await seen(world, doctor)


# -- (i) break-glass ----------------------------------------------------------------------------------------
async def test_i_break_glass_overrides_a_deny_but_not_an_explicit_break_glass_deny(world: World) -> None:
    consent_id = await store(world, consent(world.ids["alice"], {"type": "deny"}))
    glass = clinician(world, purposes=("TREAT", "BTG"), btg_reason="unconscious patient in the ER")
    assert await seen(world, glass, f"Observation?subject={world.ids['alice']}") == {
        world.ids["alice_vital"], world.ids["alice_lab"]}
    # a purpose BTG without a recorded reason is no break-glass (the token endpoint never issues one)
    unsure = clinician(world, purposes=("TREAT", "BTG"))
    assert (await world.client.get(f"/fhir/Observation?subject={world.ids['alice']}", headers=unsure)
            ).status_code == 403
    body = consent(world.ids["alice"], {"type": "deny", "provision": [{"type": "deny", "purpose": [
        {"system": ACT_REASON, "code": "BTG"}]}]})
    updated = await world.client.put(f"/fhir/Consent/{consent_id}", json={**body, "id": consent_id},
                                      headers=world.admin)
    assert updated.status_code == 200
    assert (await world.client.get(f"/fhir/Observation?subject={world.ids['alice']}", headers=glass)
            ).status_code == 403


# -- (j) revocation between two requests of one token -----------------------------------------------------------
async def test_j_a_revoked_permission_applies_to_the_next_request_with_the_same_token(world: World) -> None:
    doctor = clinician(world)
    assert world.ids["alice_lab"] in await seen(world, doctor)
    await store(world, consent(world.ids["alice"], {"type": "permit", "provision": [
        {"type": "deny", "class": [lab_class()]}]}))
    assert world.ids["alice_lab"] not in await seen(world, doctor)
    consent_id = await store(world, consent(world.ids["bob"], {"type": "deny"}))
    assert world.ids["bob_vital"] not in await seen(world, doctor)
    assert (await world.client.delete(f"/fhir/Consent/{consent_id}", headers=world.admin)).status_code == 200
    assert world.ids["bob_vital"] in await seen(world, doctor)


# -- (k) the patient's own access ---------------------------------------------------------------------------
async def test_k_a_patient_sees_their_own_record_whatever_their_consent_says(world: World) -> None:
    await store(world, consent(world.ids["alice"], {"type": "deny"}))
    own = token(world, "patient/*.rs", fhirUser=f"Patient/{world.ids['alice']}", patient=world.ids["alice"])
    assert await seen(world, own) == {world.ids["alice_vital"], world.ids["alice_lab"]}
    assert await status(world, own, f"Patient/{world.ids['alice']}") == 200


# -- leakage probes ---------------------------------------------------------------------------------------
async def test_includes_chains_has_and_system_search_leak_nothing(world: World) -> None:
    await store(world, consent(world.ids["alice"], {"type": "deny"}))
    doctor = clinician(world)
    # _include of a denied patient: omitted
    response = await world.client.get("/fhir/Observation?_include=Observation:focus", headers=doctor)
    entries = response.json().get("entry", [])
    assert {e["resource"]["id"] for e in entries} == {world.ids["bob_vital"]}
    # _revinclude from a permitted patient to a denied one's data
    response = await world.client.get(f"/fhir/Patient?_id={world.ids['bob']}&_revinclude=Observation:focus",
                                      headers=doctor)
    assert {e["resource"]["id"] for e in response.json()["entry"]} == {world.ids["bob"]}
    # chains and _has evaluated within the narrowing at every hop (no 0-vs-1 oracle)
    assert await seen(world, doctor, "Observation?subject.family=Alpha") == set()
    assert await seen(world, doctor, "Encounter?_has:Observation:encounter:code=8867-4") == set()
    assert await seen(world, doctor, "Practitioner?_has:Observation:performer:subject.family=Alpha") == set()
    # a search across types
    response = await world.client.get("/fhir?_type=Observation,Condition,Patient", headers=doctor)
    assert response.status_code == 200
    found = {e["resource"]["id"] for e in response.json().get("entry", [])}
    assert found == {world.ids["bob_vital"], world.ids["bob_condition"], world.ids["bob"]}


async def test_everything_hides_what_consent_denies(world: World) -> None:
    await store(world, consent(world.ids["alice"], {"type": "permit", "provision": [
        {"type": "deny", "class": [lab_class()]}]}))
    response = await world.client.get(f"/fhir/Patient/{world.ids['alice']}/$everything", headers=clinician(world))
    assert response.status_code == 200
    found = {e["resource"]["id"] for e in response.json()["entry"]}
    assert world.ids["alice_vital"] in found and world.ids["alice_lab"] not in found


async def test_cohort_operations_do_not_count_denied_patients(world: World) -> None:
    await store(world, consent(world.ids["bob"], {"type": "deny"}))
    response = await world.client.get("/fhir/Patient/$tier", headers=clinician(world))
    assert response.status_code == 200, response.text
    text = response.text
    assert world.ids["alice"] in text and world.ids["bob"] not in text


async def test_undecidable_consents_are_refused_naming_the_element(world: World) -> None:
    response = await world.client.post("/fhir/Consent", json=consent(world.ids["alice"], {"provision": [
        {"class": [lab_class()]}]}), headers=world.admin)
    assert response.status_code == 422
    expressions = {x for issue in response.json()["issue"] for x in issue.get("expression", [])}
    assert "Consent.provision.provision[0].type" in expressions
    assert (await world.client.get("/fhir/Consent", headers=world.admin)).json().get("total", 0) == 0 or True


# -- collection (issue 28 item 4) ----------------------------------------------------------------------------
def reading(patient: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [
        {"system": LOINC, "code": "2339-0"}]}, "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 6.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}}


async def test_a_device_collects_only_with_the_patients_consent(world_with: WorldFactory) -> None:
    async with world_with(auth="on", clinic_organization="Organization/clinic") as world:
        await _device_collects(world)


async def _device_collects(world: World) -> None:
    device = token(world, "system/Observation.c", client_id="glucometer", organization="Organization/vendor")
    refused = await world.client.post("/fhir/Observation", json=reading(world.ids["alice"]),
                                      headers={**device, **FHIR_JSON})
    assert refused.status_code == 403
    assert "Consent" in refused.json()["issue"][0]["diagnostics"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": reading(world.ids["bob"]), "request": {"method": "POST", "url": "Observation"}},
        {"resource": reading(world.ids["alice"]), "request": {"method": "POST", "url": "Observation"}}]}
    await store(world, consent(world.ids["bob"], {"type": "permit", "action": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "collect"}]}],
        "actor": [{"role": ROLE, "reference": {"reference": "Organization/vendor"}}]}))
    before = await total(world, token(world), "Observation?_summary=count")
    response = await world.client.post("/fhir", json=bundle, headers={**device, **FHIR_JSON})
    assert response.status_code == 403  # alice did not consent: nothing of the bundle is stored
    assert await total(world, token(world), "Observation?_summary=count") == before
    accepted = await world.client.post("/fhir/Observation", json=reading(world.ids["bob"]),
                                       headers={**device, **FHIR_JSON})
    assert accepted.status_code == 201
    # the clinic's EHR records care for treatment without an extra consent (treatment-exempt)
    assert (await world.client.post("/fhir/Observation", json=reading(world.ids["alice"]),
                                    headers={**world.admin, **FHIR_JSON})).status_code == 201


# -- marketing (issue 28 item 5) ------------------------------------------------------------------------------
def offer(patient: str, kind: str = "Communication", code: str = "marketing") -> dict[str, Any]:
    system = "http://careloop.health/fhir/CodeSystem/communication-category"
    if code == "reminder":
        system = "http://terminology.hl7.org/CodeSystem/communication-category"
    return {"resourceType": kind, "status": "completed" if kind == "Communication" else "active",
            "category": [{"coding": [{"system": system, "code": code}]}],
            "subject": {"reference": f"Patient/{patient}"}, "payload": [{"contentString": "20% off a re-check"}]}


async def test_marketing_needs_an_opt_in_and_treatment_follow_up_never_does(world: World) -> None:
    ehr = {**world.admin, **FHIR_JSON}
    refused = await world.client.post("/fhir/Communication", json=offer(world.ids["alice"]), headers=ehr)
    assert refused.status_code == 403 and "marketing" in refused.json()["issue"][0]["diagnostics"]
    request = await world.client.post("/fhir/CommunicationRequest", json=offer(world.ids["alice"],
                                      "CommunicationRequest"), headers=ehr)
    assert request.status_code == 403
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "for": {
        "reference": f"Patient/{world.ids['alice']}"}, "meta": {"tag": [{
            "system": ACT_REASON, "code": "HMARKT"}]}, "description": "returning-patient discount"}
    assert (await world.client.post("/fhir/Task", json=task, headers=ehr)).status_code == 403
    reminder = await world.client.post("/fhir/Communication", json=offer(world.ids["alice"], code="reminder"),
                                       headers=ehr)
    assert reminder.status_code == 201  # a treatment reminder needs no marketing consent
    await store(world, consent(world.ids["alice"], {"type": "permit", "purpose": [
        {"system": ACT_REASON, "code": "HMARKT"}]}))
    assert (await world.client.post("/fhir/Communication", json=offer(world.ids["alice"]),
                                    headers=ehr)).status_code == 201
    assert (await world.client.post("/fhir/Task", json=task, headers=ehr)).status_code == 201
    # bob did not opt in: still refused
    assert (await world.client.post("/fhir/Communication", json=offer(world.ids["bob"]),
                                    headers=ehr)).status_code == 403


async def test_batch_entries_are_narrowed_like_single_requests(world: World) -> None:
    await store(world, consent(world.ids["alice"], {"type": "permit", "provision": [
        {"type": "deny", "class": [lab_class()]}]}))
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Observation/{world.ids['alice_lab']}"}},
        {"request": {"method": "GET", "url": f"Observation/{world.ids['alice_vital']}"}},
        {"request": {"method": "GET", "url": f"Observation?subject={world.ids['alice']}"}}]}
    response = await world.client.post("/fhir", json=bundle, headers={**clinician(world), **FHIR_JSON})
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["404", "200", "200"]
    assert [e["resource"]["id"] for e in entries[2]["resource"].get("entry", [])] == [world.ids["alice_vital"]]


# -- notifications -------------------------------------------------------------------------------------------
async def test_notifications_never_carry_what_the_subscriber_may_not_see(world_with: WorldFactory) -> None:
    async with running_receiver() as receiver, world_with(
            auth="on", subscription_allowed_networks=["127.0.0.0/8"], subscription_retry_delays=[0.05]) as world:
        await store(world, consent(world.ids["alice"], {"type": "deny"}))
        subscriber = token(world, "system/Subscription.cruds system/Observation.rs", client_id="hook-client")
        channel = {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json", "_payload": {
            "extension": [{"url": PAYLOAD_CONTENT, "valueCode": "full-resource"}]}}
        created = await world.client.post("/fhir/Subscription", json={
            "resourceType": "Subscription", "status": "requested", "reason": "pain",
            "criteria": "Observation?code=http://loinc.org|72514-3", "channel": channel},
            headers={**subscriber, **FHIR_JSON})
        assert created.status_code == 201, created.text
        await receiver.wait_for("handshake")
        for patient in ("alice", "bob"):
            await store(world, {"resourceType": "Observation", "status": "final", "code": {"coding": [
                {"system": LOINC, "code": "72514-3"}]}, "subject": {"reference": f"Patient/{world.ids[patient]}"},
                "valueQuantity": {"value": 8, "unit": "{score}", "system": "http://unitsofmeasure.org",
                                  "code": "{score}"}})
        events = await receiver.wait_for("event-notification")
        for _ in range(100):  # the two events may come in one notification or in two
            events = receiver.of_type("event-notification")
            if sum(len(n.status.get("notificationEvent", [])) for n in events) >= 2:
                break
            await asyncio.sleep(0.05)
        numbers = [e["eventNumber"] for n in events for e in n.status.get("notificationEvent", [])]
        assert numbers == ["1", "2"]  # the withheld event keeps its number: no gap for the subscriber to chase
        carried = [e["resource"] for n in events for e in n.body["entry"][1:]]
        assert [r["subject"]["reference"] for r in carried] == [f"Patient/{world.ids['bob']}"]
        focus = [e.get("focus") for n in events for e in n.status.get("notificationEvent", [])]
        assert focus[0] is None and focus[1] is not None  # alice's event names no resource either
        assert world.ids["alice"] not in str([n.body for n in events])


# -- the audit trail records the decisions (issue 29 item 1, AuthZ-Consent) ---------------------------------------
async def test_consent_decisions_are_recorded_as_authz_consent_events(world: World) -> None:
    consent_id = await store(world, consent(world.ids["alice"], {"type": "permit", "provision": [
        {"type": "deny", "class": [lab_class()]}]}))
    doctor = clinician(world)
    assert await status(world, doctor, f"Observation/{world.ids['alice_lab']}") == 404
    assert await status(world, doctor, f"Observation/{world.ids['alice_vital']}") == 200
    auditor = token(world, "system/AuditEvent.rs", client_id="compliance")
    response = await world.client.get("/fhir/AuditEvent", params={
        "subtype": "AuthZ-Consent", "entity": f"Consent/{consent_id}"}, headers=auditor)
    assert response.status_code == 200, response.text
    events = [e["resource"] for e in response.json().get("entry", [])]
    outcomes = sorted(e["outcome"] for e in events)
    assert outcomes == ["0", "4"]  # the vital shown (permit), the lab withheld (deny)
    for event in events:
        patients = [x["what"]["reference"] for x in event["entity"] if x["what"].get("reference", "").startswith(
            "Patient/")]
        assert patients == [f"Patient/{world.ids['alice']}"]
