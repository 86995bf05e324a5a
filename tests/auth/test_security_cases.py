"""SECURITY.md §5, the token and cross-patient cases 23 to 51, each its own test, through the ASGI app.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html, https://hl7.org/fhir/R4B/security.html
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.auth.conftest import BASE, FHIR, FHIR_JSON, World

pytestmark = pytest.mark.anyio


def issue(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["code"])


async def patient_token(world: World, who: str = "alice", scope: str = "launch/patient patient/*.rs") -> str:
    client_id, _ = world.app_client(scope)
    token: str = (await world.authorize(client_id, scope, who))["access_token"]
    return token


def forge(world: World, **claims: Any) -> str:
    """An access token signed with the server's own key, with claims changed."""
    now = int(time.time())
    base = {"iss": f"{BASE}/auth", "aud": FHIR, "sub": "x", "client_id": "x", "scope": "system/*.cruds",
            "iat": now, "exp": now + 600, "jti": "forged"}
    return world.auth.signer.sign({**base, **claims}, "at+jwt")


def ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


async def test_case_23_no_token(world: World) -> None:
    response = await world.client.get("/fhir/Patient")
    assert response.status_code == 401 and issue(response) == "login"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_case_24_forged_tokens(world: World) -> None:
    good = await world.backend_token("system/*.rs")
    header, payload, signature = good.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered = base64.urlsafe_b64encode(orjson.dumps({**claims, "scope": "system/*.cruds"})).rstrip(b"=").decode()
    unsigned_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    # the classic confusion attack: HMAC-signed with the server's public key as the secret
    public_pem = RSAKey.import_key(world.auth.signer.jwks()["keys"][0]).as_pem(private=False)
    hs_header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"at+jwt"}').rstrip(b"=").decode()
    mac = hmac.new(public_pem, f"{hs_header}.{payload}".encode(), hashlib.sha256).digest()
    hs256 = f"{hs_header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    for token in (f"{header}.{tampered}.{signature}", f"{unsigned_header}.{payload}.", hs256, "not-a-jwt"):
        response = await world.client.get("/fhir/Patient", headers=world.bearer(token))
        assert response.status_code == 401 and issue(response) == "security", token
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_case_25_expired_and_not_yet_valid(world: World) -> None:
    for token in (forge(world, exp=int(time.time()) - 120), forge(world, nbf=int(time.time()) + 3600)):
        response = await world.client.get("/fhir/Patient", headers=world.bearer(token))
        assert response.status_code == 401 and issue(response) == "expired"


async def test_case_26_other_audience_issuer_or_key(world: World) -> None:
    stranger = RSAKey.generate_key(2048, auto_kid=True)
    now = int(time.time())
    foreign = jwt.encode({"alg": "RS256", "kid": stranger.kid, "typ": "at+jwt", "jku": "https://evil.example/jwks"},
                         {"iss": f"{BASE}/auth", "aud": FHIR, "scope": "system/*.cruds", "exp": now + 600,
                          "jti": "x"}, stranger)
    for token in (forge(world, aud="https://other.example/fhir"), forge(world, iss="https://evil.example/auth"),
                  foreign):
        response = await world.client.get("/fhir/Patient", headers=world.bearer(token))
        assert response.status_code == 401 and issue(response) == "security"


async def test_case_27_revoked_access_token(world: World) -> None:
    record, secret = world.auth.add_client("backend", "confidential-symmetric", "system/*.rs", [])
    token = (await world.client.post("/auth/token", data={"grant_type": "client_credentials",
                                                          "scope": "system/*.rs"},
                                     auth=(record.client_id, secret or ""))).json()["access_token"]
    assert (await world.client.get("/fhir/Patient", headers=world.bearer(token))).status_code == 200
    await world.client.post("/auth/revoke", data={"token": token}, auth=(record.client_id, secret or ""))
    assert (await world.client.get("/fhir/Patient", headers=world.bearer(token))).status_code == 401


