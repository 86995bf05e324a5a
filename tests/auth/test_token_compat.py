"""Token endpoint compatibility with real clients (issue 27 item 11): `client_secret_post` on every grant, a
`client_credentials` request without `scope`, and a public client refreshing without `client_id`.

https://www.rfc-editor.org/rfc/rfc6749#section-2.3.1, https://www.rfc-editor.org/rfc/rfc6749#section-3.3,
https://www.rfc-editor.org/rfc/rfc6749#section-6, https://hl7.org/fhir/smart-app-launch/app-launch.html
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth.conftest import REDIRECT, World

pytestmark = pytest.mark.anyio
PATIENT_APP = "launch/patient openid fhirUser offline_access patient/*.rs"


async def _token(world: World, form: dict[str, str], auth: tuple[str, str] | None = None) -> Any:
    return await world.client.post("/auth/token", data=form, auth=auth)


def _oauth_error(response: Any, error: str, statuses: tuple[int, ...] = (400,)) -> None:
    assert response.status_code in statuses, response.text
    assert response.json()["error"] == error, response.text
    assert response.headers["cache-control"] == "no-store"


# -- client_secret_post (RFC 6749 §2.3.1) ------------------------------------------------------------------------

async def test_discovery_advertises_client_secret_post(world: World) -> None:
    for path in ("/fhir/.well-known/smart-configuration", "/.well-known/oauth-authorization-server"):
        methods = (await world.client.get(path)).json()["token_endpoint_auth_methods_supported"]
        assert {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"} <= set(methods), path


async def test_client_credentials_with_the_secret_in_the_body(world: World) -> None:
    record, secret = world.auth.add_client("backend", "confidential-symmetric", "system/*.rs", [])
    assert secret is not None
    response = await _token(world, {"grant_type": "client_credentials", "scope": "system/Patient.rs",
                                    "client_id": record.client_id, "client_secret": secret})
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["scope"] == "system/Patient.rs" and token["expires_in"] <= 300
    found = await world.client.get("/fhir/Patient", headers=world.bearer(token["access_token"]))
    assert found.status_code == 200 and len(found.json()["entry"]) == 2


async def test_a_wrong_secret_in_the_body_is_invalid_client(world: World) -> None:
    record, _ = world.auth.add_client("backend", "confidential-symmetric", "system/*.rs", [])
    wrong = await _token(world, {"grant_type": "client_credentials", "scope": "system/*.rs",
                                 "client_id": record.client_id, "client_secret": "not-the-secret"})
    _oauth_error(wrong, "invalid_client", (400, 401))
    unknown = await _token(world, {"grant_type": "client_credentials", "scope": "system/*.rs",
                                   "client_id": "no-such-client", "client_secret": "whatever"})
    _oauth_error(unknown, "invalid_client", (400, 401))
    no_secret = await _token(world, {"grant_type": "client_credentials", "scope": "system/*.rs",
                                     "client_id": record.client_id})
    _oauth_error(no_secret, "invalid_client", (400, 401))


async def test_a_public_client_cannot_pass_itself_off_with_a_secret(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    code, verifier = await world.code(client_id, PATIENT_APP, "alice")
    response = await _token(world, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                    "code_verifier": verifier, "client_id": client_id, "client_secret": "made-up"})
    _oauth_error(response, "invalid_client", (400, 401))


async def test_authorization_code_and_refresh_with_the_secret_in_the_body(world: World) -> None:
    client_id, secret = world.app_client(PATIENT_APP, kind="confidential-symmetric")
    assert secret is not None
    code, verifier = await world.code(client_id, PATIENT_APP, "alice")
    response = await _token(world, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                    "code_verifier": verifier, "client_id": client_id, "client_secret": secret})
    assert response.status_code == 200, response.text
    first = response.json()
    assert first["patient"] == world.ids["alice"] and first["refresh_token"]
    refreshed = await _token(world, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                     "client_id": client_id, "client_secret": secret})
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["patient"] == world.ids["alice"] and second["refresh_token"] != first["refresh_token"]
    read = await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=world.bearer(second["access_token"]))
    assert read.status_code == 200


# -- client_credentials without scope (RFC 6749 §3.3) ---------------------------------------------------------------

async def test_client_credentials_without_scope_gets_the_preauthorized_system_scopes(world: World) -> None:
    record, secret = world.auth.add_client("backend", "confidential-symmetric",
                                           "system/Observation.rs system/Patient.r", [])
    for form in ({"grant_type": "client_credentials"}, {"grant_type": "client_credentials", "scope": ""}):
        response = await _token(world, form, auth=(record.client_id, secret or ""))
        assert response.status_code == 200, response.text
        token = response.json()
        assert set(token["scope"].split()) == {"system/Observation.rs", "system/Patient.r"}
        bearer = world.bearer(token["access_token"])
        assert (await world.client.get("/fhir/Observation", headers=bearer)).status_code == 200
        assert (await world.client.get(f"/fhir/Patient/{world.ids['bob']}", headers=bearer)).status_code == 200
        assert (await world.client.get("/fhir/Patient", headers=bearer)).status_code == 403  # no `s` on Patient


async def test_client_credentials_without_scope_leaves_out_app_scopes(world: World) -> None:
    record, secret = world.auth.add_client("hybrid", "confidential-symmetric",
                                           f"{PATIENT_APP} system/Condition.rs", [REDIRECT])
    response = await _token(world, {"grant_type": "client_credentials", "client_id": record.client_id,
                                    "client_secret": secret or ""})
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Condition.rs"


async def test_client_credentials_without_scope_for_a_client_with_no_system_scope(world: World) -> None:
    record, secret = world.auth.add_client("app", "confidential-symmetric", PATIENT_APP, [REDIRECT])
    response = await _token(world, {"grant_type": "client_credentials"}, auth=(record.client_id, secret or ""))
    _oauth_error(response, "invalid_scope")


# -- refresh without client_id (RFC 6749 §6: public clients need not authenticate) -----------------------------------

async def test_a_public_client_refreshes_without_client_id(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    first = await world.authorize(client_id, PATIENT_APP, "alice")
    response = await _token(world, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["patient"] == world.ids["alice"] and set(second["scope"].split()) == set(PATIENT_APP.split())
    read = await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=world.bearer(second["access_token"]))
    assert read.status_code == 200
    # rotation still holds without client_id: reusing the first token revokes the family
    reused = await _token(world, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    _oauth_error(reused, "invalid_grant")
    after = await _token(world, {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    _oauth_error(after, "invalid_grant")


async def test_an_unknown_refresh_token_without_client_id_is_invalid_grant(world: World) -> None:
    response = await _token(world, {"grant_type": "refresh_token", "refresh_token": "no-such-token"})
    _oauth_error(response, "invalid_grant")


async def test_a_confidential_client_must_still_authenticate_to_refresh(world: World) -> None:
    client_id, secret = world.app_client(PATIENT_APP, kind="confidential-symmetric")
    first = await world.authorize(client_id, PATIENT_APP, "alice", secret=secret)
    bare = await _token(world, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    _oauth_error(bare, "invalid_client", (400, 401))
    id_only = await _token(world, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                   "client_id": client_id})
    _oauth_error(id_only, "invalid_client", (400, 401))
    wrong = await _token(world, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                 "client_id": client_id, "client_secret": "not-the-secret"})
    _oauth_error(wrong, "invalid_client", (400, 401))
    basic = await _token(world, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                         auth=(client_id, secret or ""))
    assert basic.status_code == 200, basic.text


async def test_a_refresh_token_presented_by_another_client_is_invalid_grant(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    first = await world.authorize(client_id, PATIENT_APP, "alice")
    other_public, _ = world.app_client(PATIENT_APP)
    other_confidential, secret = world.app_client(PATIENT_APP, kind="confidential-symmetric")
    attempts = [
        ({"client_id": other_public}, None),
        ({}, (other_confidential, secret or "")),
        ({"client_id": other_confidential, "client_secret": secret or ""}, None),
    ]
    for extra, auth in attempts:
        response = await _token(world, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                        **extra}, auth=auth)
        _oauth_error(response, "invalid_grant")


async def test_revocation_takes_the_secret_in_the_body_too(world: World) -> None:
    # RFC 7009 §2.1: the client authenticates as at the token endpoint, so client_secret_post works here too
    record, secret = world.auth.add_client("backend", "confidential-symmetric", "system/*.rs", [])
    assert secret is not None
    token = (await _token(world, {"grant_type": "client_credentials", "scope": "system/Patient.rs",
                                  "client_id": record.client_id, "client_secret": secret})).json()["access_token"]
    wrong = await world.client.post("/auth/revoke", data={"token": token, "client_id": record.client_id,
                                                          "client_secret": "not-the-secret"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert (await world.client.get("/fhir/Patient", headers=world.bearer(token))).status_code == 200
    revoked = await world.client.post("/auth/revoke", data={"token": token, "client_id": record.client_id,
                                                            "client_secret": secret})
    assert revoked.status_code == 200 and revoked.headers["cache-control"] == "no-store"
    assert (await world.client.get("/fhir/Patient", headers=world.bearer(token))).status_code == 401
