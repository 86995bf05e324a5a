"""A patient's SMART grant is a Consent (issue 28, item 6): written when the patient authorizes an app, listed by
the patient, and revoked by making it inactive or deleting it, which stops the app's unexpired tokens at once.

https://hl7.org/fhir/R4B/consent.html, https://hl7.org/fhir/smart-app-launch/app-launch.html
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.auth.grants import CLIENT_ID_SYSTEM, provisions
from server.settings import Settings
from tests.auth.conftest import BASE, FHIR, REDIRECT, World, _create, build_world, open_world

pytestmark = pytest.mark.anyio
APP = "launch/patient openid fhirUser offline_access patient/Observation.rs patient/Patient.r"
PORTAL = "launch/patient openid fhirUser patient/Consent.rus patient/Patient.r"
PATCH = {"content-type": "application/json-patch+json"}
LOINC = "http://loinc.org|59284-0"


def claims(world: World, token: str) -> dict[str, Any]:
    found: dict[str, Any] = world.auth.signer.decode(token, "at+jwt", f"{BASE}/auth", FHIR)
    return found


async def authorized(world: World, scope: str = APP, who: str = "alice",
                     client_id: str | None = None) -> tuple[str, dict[str, Any]]:
    client_id = client_id or world.app_client(scope)[0]
    return client_id, await world.authorize(client_id, scope, who)


async def _consent(world: World, reference: str) -> dict[str, Any]:
    response = await world.client.get(f"/fhir/{reference}", headers=world.admin)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_authorizing_an_app_writes_a_consent_naming_the_app_and_the_granted_types(world: World) -> None:
    client_id, token = await authorized(world)
    grant = claims(world, token["access_token"])["grant"]
    consent = await _consent(world, grant)
    assert consent["status"] == "active"
    assert consent["scope"]["coding"][0]["code"] == "patient-privacy"
    assert {"system": "http://loinc.org", "code": "59284-0"}.items() <= consent["category"][0]["coding"][0].items()
    assert consent["patient"] == {"reference": f"Patient/{world.ids['alice']}"}
    assert consent["performer"] == [{"reference": f"Patient/{world.ids['alice']}"}]
    assert consent["dateTime"]
    root = consent["provision"]
    assert root["type"] == "permit"
    assert root["actor"][0]["reference"]["identifier"] == {"system": CLIENT_ID_SYSTEM, "value": client_id}
    assert [p["code"] for p in root["purpose"]] == ["TREAT"]
    # offline_access: the grant lasts as long as its refresh tokens may (90 days)
    assert _days(root["period"]) == 90
    nested = {p["class"][0]["code"]: [a["coding"][0]["code"] for a in p["action"]] for p in root["provision"]}
    assert nested == {"Observation": ["access"], "Patient": ["access"]}
    assert all(p["type"] == "permit" for p in root["provision"])


def _days(period: dict[str, str]) -> float:
    start, end = (datetime.fromisoformat(period[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return (end - start).total_seconds() / 86400


async def test_a_grant_without_refresh_lasts_as_long_as_its_access_token(world: World) -> None:
    scope = "launch/patient openid patient/Observation.rs"
    _, token = await authorized(world, scope)
    consent = await _consent(world, claims(world, token["access_token"])["grant"])
    assert _days(consent["provision"]["period"]) * 24 == pytest.approx(1)


def test_scope_to_provision_mapping() -> None:
    known = frozenset({"Observation", "Patient", "Consent"})
    cases = [
        ("patient/Observation.rs", [("Observation", ["access"])]),
        ("patient/Observation.cruds", [("Observation", ["access", "collect", "correct"])]),
        ("patient/Observation.c patient/Observation.r", [("Observation", ["access", "collect"])]),
        ("patient/Consent.u", [("Consent", ["correct"])]),
        ("patient/Observation.d", [("Observation", ["correct"])]),
        ("patient/*.rs", [(None, ["access"])]),
        ("patient/Patient.read openid launch/patient", [("Patient", ["access"])]),
        ("openid fhirUser", []),
    ]
    for scope, expected in cases:
        found = [((p["class"][0]["code"] if "class" in p else None), [a["coding"][0]["code"] for a in p["action"]])
                 for p in provisions(scope, known)]
        assert found == expected, scope


async def test_the_patient_lists_their_grants_with_patient_scopes(world: World) -> None:
    _, first = await authorized(world)
    _, portal = await authorized(world, PORTAL)
    listed = await world.client.get("/fhir/Consent", params={"patient": world.ids["alice"], "category": LOINC},
                                    headers=world.bearer(portal["access_token"]))
    assert listed.status_code == 200, listed.text
    ids = {f"Consent/{e['resource']['id']}" for e in listed.json()["entry"]}
    assert ids == {claims(world, first["access_token"])["grant"], claims(world, portal["access_token"])["grant"]}
    # another patient's grants are not hers to list
    other = await world.client.get("/fhir/Consent", params={"patient": world.ids["bob"], "category": LOINC},
                                   headers=world.bearer(portal["access_token"]))
    assert other.status_code == 403


async def test_making_the_grant_inactive_revokes_the_apps_tokens_at_once(world: World) -> None:
    _, app = await authorized(world)
    _, portal = await authorized(world, PORTAL)
    grant = claims(world, app["access_token"])["grant"]
    alice = world.bearer(app["access_token"])
    assert (await world.client.get(f"/fhir/Observation/{world.ids['alice_vital']}", headers=alice)).status_code == 200
    patched = await world.client.patch(f"/fhir/{grant}", headers={**world.bearer(portal["access_token"]), **PATCH},
                                       json=[{"op": "replace", "path": "/status", "value": "inactive"}])
    assert patched.status_code == 200, patched.text
    refused = await world.client.get(f"/fhir/Observation/{world.ids['alice_vital']}", headers=alice)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert "revoked this app's access" in refused.json()["issue"][0]["diagnostics"]
    # its refresh token stops working too, and introspection calls both inactive
    refreshed = await world.client.post("/auth/token", data={"grant_type": "refresh_token",
                                                             "refresh_token": app["refresh_token"]})
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    # the portal's own grant is another Consent: it goes on working
    assert (await world.client.get(f"/fhir/{grant}", headers=world.bearer(portal["access_token"]))).status_code == 200


async def test_the_app_revoking_its_own_grant_with_put_stops_the_same_token(world: World) -> None:
    scope = "launch/patient openid fhirUser patient/Consent.rus patient/Observation.rs"
    _, app = await authorized(world, scope)
    token = world.bearer(app["access_token"])
    grant = claims(world, app["access_token"])["grant"]
    current = (await world.client.get(f"/fhir/{grant}", headers=token)).json()
    updated = await world.client.put(f"/fhir/{grant}", headers={**token, "content-type": "application/fhir+json"},
                                     json={**current, "status": "rejected"})
    assert updated.status_code == 200, updated.text
    assert (await world.client.get("/fhir/Observation", headers=token)).status_code == 401


async def test_deleting_the_grant_revokes_it_and_reauthorizing_updates_the_same_consent(world: World) -> None:
    client_id, app = await authorized(world)
    grant = claims(world, app["access_token"])["grant"]
    deleted = await world.client.delete(f"/fhir/{grant}", headers=world.admin)
    assert deleted.status_code in (200, 204)
    assert (await world.client.get("/fhir/Observation", headers=world.bearer(app["access_token"]))).status_code == 401
    introspected = await world.client.post("/auth/introspect", data={"token": app["access_token"]},
                                           auth=await _gateway(world))
    assert introspected.json() == {"active": False}
    # the patient authorizes the same app again: the same Consent, active again, and the new token works
    _, again = await authorized(world, client_id=client_id)
    assert claims(world, again["access_token"])["grant"] == grant
    consent = await _consent(world, grant)
    assert consent["status"] == "active" and consent["meta"]["versionId"] == "3"
    fresh = await world.client.get("/fhir/Observation", headers=world.bearer(again["access_token"]))
    assert fresh.status_code == 200
    # the token of the revoked version stays revoked
    assert (await world.client.get("/fhir/Observation", headers=world.bearer(app["access_token"]))).status_code == 401


async def test_reauthorizing_an_active_grant_updates_it_and_keeps_earlier_tokens(world: World) -> None:
    client_id, first = await authorized(world)
    _, second = await authorized(world, client_id=client_id)
    grant = claims(world, first["access_token"])["grant"]
    assert claims(world, second["access_token"])["grant"] == grant
    assert (await _consent(world, grant))["meta"]["versionId"] == "2"
    for token in (first, second):
        assert (await world.client.get("/fhir/Observation", headers=world.bearer(token["access_token"]))).status_code \
            == 200


async def _gateway(world: World) -> tuple[str, str]:
    record, secret = world.auth.add_client("gateway", "confidential-symmetric", "system/*.rs", [],
                                           resource_server=True)
    return record.client_id, secret or ""


async def test_a_related_person_grant_names_them_as_performer(world: World) -> None:
    carer = await _create(world.client, world.admin, {"resourceType": "RelatedPerson", "patient": {
        "reference": f"Patient/{world.ids['alice']}"}})
    world.auth.store.add_user("carer", "secret", f"RelatedPerson/{carer}")
    client_id, _ = world.app_client(APP)
    token = await world.authorize(client_id, APP, "carer", patient=world.ids["alice"])
    consent = await _consent(world, claims(world, token["access_token"])["grant"])
    assert consent["patient"] == {"reference": f"Patient/{world.ids['alice']}"}
    assert consent["performer"] == [{"reference": f"RelatedPerson/{carer}"}]


async def test_a_clinician_authorizing_an_app_records_no_grant(world: World) -> None:
    before = await world.client.get("/fhir/Consent", params={"_summary": "count"}, headers=world.admin)
    scope = "launch/patient openid fhirUser user/Patient.rs user/Observation.rs"
    client_id, _ = world.app_client(scope)
    token = await world.authorize(client_id, scope, "drsmith", patient=world.ids["alice"])
    assert "grant" not in claims(world, token["access_token"])
    after = await world.client.get("/fhir/Consent", params={"_summary": "count"}, headers=world.admin)
    assert after.json()["total"] == before.json()["total"]


async def test_a_revocation_outlives_a_restart(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        _, app = await authorized(world)
        grant = claims(world, app["access_token"])["grant"]
        assert (await world.client.delete(f"/fhir/{grant}", headers=world.admin)).status_code in (200, 204)
    # the same files, a new process: the revocation was written to the auth file
    settings = Settings(sqlite_path=str(tmp_path / "fhir.db"), validation_workers=0, base_url=FHIR)
    async with build_world(create_app(settings)) as again:
        response = await again.client.get("/fhir/Observation", headers=again.bearer(app["access_token"]))
        assert response.status_code == 401
        refreshed = await again.client.post("/auth/token", data={"grant_type": "refresh_token",
                                                                 "refresh_token": app["refresh_token"]})
        assert refreshed.json()["error"] == "invalid_grant"


async def test_an_authorize_error_writes_no_grant(world: World) -> None:
    client_id, _ = world.app_client(APP)
    before = await world.client.get("/fhir/Consent", params={"_summary": "count"}, headers=world.admin)
    response = await world.client.get("/auth/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": APP, "aud": FHIR,
        "state": "s", "code_challenge": "x" * 43, "code_challenge_method": "plain"})
    assert response.status_code == 400
    after = await world.client.get("/fhir/Consent", params={"_summary": "count"}, headers=world.admin)
    assert after.json()["total"] == before.json()["total"]


async def test_an_app_granted_no_data_records_no_grant(world: World) -> None:
    before = await world.client.get("/fhir/Consent", params={"_summary": "count"}, headers=world.admin)
    _, token = await authorized(world, "openid fhirUser")
    assert "grant" not in claims(world, token["access_token"])
    after = await world.client.get("/fhir/Consent", params={"_summary": "count"}, headers=world.admin)
    assert after.json()["total"] == before.json()["total"]