async def test_case_38_another_patients_resource_is_indistinguishable_from_absent(world: World) -> None:
    token = await patient_token(world)
    hidden = await world.client.get(f"/fhir/Observation/{world.ids['bob_vital']}", headers=world.bearer(token))
    absent = await world.client.get("/fhir/Observation/no-such-id", headers=world.bearer(token))
    assert hidden.status_code == absent.status_code == 404
    assert issue(hidden) == issue(absent) == "not-found"
    assert hidden.text.replace(world.ids["bob_vital"], "ID") == absent.text.replace("no-such-id", "ID")
    own = await world.client.get(f"/fhir/Observation/{world.ids['alice_vital']}", headers=world.bearer(token))
    assert own.status_code == 200


@pytest.mark.parametrize("query", ["Observation?patient={bob}", "Observation?subject=Patient/{bob}",
                                   "Patient?_id={bob}", "Observation?patient=does-not-exist",
                                   "Observation?subject=Patient/does-not-exist"])
async def test_case_39_naming_another_patient_is_forbidden(world: World, query: str) -> None:
    token = await patient_token(world)
    response = await world.client.get(f"/fhir/{query.format(bob=world.ids['bob'])}", headers=world.bearer(token))
    assert response.status_code == 403 and issue(response) == "forbidden"


async def test_case_40_search_without_a_patient_parameter_sees_only_the_own_compartment(world: World) -> None:
    token = await patient_token(world)
    found = await world.client.get("/fhir/Observation", params={"code": "8867-4"}, headers=world.bearer(token))
    assert ids(found) == {world.ids["alice_vital"], world.ids["alice_lab"]}
    own = await world.client.get("/fhir/Observation", params={"patient": world.ids["alice"]},
                                 headers=world.bearer(token))
    assert ids(own) == {world.ids["alice_vital"], world.ids["alice_lab"]}


async def test_case_41_included_resources_outside_the_compartment_are_omitted(world: World) -> None:
    token = await patient_token(world)
    response = await world.client.get("/fhir/Patient", params={"_revinclude": "Observation:focus"},
                                      headers=world.bearer(token))
    entries = response.json()["entry"]
    assert {e["resource"]["id"] for e in entries} == {world.ids["alice"]}  # Bob's Observation (focus Alice) omitted
    encounters = await world.client.get("/fhir/Encounter", params={"_revinclude": "Observation:encounter"},
                                        headers=world.bearer(token))
    assert {e["resource"]["id"] for e in encounters.json()["entry"]} == {world.ids["alice_enc"],
                                                                        world.ids["alice_vital"]}
    admin = await world.client.get("/fhir/Patient", params={"_revinclude": "Observation:focus",
                                                            "_id": world.ids["alice"]}, headers=world.admin)
    assert world.ids["bob_vital"] in {e["resource"]["id"] for e in admin.json()["entry"]}


async def test_case_42_chains_stay_inside_the_compartment(world: World) -> None:
    token = await patient_token(world)
    for query in ({"subject.name": "Beta"}, {"subject.identifier": "urn:mrn|B-2"}):
        assert ids(await world.client.get("/fhir/Observation", params=query, headers=world.bearer(token))) == set()
    assert ids(await world.client.get("/fhir/Observation", params={"subject.name": "Alpha"},
                                      headers=world.bearer(token))) == {world.ids["alice_vital"],
                                                                        world.ids["alice_lab"]}


async def test_case_43_has_needs_search_on_the_type_it_reaches(world: World) -> None:
    token = await patient_token(world, scope="launch/patient patient/Patient.rs")
    response = await world.client.get("/fhir/Patient", params={"_has:Observation:patient:code": "8867-4"},
                                      headers=world.bearer(token))
    assert response.status_code == 403 and issue(response) == "forbidden"
    chained = await world.client.get("/fhir/Patient", params={"_id": world.ids["alice"]},
                                     headers=world.bearer(token))
    assert ids(chained) == {world.ids["alice"]}


