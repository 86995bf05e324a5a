"""A trainee sees de-identified records everywhere data leaves, may not search by what is hidden, and may not write.

Real HTTP through the ASGI app, real signed tokens (a user's token from the authorization-code flow, carrying the
`roles` claim), a real SQLite file. DOMAIN.md section 5; docs/deidentification.md.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from consent.access import Access, BoundGuard
from tests.auth.conftest import FHIR_JSON, World, _create, open_world
from tests.subscriptions.conftest import pain_score, subscription
from tests.support.receiver import running_receiver

pytestmark = pytest.mark.anyio
SCOPE = "openid fhirUser user/*.cruds"
# what must never reach a trainee: each is a direct identifier of Alice written below
SECRETS = ("Alpha", "Alice", "A-1", "555-0100", "alice@example.org", "Wensan", "Hangzhou", "310000", "1980-05-12",
           "iVBORw0KGgo", "narrative of", "husband", "Bob Beta")


@pytest.fixture
async def world(world: World) -> World:
    """The authorization tests' world (SQLite here, MongoDB under tests/conformance), with more of Alice."""
    alice = world.ids["alice"]
    # Alice with every kind of direct identifier, and a note naming people on one of her Observations
    rich = {"resourceType": "Patient", "id": alice, "gender": "female", "birthDate": "1980-05-12",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">narrative of "
                                                   "Alice Alpha</div>"},
            "name": [{"family": "Alpha", "given": ["Alice"]}],
            "identifier": [{"system": "urn:mrn", "value": "A-1"}],
            "telecom": [{"system": "phone", "value": "555-0100"},
                        {"system": "email", "value": "alice@example.org"}],
            "address": [{"line": ["1 Wensan Rd"], "city": "Hangzhou", "district": "Xihu", "state": "Zhejiang",
                         "postalCode": "310000", "country": "CN"}],
            "photo": [{"contentType": "image/png", "data": "iVBORw0KGgo="}],
            "contact": [{"name": {"family": "Beta", "given": ["Bob"]}, "telecom": [{"value": "555-0100"}]}]}
    response = await world.client.put(f"/fhir/Patient/{alice}", json=rich, headers=world.admin)
    assert response.status_code == 200, response.text
    world.ids["noted"] = await _create(world.client, world.admin, {
        "resourceType": "Observation", "status": "final", "code": {"text": "glucose"},
        "subject": {"reference": f"Patient/{alice}", "display": "Alice Alpha"},
        "identifier": [{"value": "A-1-LAB"}], "valueQuantity": {"value": 6.1, "unit": "mmol/L"},
        "note": [{"text": "her husband Bob Beta brought her in"}]})
    return world


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    found: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return found


