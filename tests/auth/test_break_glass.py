"""Break-glass (issue 28, item 7; SECURITY.md C9): `__pou/BTG` only for entitled clients and users, with a reason,
in a token of at most 15 minutes that is never refreshed and grants no scope beyond what was asked for.

https://terminology.hl7.org/CodeSystem-v3-ActReason.html#v3-ActReason-BTG, https://www.rfc-editor.org/rfc/rfc6749
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from pydantic import ValidationError

from server.settings import Settings
from tests.auth.conftest import BASE, FHIR, REDIRECT, World, challenge, open_world

pytestmark = pytest.mark.anyio
SCOPE = "launch/patient openid fhirUser offline_access user/Patient.rs user/Observation.rs __pou/BTG"
REASON = "Unconscious patient in the emergency room, no consent on file"


def claims(world: World, token: str) -> dict[str, Any]:
    found: dict[str, Any] = world.auth.signer.decode(token, "at+jwt", f"{BASE}/auth", FHIR)
    return found


def _error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    found: dict[str, Any] = response.json()
    assert found["error"] == error, found
    return found


async def _backend(world: World, scope: str, break_glass: bool, **form: str) -> httpx.Response:
    record, secret = world.auth.add_client("emergency backend", "confidential-symmetric", "system/*.rs", [],
                                           break_glass=break_glass)
    return await world.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": scope, **form},
                                   auth=(record.client_id, secret or ""))


async def test_a_backend_without_the_entitlement_is_refused(world: World) -> None:
    _error(await _backend(world, "system/*.rs __pou/BTG", False, btg_reason=REASON), 400, "invalid_scope")


@pytest.mark.parametrize("reason", [None, "", "   ", "x" * 501])
async def test_a_backend_without_a_proper_reason_is_refused_naming_it(world: World, reason: str | None) -> None:
    form = {} if reason is None else {"btg_reason": reason}
    found = _error(await _backend(world, "system/*.rs __pou/BTG", True, **form), 400, "invalid_request")
    assert "btg_reason" in found["error_description"]


async def test_an_entitled_backend_gets_a_short_token_with_its_reason(world: World) -> None:
    response = await _backend(world, "system/Observation.rs __pou/BTG", True, btg_reason=REASON)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] <= 300 and "refresh_token" not in body
    assert set(body["scope"].split()) == {"system/Observation.rs", "__pou/BTG"}
    found = claims(world, body["access_token"])
    assert found["purpose_of_use"] == ["BTG"] and found["btg_reason"] == REASON
    # break-glass adds no scope: a type the token was not granted is still refused
    refused = await world.client.get("/fhir/Patient", headers=world.bearer(body["access_token"]))
    assert refused.status_code == 403
    # a token without BTG carries no reason, even if one was sent
    plain = await _backend(world, "system/*.rs", True, btg_reason=REASON)
    assert "btg_reason" not in claims(world, plain.json()["access_token"])


def _params(client_id: str, scope: str, verifier: str, **extra: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
            "state": secrets.token_urlsafe(8), "aud": FHIR, "code_challenge": challenge(verifier),
            "code_challenge_method": "S256", **extra}


async def test_an_app_not_registered_for_break_glass_is_refused_at_authorize(world: World) -> None:
    record, _ = world.auth.add_client("app", "public", SCOPE, [REDIRECT])
    response = await world.client.get("/auth/authorize", params=_params(record.client_id, SCOPE, "v" * 43,
                                                                        btg_reason=REASON))
    _error(response, 400, "invalid_scope")


async def test_an_authorize_request_without_a_reason_is_refused_before_sign_in(world: World) -> None:
    record, _ = world.auth.add_client("app", "public", SCOPE, [REDIRECT], break_glass=True)
    found = _error(await world.client.get("/auth/authorize", params=_params(record.client_id, SCOPE, "v" * 43)),
                   400, "invalid_request")
    assert "btg_reason" in found["error_description"]


async def test_a_user_without_the_entitlement_is_denied(world: World) -> None:
    record, _ = world.auth.add_client("app", "public", SCOPE, [REDIRECT], break_glass=True)
    params = _params(record.client_id, SCOPE, "v" * 43, btg_reason=REASON)
    response = await world.client.post("/auth/authorize", data={**params, "username": "drsmith",
                                                                "password": "secret"})
    assert response.status_code == 302
    location = urlparse(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["error"] == ["access_denied"] and query["state"] == [params["state"]] and "code" not in query


async def _break_glass(world: World) -> dict[str, Any]:
    world.auth.store.add_user("erdoc", "secret", f"Practitioner/{world.ids['practitioner']}", break_glass=True)
    record, _ = world.auth.add_client("ER app", "public", SCOPE, [REDIRECT], break_glass=True)
    return await world.authorize(record.client_id, SCOPE, "erdoc", extra={"btg_reason": REASON},
                                 patient=world.ids["alice"])


async def test_an_entitled_user_gets_fifteen_minutes_and_no_refresh_token(world: World) -> None:
    token = await _break_glass(world)
    assert token["expires_in"] == 900 and "refresh_token" not in token
    assert set(token["scope"].split()) == set(SCOPE.split())
    found = claims(world, token["access_token"])
    assert found["exp"] - found["iat"] == 900
    assert found["purpose_of_use"] == ["BTG"] and found["btg_reason"] == REASON
    assert found["roles"] == ["clinician"]
    read = await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=world.bearer(token["access_token"]))
    assert read.status_code == 200


async def test_the_lifetime_is_configurable_below_fifteen_minutes(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database, btg_token_seconds=120) as world:
        token = await _break_glass(world)
        assert token["expires_in"] == 120
    with pytest.raises(ValidationError):
        Settings(btg_token_seconds=901)
    with pytest.raises(ValidationError):
        Settings(btg_token_seconds=0)
