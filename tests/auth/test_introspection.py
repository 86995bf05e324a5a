"""Who may introspect which token: RFC 7662 §2.1 and §4, and SMART token introspection.

The caller is an authenticated confidential client (which sees only its own tokens) or a registered resource
server (which sees every token), authenticating as a client or with a Bearer token issued to it.
https://www.rfc-editor.org/rfc/rfc7662#section-4, https://hl7.org/fhir/smart-app-launch/token-introspection.html
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from server.cli import main
from tests.auth.conftest import BASE, World

pytestmark = pytest.mark.anyio

APP = "launch/patient openid fhirUser offline_access patient/*.rs"
INTROSPECT = "/auth/introspect"
INACTIVE = {"active": False}


async def _backend(world: World, client_id: str, secret: str, scope: str = "system/*.rs") -> str:
    response = await world.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": scope},
                                       auth=(client_id, secret))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _resource_server(world: World) -> tuple[str, str]:
    record, secret = world.auth.add_client("FHIR gateway", "confidential-symmetric", "system/*.rs", [],
                                           resource_server=True)
    assert secret is not None and record.resource_server
    return record.client_id, secret


def _refused(response: httpx.Response, error: str = "invalid_client") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == error
    assert response.headers["www-authenticate"]
    assert response.headers["cache-control"] == "no-store"
    assert "sub" not in response.json() and "patient" not in response.json()


async def _introspect(world: World, token: str, **kwargs: Any) -> httpx.Response:
    data = {"token": token, **kwargs.pop("data", {})}
    return await world.client.post(INTROSPECT, data=data, **kwargs)


async def test_a_public_client_id_alone_does_not_introspect_another_clients_refresh_token(world: World) -> None:
    victim_app, _ = world.app_client(APP)
    token = await world.authorize(victim_app, APP, "alice")
    stranger, _ = world.app_client(APP)
    _refused(await _introspect(world, token["refresh_token"], data={"client_id": stranger}))
    _refused(await _introspect(world, token["refresh_token"], data={"client_id": victim_app}))  # nor its own


async def test_a_patient_bearer_token_does_not_introspect_any_token(world: World) -> None:
    alice_app, _ = world.app_client(APP)
    alice = await world.authorize(alice_app, APP, "alice")
    bob_app, _ = world.app_client(APP)
    bob = await world.authorize(bob_app, APP, "bob")
    for token in (alice["access_token"], alice["refresh_token"], bob["access_token"]):
        _refused(await _introspect(world, token, headers=world.bearer(bob["access_token"])))


async def test_a_backend_token_of_a_client_that_is_no_resource_server_does_not_introspect(world: World) -> None:
    alice_app, _ = world.app_client(APP)
    alice = await world.authorize(alice_app, APP, "alice")
    caller = await world.backend_token("system/*.rs")
    _refused(await _introspect(world, alice["access_token"], headers=world.bearer(caller)))


async def test_a_confidential_client_introspects_its_own_tokens_and_no_others(world: World) -> None:
    own_app, secret = world.app_client(APP, "confidential-symmetric")
    assert secret is not None
    own = await world.authorize(own_app, APP, "alice", secret=secret)
    other_app, _ = world.app_client(APP)
    other = await world.authorize(other_app, APP, "bob")
    unknown = await _introspect(world, "no-such-token", auth=(own_app, secret))
    assert unknown.status_code == 200 and unknown.json() == INACTIVE

    answer = await _introspect(world, own["access_token"], auth=(own_app, secret))
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["active"] is True and body["client_id"] == own_app and body["scope"] == own["scope"]
    assert body["patient"] == world.ids["alice"] and body["sub"] == "alice" and body["iss"] == f"{BASE}/auth"
    assert body["fhirUser"] == f"Patient/{world.ids['alice']}" and body["exp"] > time.time()
    assert "family" not in body
    refresh = (await _introspect(world, own["refresh_token"], auth=(own_app, secret))).json()
    assert refresh["active"] is True and refresh["client_id"] == own_app and refresh["patient"] == world.ids["alice"]
    # client_secret_post authenticates as well as Basic
    posted = await _introspect(world, own["access_token"], data={"client_id": own_app, "client_secret": secret})
    assert posted.status_code == 200 and posted.json()["active"] is True

    # another client's tokens answer exactly like a token that does not exist
    for token in (other["access_token"], other["refresh_token"]):
        response = await _introspect(world, token, auth=(own_app, secret))
        assert response.status_code == 200 and response.content == unknown.content
        assert response.headers["cache-control"] == "no-store"


async def test_an_asymmetric_client_introspects_with_a_client_assertion(world: World) -> None:
    key = ECKey.generate_key("P-384", auto_kid=True)
    record, _ = world.auth.add_client("vendor", "confidential-asymmetric", "system/Observation.rs", [],
                                      jwks={"keys": [key.as_dict(private=False)]})

    def assertion() -> dict[str, str]:
        claims = {"iss": record.client_id, "sub": record.client_id, "aud": f"{BASE}/auth/token",
                  "exp": int(time.time()) + 240, "jti": str(uuid.uuid4())}
        signed = jwt.encode({"alg": "ES384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["ES384"])
        return {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": signed}

    issued = await world.client.post("/auth/token", data={"grant_type": "client_credentials",
                                                          "scope": "system/Observation.rs", **assertion()})
    assert issued.status_code == 200, issued.text
    own = await _introspect(world, issued.json()["access_token"], data=assertion())
    assert own.status_code == 200 and own.json()["active"] is True and own.json()["client_id"] == record.client_id
    others = await _introspect(world, await world.backend_token("system/*.rs"), data=assertion())
    assert others.status_code == 200 and others.json() == INACTIVE
    replayed = assertion()
    assert (await _introspect(world, "x", data=replayed)).status_code == 200
    _refused(await _introspect(world, "x", data=replayed))


async def test_a_resource_server_introspects_every_token_with_basic_or_its_bearer_token(world: World) -> None:
    gateway, secret = _resource_server(world)
    alice_app, _ = world.app_client(APP)
    alice = await world.authorize(alice_app, APP, "alice")
    backend = await world.backend_token("system/Observation.rs")
    gateway_token = await _backend(world, gateway, secret)
    for credentials in ({"auth": (gateway, secret)}, {"headers": world.bearer(gateway_token)}):
        answer = await _introspect(world, alice["access_token"], **credentials)
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert body["active"] is True and body["client_id"] == alice_app and body["patient"] == world.ids["alice"]
        assert body["scope"] == alice["scope"] and body["sub"] == "alice"
        assert body["fhirUser"] == f"Patient/{world.ids['alice']}"
        refresh = (await _introspect(world, alice["refresh_token"], **credentials)).json()
        assert refresh["active"] is True and refresh["sub"] == "alice"
        other = (await _introspect(world, backend, **credentials)).json()
        assert other["active"] is True and other["scope"] == "system/Observation.rs"


async def test_revoked_families_introspect_as_inactive(world: World) -> None:
    gateway, secret = _resource_server(world)
    alice_app, _ = world.app_client(APP)
    alice = await world.authorize(alice_app, APP, "alice")
    revoked = await world.client.post("/auth/revoke", data={"token": alice["refresh_token"], "client_id": alice_app})
    assert revoked.status_code == 200
    for token in (alice["access_token"], alice["refresh_token"]):
        assert (await _introspect(world, token, auth=(gateway, secret))).json() == INACTIVE


async def test_bad_credentials_get_401(world: World) -> None:
    own_app, secret = world.app_client(APP, "confidential-symmetric")
    gateway, gateway_secret = _resource_server(world)
    token = await world.backend_token("system/*.rs")
    _refused(await _introspect(world, token))
    _refused(await _introspect(world, token, auth=(own_app, "wrong")))
    _refused(await _introspect(world, token, auth=(gateway, "wrong")))
    _refused(await _introspect(world, token, auth=("no-such-client", "x")))
    _refused(await _introspect(world, token, data={"client_id": own_app, "client_secret": "wrong"}))
    _refused(await _introspect(world, token, headers={"Authorization": "Basic %%%"}))
    bad_bearer = await _introspect(world, token, headers=world.bearer("garbage"))
    _refused(bad_bearer, "invalid_token")
    assert 'error="invalid_token"' in bad_bearer.headers["www-authenticate"]
    revoked = await _backend(world, gateway, gateway_secret)
    await world.client.post("/auth/revoke", data={"token": revoked}, auth=(gateway, gateway_secret))
    _refused(await _introspect(world, token, headers=world.bearer(revoked)), "invalid_token")


async def test_discovery_names_the_introspection_client_authentication_methods(world: World) -> None:
    metadata = (await world.client.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_basic", "client_secret_post", "private_key_jwt"]


def test_the_cli_registers_and_lists_resource_servers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.db")
    assert main(["clients", "add", "--name", "gateway", "--type", "confidential-symmetric", "--scope",
                 "system/*.rs", "--resource-server", "--json", "--db", db]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["resource_server"] is True and added["client_secret"]
    assert main(["clients", "add", "--name", "app", "--type", "public", "--scope", APP, "--redirect-uri",
                 "http://localhost:9999/callback", "--json", "--db", db]) == 0
    capsys.readouterr()
    assert main(["clients", "list", "--json", "--db", db]) == 0
    listed = {c["name"]: c["resource_server"] for c in json.loads(capsys.readouterr().out)}
    assert listed == {"gateway": True, "app": False}
    assert main(["clients", "list", "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("gateway" in line and "resource-server" in line for line in lines)
    assert not any("app" in line and "resource-server" in line for line in lines)
    # a public client cannot be one: it has no credential to introspect with
    assert main(["clients", "add", "--name", "x", "--type", "public", "--scope", APP, "--resource-server",
                 "--db", db]) == 2
    assert "confidential" in capsys.readouterr().err