async def _tokens(world: World, roles: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(clinician, with roles): drsmith's token from the code flow, and the same claims with `roles` added."""
    client_id, _ = world.app_client(SCOPE)
    token = (await world.authorize(client_id, SCOPE, "drsmith"))["access_token"]
    with_roles = world.auth.signer.sign({**_claims(token), "roles": roles}, "at+jwt")
    return ({**world.bearer(token), **FHIR_JSON}, {**world.bearer(with_roles), **FHIR_JSON})


def _url(query: str) -> str:
    return f"/fhir{query}" if query.startswith("?") else f"/fhir/{query}"


def _clean(text: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"leaked {leaked}: {text}"


def _redacted(resource: dict[str, Any]) -> bool:
    return {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED",
            "display": "redacted"} in resource.get("meta", {}).get("security", [])


async def test_read_vread_and_history_are_de_identified(world: World) -> None:
    clinician, trainee = await _tokens(world, ["trainee"])
    alice = world.ids["alice"]
    for url in (f"/fhir/Patient/{alice}", f"/fhir/Patient/{alice}/_history/2", f"/fhir/Patient/{alice}/_history",
                "/fhir/Patient/_history", f"/fhir/Observation/{world.ids['noted']}"):
        response = await world.client.get(url, headers=trainee)
        assert response.status_code == 200, (url, response.text)
        _clean(response.text)
        seen = await world.client.get(url, headers=clinician)
        assert seen.status_code == 200 and "Alpha" in seen.text, url  # the clinician sees what the trainee does not
    patient = (await world.client.get(f"/fhir/Patient/{alice}", headers=trainee)).json()
    assert patient["birthDate"] == "1980" and patient["gender"] == "female" and _redacted(patient)
    assert patient["address"] == [{"state": "Zhejiang", "country": "CN"}]
    assert not {"name", "identifier", "telecom", "photo", "text", "contact"} & set(patient)


async def test_search_include_revinclude_and_elements_are_de_identified(world: World) -> None:
    clinician, trainee = await _tokens(world, ["trainee"])
    alice = world.ids["alice"]
    for query in ("Patient?gender=female", f"Observation?subject=Patient/{alice}&_include=Observation:subject",
                  f"Patient?_id={alice}&_revinclude=Observation:subject", "Patient?_elements=name,identifier",
                  "Patient?_summary=true", "?_type=Patient,Observation"):
        response = await world.client.get(_url(query), headers=trainee)
        assert response.status_code == 200, (query, response.text)
        _clean(response.text)
        entries = response.json()["entry"]
        assert entries and all(_redacted(e["resource"]) for e in entries if e["resource"]["resourceType"] in (
            "Patient",) or e["resource"]["id"] == world.ids["noted"]), query
        seen = await world.client.get(_url(query), headers=clinician)
        assert "Alpha" in seen.text, query
        # de-identification changes what is shown, never which resources match
        assert [e["fullUrl"] for e in entries] == [e["fullUrl"] for e in seen.json()["entry"]], query


async def test_totals_and_counts_stay_exact(world: World) -> None:
    clinician, trainee = await _tokens(world, ["trainee"])
    for query in ("Patient?_summary=count", "Patient?gender=female&_total=accurate", "Patient?birthdate=1980"):
        mine = (await world.client.get(_url(query), headers=trainee)).json()
        theirs = (await world.client.get(_url(query), headers=clinician)).json()
        assert mine.get("total") == theirs.get("total") and mine.get("total", 1) >= 1, query
        assert len(mine.get("entry", [])) == len(theirs.get("entry", [])), query


async def test_everything_is_de_identified(world: World) -> None:
    clinician, trainee = await _tokens(world, ["trainee"])
    url = f"/fhir/Patient/{world.ids['alice']}/$everything"
    response = await world.client.get(url, headers=trainee)
    assert response.status_code == 200, response.text
    _clean(response.text)
    ids = {e["resource"]["id"] for e in response.json()["entry"]}
    assert {world.ids["alice"], world.ids["noted"], world.ids["alice_vital"]} <= ids
    seen = await world.client.get(url, headers=clinician)
    assert "Alpha" in seen.text and {e["resource"]["id"] for e in seen.json()["entry"]} == ids


async def test_batch_and_transaction_reads_are_de_identified(world: World) -> None:
    _, trainee = await _tokens(world, ["trainee"])
    alice = world.ids["alice"]
    for kind in ("batch", "transaction"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [
            {"request": {"method": "GET", "url": f"Patient/{alice}"}},
            {"request": {"method": "GET", "url": f"Patient/{alice}/_history/2"}},
            {"request": {"method": "GET", "url": f"Observation?subject=Patient/{alice}&_include=Observation:subject"}}]}
        response = await world.client.post("/fhir", json=bundle, headers=trainee)
        assert response.status_code == 200, response.text
        _clean(response.text)
        assert [e["response"]["status"] for e in response.json()["entry"]] == ["200 OK"] * 3


async def test_trainee_writes_are_refused_and_nothing_is_stored(world: World) -> None:
    _, trainee = await _tokens(world, ["trainee"])
    alice = world.ids["alice"]
    before = (await world.client.get("/fhir/Observation?_summary=count", headers=world.admin)).json()["total"]
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient/{alice}"}}
    patient = (await world.client.get(f"/fhir/Patient/{alice}", headers=world.admin)).json()
    attempts = [
        ("POST", "/fhir/Observation", obs, {}),
        ("POST", "/fhir/Observation", obs, {"If-None-Exist": "code=x"}),
        ("PUT", f"/fhir/Patient/{alice}", patient, {}),
        ("PUT", "/fhir/Observation?code=x", obs, {}),
        ("PATCH", f"/fhir/Patient/{alice}", [{"op": "replace", "path": "/gender", "value": "male"}],
         {"content-type": "application/json-patch+json"}),
        ("DELETE", f"/fhir/Observation/{world.ids['noted']}", None, {}),
        ("DELETE", "/fhir/Observation?code=x", None, {}),
        ("POST", "/fhir/Subscription", {"resourceType": "Subscription", "status": "requested", "reason": "x",
                                        "criteria": "Observation?", "channel": {"type": "rest-hook",
                                                                                "endpoint": "https://x.example"}}, {}),
        ("POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "Observation"}, "resource": obs}]}, {}),
        ("POST", "/fhir/$reindex?_type=Observation", None, {}),
    ]
    for method, url, body, headers in attempts:
        response = await world.client.request(method, url, headers={**trainee, **headers},
                                              content=orjson.dumps(body) if body is not None else None)
        assert response.status_code == 403, (method, url, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "forbidden"
        assert "trainee role" in outcome["issue"][0]["diagnostics"], outcome
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "POST", "url": "Observation"}, "resource": obs},
        {"request": {"method": "GET", "url": f"Observation/{world.ids['noted']}"}}]}
    response = await world.client.post("/fhir", json=batch, headers=trainee)
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["403 Forbidden", "200 OK"]
    after = (await world.client.get("/fhir/Observation?_summary=count", headers=world.admin)).json()["total"]
    assert after == before
    stored = (await world.client.get(f"/fhir/Patient/{alice}", headers=world.admin)).json()
    assert stored["gender"] == "female" and stored["meta"]["versionId"] == patient["meta"]["versionId"]