async def test_case_44_history_only_shows_own_versions(world: World) -> None:
    # an Observation that belonged to Bob in version 1 and to Alice in version 2
    moved = (await world.client.post("/fhir/Observation", headers=world.admin, json={
        "resourceType": "Observation", "status": "final", "code": {"text": "note"},
        "subject": {"reference": f"Patient/{world.ids['bob']}"}})).json()
    await world.client.put(f"/fhir/Observation/{moved['id']}", headers=world.admin, json={
        **moved, "subject": {"reference": f"Patient/{world.ids['alice']}"}})
    token = await patient_token(world)
    old = await world.client.get(f"/fhir/Observation/{moved['id']}/_history/1", headers=world.bearer(token))
    assert old.status_code == 404
    history = await world.client.get(f"/fhir/Observation/{moved['id']}/_history", headers=world.bearer(token))
    assert [e["response"]["etag"] for e in history.json()["entry"]] == ['W/"2"']
    for path in ("/fhir/Observation/_history", "/fhir/_history"):
        response = await world.client.get(path, headers=world.bearer(token))
        assert response.status_code == 403 and issue(response) == "forbidden"
    bob_only = await world.client.get(f"/fhir/Observation/{world.ids['bob_vital']}/_history",
                                      headers=world.bearer(token))
    assert bob_only.status_code == 404


async def test_case_45_everything_stays_in_the_compartment_and_the_granted_types(world: World) -> None:
    token = await patient_token(world)
    own = await world.client.get(f"/fhir/Patient/{world.ids['alice']}/$everything", headers=world.bearer(token))
    assert own.status_code == 200
    found = {e["resource"]["id"] for e in own.json()["entry"]}
    # alice's grant to the app is a Consent in her record (issue 28, item 6)
    grant = world.auth.signer.decode(token, "at+jwt", f"{BASE}/auth", FHIR)["grant"].removeprefix("Consent/")
    assert found == {world.ids[k] for k in ("alice", "alice_enc", "alice_vital", "alice_lab")} | {grant}
    other = await world.client.get(f"/fhir/Patient/{world.ids['bob']}/$everything", headers=world.bearer(token))
    assert other.status_code == 404
    observations_only = await patient_token(world, scope="launch/patient patient/Patient.r patient/Observation.rs")
    some = await world.client.get(f"/fhir/Patient/{world.ids['alice']}/$everything",
                                  headers=world.bearer(observations_only))
    assert {e["resource"]["resourceType"] for e in some.json()["entry"]} == {"Patient", "Observation"}
    no_patient_read = await patient_token(world, scope="launch/patient patient/Observation.rs")
    refused = await world.client.get(f"/fhir/Patient/{world.ids['alice']}/$everything",
                                     headers=world.bearer(no_patient_read))
    assert refused.status_code == 403 and issue(refused) == "forbidden"


async def test_case_46_transactions_are_all_or_nothing_and_batches_per_entry(world: World) -> None:
    token = await patient_token(world, scope="launch/patient patient/*.cruds")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "ok"},
                      "subject": {"reference": f"Patient/{world.ids['alice']}"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": f"Patient/{world.ids['bob']}"}}]}
    response = await world.client.post("/fhir", json=bundle, headers={**world.bearer(token), **FHIR_JSON})
    assert response.status_code == 404 and "Bundle.entry[1]" in response.text
    bundle["entry"][1] = {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                       "subject": {"reference": f"Patient/{world.ids['bob']}"}},
                          "request": {"method": "POST", "url": "Observation"}}
    response = await world.client.post("/fhir", json=bundle, headers={**world.bearer(token), **FHIR_JSON})
    assert response.status_code == 403 and "Bundle.entry[1]" in response.text
    mine = await world.client.get("/fhir/Observation", headers=world.bearer(token))
    assert len(ids(mine)) == 2  # nothing committed
    bundle["type"] = "batch"
    batch = await world.client.post("/fhir", json=bundle, headers={**world.bearer(token), **FHIR_JSON})
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("403")


