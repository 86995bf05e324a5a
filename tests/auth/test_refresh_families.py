"""Access tokens of a refresh-token family stop working when the family is revoked (SECURITY.md case 28).

Reuse of a rotated refresh token, or its revocation through /auth/revoke, revokes the whole family: its refresh
tokens and the access tokens issued from it. https://datatracker.ietf.org/doc/html/rfc9700#section-4.14.2
"""

from __future__ import annotations

import pytest

from tests.auth.conftest import World

pytestmark = pytest.mark.anyio

SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


async def _refresh(world: World, client_id: str, refresh_token: str) -> dict[str, str]:
    response = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                            "refresh_token": refresh_token})
    assert response.status_code == 200, response.text
    found: dict[str, str] = response.json()
    return found


async def _status(world: World, access_token: str) -> int:
    return (await world.client.get("/fhir/Patient", headers=world.bearer(access_token))).status_code


async def test_refresh_token_reuse_stops_the_familys_access_tokens(world: World) -> None:
    client_id, _ = world.app_client(SCOPE)
    first = await world.authorize(client_id, SCOPE, "alice")
    second = await _refresh(world, client_id, first["refresh_token"])
    bystander = await world.authorize(client_id, SCOPE, "alice")
    assert await _status(world, first["access_token"]) == 200
    assert await _status(world, second["access_token"]) == 200

    reused = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                          "refresh_token": first["refresh_token"]})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert await _status(world, first["access_token"]) == 401
    assert await _status(world, second["access_token"]) == 401
    assert await _status(world, bystander["access_token"]) == 200  # another family is untouched


async def test_revoking_a_refresh_token_stops_the_familys_access_tokens(world: World) -> None:
    client_id, _ = world.app_client(SCOPE)
    first = await world.authorize(client_id, SCOPE, "alice")
    second = await _refresh(world, client_id, first["refresh_token"])
    revoked = await world.client.post("/auth/revoke", data={"token": second["refresh_token"], "client_id": client_id})
    assert revoked.status_code == 200
    assert await _status(world, first["access_token"]) == 401
    assert await _status(world, second["access_token"]) == 401
    refresh = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                           "refresh_token": second["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