async def test_searches_by_hidden_identifiers_are_refused(world: World) -> None:
    clinician, trainee = await _tokens(world, ["trainee"])
    alice = world.ids["alice"]
    refused = ["Patient?identifier=urn:mrn|A-1", "Patient?name=Alice", "Patient?family=Alpha", "Patient?given=Al",
               "Patient?phonetic=Alis", "Patient?telecom=555-0100", "Patient?phone=555-0100",
               "Patient?email=alice@example.org", "Patient?address=Wensan", "Patient?address-city=Hangzhou",
               "Patient?address-postalcode=310000", "Patient?birthdate=1980-05-12", "Patient?birthdate=1980-05",
               "Patient?_sort=family", f"Observation?subject:Patient.name=Alice&subject=Patient/{alice}",
               "Observation?patient.identifier=A-1", "Patient?_has:Observation:patient:identifier=A-1-LAB",
               "?_type=Patient&identifier=A-1"]
    for query in refused:
        response = await world.client.get(_url(query), headers=trainee)
        assert response.status_code == 403, (query, response.text)
        assert response.json()["issue"][0]["code"] == "forbidden", query
        assert "de-identified view" in response.json()["issue"][0]["diagnostics"], query
        assert (await world.client.get(_url(query), headers=clinician)).status_code == 200, query
    post = await world.client.post("/fhir/Patient/_search", data={"name": "Alice"},
                                   headers={k: v for k, v in trainee.items() if k != "content-type"})
    assert post.status_code == 403, post.text
    inside = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?identifier=A-1"}}]}
    response = await world.client.post("/fhir", json=inside, headers=trainee)
    assert response.json()["entry"][0]["response"]["status"] == "403 Forbidden"
    for query in ("Patient?birthdate=1980", "Patient?birthdate=ge1970&birthdate=lt1990",
                  "Patient?address-state=Zhejiang", "Patient?gender=female"):
        response = await world.client.get(_url(query), headers=trainee)
        assert response.status_code == 200 and alice in response.text, (query, response.text)


async def test_a_clinician_pays_nothing_and_sees_the_stored_bytes(world: World) -> None:
    clinician, _ = await _tokens(world, [])
    _, other_role = await _tokens(world, ["clinician", "auditor"])
    alice = world.ids["alice"]
    stored = await world.client.get(f"/fhir/Patient/{alice}", headers=world.admin)
    for headers in (clinician, other_role):
        response = await world.client.get(f"/fhir/Patient/{alice}", headers=headers)
        assert response.content == stored.content  # not re-serialised: no redaction step ran
    # a trainee's reads of exempt types (the clinic's directory) are not rewritten either
    _, trainee = await _tokens(world, ["trainee"])
    clinic = await _create(world.client, world.admin, {"resourceType": "Organization", "name": "West Lake Clinic",
                                                       "telecom": [{"system": "phone", "value": "0571-1"}]})
    stored = await world.client.get(f"/fhir/Organization/{clinic}", headers=world.admin)
    assert (await world.client.get(f"/fhir/Organization/{clinic}", headers=trainee)).content == stored.content
    policy = world.app.state.services.policy
    assert not policy.deidentifies(Access(roles=("clinician",))) and policy.deidentifies(Access(roles=("trainee",)))
    # the guard a non-trainee request runs with redacts Subscriptions only: no other body is parsed or rewritten
    # Subscriptions (masked headers) and AuditEvents (a patient sees staff as the clinic configures) only
    assert BoundGuard(policy, Access(roles=("clinician",))).redacted_types == frozenset({"Subscription", "AuditEvent"})