async def test_case_47_writes_for_another_patient_are_forbidden(world: World) -> None:
    token = await patient_token(world, scope="launch/patient patient/Observation.cru")
    other = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
             "subject": {"reference": f"Patient/{world.ids['bob']}"}}
    created = await world.client.post("/fhir/Observation", json=other, headers={**world.bearer(token), **FHIR_JSON})
    assert created.status_code == 403 and issue(created) == "forbidden"
    current = (await world.client.get(f"/fhir/Observation/{world.ids['bob_vital']}", headers=world.admin)).json()
    current["subject"] = {"reference": f"Patient/{world.ids['alice']}"}
    takeover = await world.client.put(f"/fhir/Observation/{world.ids['bob_vital']}", json=current,
                                      headers={**world.bearer(token), **FHIR_JSON})
    # issue 27 item 8: another patient's id answers exactly like a missing id (no update-as-create either)
    missing = await world.client.put("/fhir/Observation/no-such-id", json={**current, "id": "no-such-id"},
                                     headers={**world.bearer(token), **FHIR_JSON})
    assert takeover.status_code == missing.status_code == 404 and issue(takeover) == issue(missing) == "not-found"
    device = await world.backend_token("system/Observation.c")
    refused = await world.client.post("/fhir/Observation", json=other, headers={**world.bearer(device), **FHIR_JSON})
    # issue 28 item 4: a device collects for a patient only with that patient's consent to collect
    assert refused.status_code == 403 and "Consent" in refused.text
    await consent_to_collect(world, world.ids["bob"], device)
    reading = await world.client.post("/fhir/Observation", json=other, headers={**world.bearer(device), **FHIR_JSON})
    assert reading.status_code == 201  # a system scope is not confined to one patient
    cannot_read = await world.client.get(f"/fhir/Observation/{reading.json()['id']}", headers=world.bearer(device))
    assert cannot_read.status_code == 403


async def consent_to_collect(world: World, patient: str, token: str) -> None:
    """Record the patient's consent that the client holding `token` collects Observations about them."""
    client_id = jwt_claims(token)["client_id"]
    consent = {"resourceType": "Consent", "status": "active", "scope": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"}, "policyRule": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "permit", "actor": [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"identifier": {"system": "http://careloop.health/fhir/sid/client-id", "value": client_id}}}],
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                    "code": "collect"}]}]}}
    response = await world.client.post("/fhir/Consent", json=consent, headers=world.admin)
    assert response.status_code == 201, response.text


