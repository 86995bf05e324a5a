"""The authorization server's state is shared by the instances on one data folder: a token issued at one works at
another, refreshed there, revoked at a third and refused everywhere at once; replay of a refresh token is caught
across instances. Two apps in one process, each its own auth store connection, signer and caches (as processes).
https://www.rfc-editor.org/rfc/rfc6749#section-10.4, https://www.rfc-editor.org/rfc/rfc7009
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.settings import Settings
from tests.auth.conftest import BASE, FHIR, World, open_world
from tests.consent.test_enforcement import clinician, consent

pytestmark = pytest.mark.anyio
PATIENT_APP = "launch/patient patient/*.rs openid fhirUser offline_access"


@pytest.fixture
async def two(tmp_path: Path, seeded_database: Path) -> AsyncIterator[tuple[World, httpx.AsyncClient]]:
    """Instance A (the auth tests' world, with users and data) and instance B on the same folder."""
    async with open_world(tmp_path, seeded_database) as world:
        other = create_app(Settings(sqlite_path=str(tmp_path / "fhir.db"), validation_workers=0, base_url=FHIR))
        async with other.router.lifespan_context(other), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=other), base_url=BASE) as b:
            yield world, b


async def refresh(client: httpx.AsyncClient, client_id: str, token: str) -> httpx.Response:
    return await client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                  "refresh_token": token})


async def reads(client: httpx.AsyncClient, token: dict[str, Any]) -> int:
    """The status of the patient's own read with the token's access token."""
    answer = await client.get(f"/fhir/Patient/{token['patient']}",
                              headers={"Authorization": f"Bearer {token['access_token']}"})
    return answer.status_code


async def test_issue_at_one_refresh_at_another_reuse_caught_everywhere(two: tuple[World, httpx.AsyncClient]) -> None:
    world, b = two
    a = world.client
    client_id, _ = world.app_client(PATIENT_APP)  # registered through A's store: B authenticates it
    first = await world.authorize(client_id, PATIENT_APP, "alice")
    assert await reads(b, first) == 200  # one signing key for both
    refreshed = await refresh(b, client_id, first["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert await reads(a, second) == 200
    reused = await refresh(a, client_id, first["refresh_token"])  # the old token replayed at the other instance
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # the family ended: at once, on both, for the newest access and refresh tokens
    assert await reads(b, second) == 401 and await reads(a, second) == 401
    assert (await refresh(b, client_id, second["refresh_token"])).status_code == 400


async def test_revocation_at_one_is_honoured_at_the_other_at_once(two: tuple[World, httpx.AsyncClient]) -> None:
    world, b = two
    client_id, _ = world.app_client(PATIENT_APP)
    token = await world.authorize(client_id, PATIENT_APP, "alice")
    assert await reads(world.client, token) == 200 and await reads(b, token) == 200  # both have it cached now
    revoked = await b.post("/auth/revoke", data={"token": token["access_token"], "client_id": client_id})
    assert revoked.status_code == 200
    assert await reads(world.client, token) == 401  # no second of grace at the instance that did not revoke


async def test_a_client_registered_at_one_authenticates_at_the_other(two: tuple[World, httpx.AsyncClient]) -> None:
    world, b = two
    record, secret = world.auth.add_client("backend", "confidential-symmetric", "system/Patient.rs", [])
    answer = await b.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
                          auth=(record.client_id, secret or ""))
    assert answer.status_code == 200, answer.text
    wrong = await b.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
                         auth=(record.client_id, "not-the-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


async def test_one_refresh_token_used_at_two_instances_at_once_yields_at_most_one_live_token(
        two: tuple[World, httpx.AsyncClient]) -> None:
    world, b = two
    client_id, _ = world.app_client(PATIENT_APP)
    for _ in range(3):
        token = await world.authorize(client_id, PATIENT_APP, "alice")
        answers = await asyncio.gather(refresh(world.client, client_id, token["refresh_token"]),
                                       refresh(b, client_id, token["refresh_token"]))
        assert all(r.status_code in (200, 400) for r in answers), [r.text for r in answers]
        live = [r for r in answers if r.status_code == 200 and await reads(world.client, r.json()) == 200]
        assert len(live) <= 1


async def test_a_consent_written_at_one_instance_is_enforced_at_the_other(two: tuple[World, httpx.AsyncClient]) -> None:
    world, b = two
    doctor = clinician(world)  # signed with the shared key: B verifies it

    async def at_b() -> set[str]:
        response = await b.get(f"/fhir/Observation?subject=Patient/{world.ids['alice']}", headers=doctor)
        return {e["resource"]["id"] for e in response.json().get("entry", [])} if response.status_code == 200 else set()

    assert world.ids["alice_vital"] in await at_b()
    made = await world.client.post("/fhir/Consent", json=consent(world.ids["alice"], {"type": "deny"}),
                                   headers=world.admin)
    assert made.status_code == 201, made.text
    deadline = asyncio.get_running_loop().time() + 5
    while await at_b():  # B's Consent book learns it from the feed within half a second
        assert asyncio.get_running_loop().time() < deadline, "B still shows what the patient's Consent denies"
        await asyncio.sleep(0.1)
