"""Response hygiene: no-store on everything that may carry patient data or tokens, nosniff and Referrer-Policy on all.

https://www.rfc-editor.org/rfc/rfc9111#section-5.2.2.5, https://fetch.spec.whatwg.org/#x-content-type-options-header,
https://www.w3.org/TR/referrer-policy/
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.auth.conftest import FHIR, REDIRECT, World, challenge, open_world

pytestmark = pytest.mark.anyio


@pytest.fixture
async def world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, seeded_database) as found:
        yield found


def hygienic(response: httpx.Response) -> None:
    assert response.headers.get("x-content-type-options") == "nosniff", response.headers
    assert response.headers.get("referrer-policy") == "no-referrer", response.headers


def private(response: httpx.Response) -> None:
    hygienic(response)
    assert response.headers.get("cache-control") == "no-store", response.headers


async def test_reads_searches_and_writes_are_not_stored(world: World) -> None:
    alice = world.ids["alice"]
    read = await world.client.get(f"/fhir/Patient/{alice}", headers=world.admin)
    assert read.status_code == 200
    private(read)
    search = await world.client.get("/fhir/Observation", params={"patient": alice}, headers=world.admin)
    assert search.status_code == 200 and search.json()["entry"]
    private(search)
    everything = await world.client.get(f"/fhir/Patient/{alice}/$everything", headers=world.admin)
    assert everything.status_code == 200
    private(everything)
    created = await world.client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=world.admin)
    assert created.status_code == 201
    private(created)


async def test_errors_are_not_stored_either(world: World) -> None:
    unauthenticated = await world.client.get("/fhir/Patient")
    assert unauthenticated.status_code == 401
    private(unauthenticated)
    narrow = await world.backend_token("system/Observation.rs")
    forbidden = await world.client.get("/fhir/Condition", headers=world.bearer(narrow))
    assert forbidden.status_code == 403
    private(forbidden)
    missing = await world.client.get("/fhir/Patient/nobody-here", headers=world.admin)
    assert missing.status_code == 404
    private(missing)
    no_route = await world.client.get("/fhir/Patient/1/_history/1/extra", headers=world.admin)
    assert no_route.status_code == 404
    private(no_route)
    xml = await world.client.get("/fhir/Patient", headers={**world.admin, "Accept": "application/fhir+xml"})
    assert xml.status_code == 406
    private(xml)


async def test_token_responses_and_oauth_errors(world: World) -> None:
    record, secret = world.auth.add_client("b", "confidential-symmetric", "system/*.rs", [])
    token = await world.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                                    auth=(record.client_id, secret or ""))
    assert token.status_code == 200
    private(token)
    assert token.headers["pragma"] == "no-cache"
    wrong = await world.client.post("/auth/token", data={"grant_type": "client_credentials"},
                                    auth=(record.client_id, "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    private(wrong)
    introspection = await world.client.post("/auth/introspect", data={"token": token.json()["access_token"]},
                                            auth=(record.client_id, secret or ""))
    assert introspection.status_code == 200 and introspection.json()["active"] is True
    private(introspection)
    refused = await world.client.post("/auth/introspect", data={"token": "x"}, headers=world.bearer("garbage"))
    assert refused.status_code == 401
    private(refused)
    revoked = await world.client.post("/auth/revoke", data={"token": "x"}, auth=(record.client_id, secret or ""))
    assert revoked.status_code == 200
    private(revoked)


async def test_the_sign_in_page(world: World) -> None:
    client_id, _ = world.app_client("launch/patient patient/*.rs")
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "scope": "launch/patient patient/*.rs", "state": "s" * 22, "aud": FHIR,
              "code_challenge": challenge("v" * 50), "code_challenge_method": "S256"}
    page = await world.client.get("/auth/authorize", params=params)
    assert page.status_code == 200 and "Sign in" in page.text
    private(page)
    failed = await world.client.post("/auth/authorize", data={**params, "username": "alice", "password": "no"})
    assert failed.status_code == 401
    private(failed)
    bad = await world.client.get("/auth/authorize", params={**params, "redirect_uri": "https://evil.example/cb"})
    assert bad.status_code == 400
    private(bad)


async def test_public_documents_may_be_cached_but_are_not_sniffed(world: World) -> None:
    for path in ("/fhir/metadata", "/fhir/.well-known/smart-configuration", "/.well-known/oauth-authorization-server",
                 "/auth/jwks"):
        response = await world.client.get(path)
        assert response.status_code == 200
        hygienic(response)
        assert "cache-control" not in response.headers, path


async def test_under_a_root_path_too(world: World) -> None:
    # behind a proxy that mounts the server under /api, the scope's path keeps the prefix
    transport = httpx.ASGITransport(app=world.app, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8080") as client:
        read = await client.get(f"/api/fhir/Patient/{world.ids['alice']}", headers=world.admin)
        assert read.status_code == 200
        private(read)
        metadata = await client.get("/api/fhir/metadata", headers={"Origin": "https://any.example"})
        assert metadata.status_code == 200 and metadata.headers["access-control-allow-origin"] == "*"
        assert "cache-control" not in metadata.headers