def jwt_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT: what the client itself can read of its token."""
    payload = token.split(".")[1]
    return dict(orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def test_case_48_conditional_create_gives_no_existence_oracle(world: World) -> None:
    token = await patient_token(world, scope="launch/patient patient/*.cruds")
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "identifier": [{"system": "urn:reading", "value": "r-1"}],
                   "subject": {"reference": f"Patient/{world.ids['alice']}"}}
    hidden = {**observation, "subject": {"reference": f"Patient/{world.ids['bob']}"}}
    assert (await world.client.post("/fhir/Observation", json=hidden, headers=world.admin)).status_code == 201
    response = await world.client.post("/fhir/Observation", json=observation, headers={
        **world.bearer(token), **FHIR_JSON, "If-None-Exist": "identifier=urn:reading|r-1"})
    assert response.status_code == 201, response.text  # Bob's hidden match neither blocks nor is revealed


async def test_case_49_granular_scopes(world: World) -> None:
    scope = ("launch/patient patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
             "observation-category|vital-signs")
    token = await patient_token(world, scope=scope)
    assert ids(await world.client.get("/fhir/Observation", headers=world.bearer(token))) == {world.ids["alice_vital"]}
    labs = await world.client.get("/fhir/Observation", params={"category": "laboratory"}, headers=world.bearer(token))
    assert ids(labs) == set()
    lab = await world.client.get(f"/fhir/Observation/{world.ids['alice_lab']}", headers=world.bearer(token))
    assert lab.status_code == 404
    vital = await world.client.get(f"/fhir/Observation/{world.ids['alice_vital']}", headers=world.bearer(token))
    assert vital.status_code == 200
    both = (f"{scope} patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
            "observation-category|laboratory")
    union = await patient_token(world, scope=both)
    assert ids(await world.client.get("/fhir/Observation", headers=world.bearer(union))) == {
        world.ids["alice_vital"], world.ids["alice_lab"]}


async def test_case_50_a_type_without_scope_is_refused_before_any_data_access(world: World) -> None:
    token = await patient_token(world, scope="launch/patient patient/Observation.rs")
    for path in (f"/fhir/Condition?patient={world.ids['alice']}", "/fhir/Condition",
                 f"/fhir/Condition/{world.ids['bob_condition']}", "/fhir/Condition/no-such-id"):
        response = await world.client.get(path, headers=world.bearer(token))
        assert response.status_code == 403 and issue(response) == "forbidden", path
    v1 = await patient_token(world, scope="launch/patient patient/Observation.read")
    assert (await world.client.get("/fhir/Observation", headers=world.bearer(v1))).status_code == 200
    assert (await world.client.post("/fhir/Observation", json={}, headers={**world.bearer(v1), **FHIR_JSON})
            ).status_code == 403


async def test_case_51_totals_count_only_what_the_token_sees(world: World) -> None:
    token = await patient_token(world)
    counted = await world.client.get("/fhir/Observation", params={"_summary": "count"}, headers=world.bearer(token))
    assert counted.json()["total"] == 2
    accurate = await world.client.get("/fhir/Observation", params={"_total": "accurate"},
                                      headers=world.bearer(token))
    assert accurate.json()["total"] == 2
    everyone = await world.client.get("/fhir/Observation", params={"_summary": "count"}, headers=world.admin)
    assert everyone.json()["total"] == 3


async def test_system_search_needs_an_unlimited_scope(world: World) -> None:
    token = await patient_token(world)
    response = await world.client.get("/fhir", params={"_type": "Observation"}, headers=world.bearer(token))
    assert response.status_code == 403
    admin = await world.client.get("/fhir", params={"_type": "Patient,Practitioner"}, headers=world.admin)
    assert len(ids(admin)) == 3


@pytest.mark.parametrize(("scope", "status"), [
    ("system/Subscription.cruds system/Observation.rs", 201),
    ("system/Subscription.cruds system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
     "observation-category|laboratory", 422),
    ("system/Subscription.cruds", 403),
])
async def test_case_58_subscriptions_reach_only_what_the_token_may_search(world: World, scope: str,
                                                                          status: int) -> None:
    token = await world.backend_token(scope)
    subscription = {"resourceType": "Subscription", "status": "requested", "reason": "alerts",
                    "criteria": "Observation?code=http://loinc.org|72514-3",
                    "channel": {"type": "rest-hook", "endpoint": "https://receiver.example.org/hook"}}
    response = await world.client.post("/fhir/Subscription", content=orjson.dumps(subscription),
                                       headers={**world.bearer(token), **FHIR_JSON})
    assert response.status_code == status, response.text
    if status != 201:
        assert issue(response) == ("business-rule" if status == 422 else "forbidden")
        listed = await world.client.get("/fhir/Subscription", params={"criteria": subscription["criteria"]},
                                        headers=world.admin)
        assert "entry" not in listed.json()


async def test_cohort_operations_stay_inside_the_patient_context(world: World) -> None:
    token = await patient_token(world)
    headers = world.bearer(token)
    own = await world.client.get(f"/fhir/Patient/{world.ids['alice']}/$churn-risk", headers=headers)
    assert own.status_code == 200, own.text
    other = await world.client.get(f"/fhir/Patient/{world.ids['bob']}/$tier", headers=headers)
    assert other.status_code == 404 and issue(other) == "not-found"
    everyone = (await world.client.get("/fhir/Patient/$tier", headers=headers)).json()
    named = [p["part"][0]["valueReference"]["reference"] for p in everyone["parameter"] if p["name"] == "result"]
    assert named == [f"Patient/{world.ids['alice']}"]