async def test_the_roles_claim_may_be_a_string_and_is_never_ignored(world: World) -> None:
    _, trainee = await _tokens(world, "clinician trainee")
    url = f"/fhir/Patient/{world.ids['alice']}"
    _clean((await world.client.get(url, headers=trainee)).text)
    for bad in ({"trainee": True}, ["trainee", 1]):  # unreadable roles must not give the wider view: 401
        _, malformed = await _tokens(world, bad)
        response = await world.client.get(url, headers=malformed)
        assert response.status_code == 401 and response.json()["issue"][0]["code"] == "security", response.text


async def test_a_configured_profile_replaces_the_shipped_one(tmp_path: Path, seeded_database: Path) -> None:
    profile = tmp_path / "students.json"
    profile.write_text(orjson.dumps({"role": "student", "datatypes": {"HumanName": {"action": "initials"}},
                                     "refused_search_parameters": ["family"]}).decode())
    async with open_world(tmp_path, seeded_database, deidentify_profile=str(profile)) as world:
        _, student = await _tokens(world, ["student"])
        _, trainee = await _tokens(world, ["trainee"])
        patient = (await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=student)).json()
        assert patient["name"] == [{"given": ["A."], "family": "A."}] and patient["identifier"]
        assert (await world.client.get("/fhir/Patient?family=Alpha", headers=student)).status_code == 403
        # the shipped profile's role means nothing under another profile
        assert "Alpha" in (await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=trainee)).text


async def test_a_broken_profile_stops_the_server_at_start(tmp_path: Path, seeded_database: Path) -> None:
    profile = tmp_path / "broken.json"
    profile.write_text('{"role": "trainee", "elements": {"Patient": {"birthdate": "year"}}}')
    with pytest.raises(SystemExit, match="CARELOOP_DEIDENTIFY_PROFILE: elements.Patient.birthdate"):
        async with open_world(tmp_path, seeded_database, deidentify_profile=str(profile)):
            pass


async def test_subscription_events_and_the_subscription_itself_are_de_identified(
        tmp_path: Path, seeded_database: Path) -> None:
    # a trainee cannot own a Subscription (writes are refused); what they can reach of one is its $events
    # (each event's resource read again, as they may see it) and the Subscription resource
    async with running_receiver() as receiver, open_world(
            tmp_path, seeded_database, subscription_allowed_networks=["127.0.0.0/8"]) as world:
        _, trainee = await _tokens(world, ["trainee"])
        sub = subscription(receiver.url, contact=[{"system": "phone", "value": "555-0100"}])
        made = await world.client.post("/fhir/Subscription", json=sub, headers=world.admin)
        assert made.status_code == 201, made.text
        await receiver.wait_for("handshake")
        pain = {**pain_score(world.ids["alice"], 9), "note": [{"text": "Alice Alpha winced"}]}
        await _create(world.client, world.admin, pain)
        await receiver.wait_for("event-notification")
        sid = made.json()["id"]
        events = await world.client.get(f"/fhir/Subscription/{sid}/$events",
                                        params={"eventsSinceNumber": "1", "content": "full-resource"},
                                        headers=trainee)
        assert events.status_code == 200, events.text
        shown = [e["resource"] for e in events.json()["entry"][1:]]
        assert [r["resourceType"] for r in shown] == ["Observation"] and _redacted(shown[0])
        _clean(events.text)
        read = await world.client.get(f"/fhir/Subscription/{sid}", headers=trainee)
        assert read.status_code == 200 and "receiver-secret" not in read.text and "contact" not in read.json()
        _clean(read.text)
