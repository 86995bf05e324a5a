"""CORS for browser SMART apps: discovery open to any origin; tokens and the API to registered origins only.

https://hl7.org/fhir/smart-app-launch/app-launch.html#considerations-for-cross-origin-resource-sharing-cors-support,
https://fetch.spec.whatwg.org/#http-cors-protocol
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from server.app import create_app
from server.settings import Settings
from tests.auth.conftest import FHIR, World, build_world

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parent.parent.parent
APP_ORIGIN = "http://localhost:9999"  # the origin of tests/auth/conftest.py's REDIRECT
EVIL = "https://evil.example"
PUBLIC = ("/fhir/.well-known/smart-configuration", "/.well-known/oauth-authorization-server",
          "/auth/.well-known/oauth-authorization-server", "/auth/jwks", "/fhir/metadata")
RESTRICTED = ("/fhir/Patient", "/fhir/Patient/x", "/fhir", "/auth/token", "/auth/introspect", "/auth/revoke")
REQUEST_HEADERS = "authorization, content-type, prefer, if-match, if-none-exist, if-none-match, " \
                  "if-modified-since, x-request-id"


@asynccontextmanager
async def app_world(tmp_path: Path, seeded: Path, **extra: Any) -> AsyncIterator[World]:
    tmp_path.mkdir(exist_ok=True)
    shutil.copyfile(seeded, tmp_path / "fhir.db")
    settings = Settings(sqlite_path=str(tmp_path / "fhir.db"), validation_workers=0, base_url=FHIR, **extra)
    async with build_world(create_app(settings)) as world:
        yield world


@pytest.fixture
async def world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    async with app_world(tmp_path, seeded_database) as found:
        found.app_client("launch/patient patient/*.rs")  # registers http://localhost:9999/callback
        yield found


def listed(value: str | None) -> set[str]:
    return {v.strip().lower() for v in (value or "").split(",") if v.strip()}


async def preflight(client: httpx.AsyncClient, path: str, origin: str, method: str = "POST",
                    headers: str = "authorization, content-type") -> httpx.Response:
    return await client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                               "Access-Control-Request-Headers": headers})


@pytest.mark.parametrize("path", PUBLIC)
async def test_discovery_keys_and_metadata_are_open_to_any_origin(world: World, path: str) -> None:
    answer = await preflight(world.client, path, EVIL, "GET", "authorization")
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "get" in listed(answer.headers["access-control-allow-methods"])
    assert "authorization" in listed(answer.headers["access-control-allow-headers"])
    assert "access-control-allow-credentials" not in answer.headers
    actual = await world.client.get(path, headers={"Origin": EVIL})
    assert actual.status_code == 200 and actual.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path", RESTRICTED)
async def test_a_registered_origin_is_answered(world: World, path: str) -> None:
    answer = await preflight(world.client, path, APP_ORIGIN, "POST", REQUEST_HEADERS)
    assert answer.status_code == 204, answer.text  # no bearer token needed for a preflight
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "origin" in listed(answer.headers["vary"])
    assert {"get", "post", "put", "patch", "delete", "head", "options"} <= listed(
        answer.headers["access-control-allow-methods"])
    assert listed(REQUEST_HEADERS) <= listed(answer.headers["access-control-allow-headers"])
    assert int(answer.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in answer.headers


@pytest.mark.parametrize("path", RESTRICTED)
async def test_another_origin_is_refused(world: World, path: str) -> None:
    for origin in (EVIL, "null", "http://localhost:9998", "https://localhost:9999"):
        answer = await preflight(world.client, path, origin)
        assert answer.status_code == 403, answer.text
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-methods" not in answer.headers
        assert "origin" in listed(answer.headers["vary"])


async def test_api_answers_carry_the_origin_and_expose_their_headers(world: World) -> None:
    created = await world.client.post("/fhir/Patient", json={"resourceType": "Patient"},
                                      headers={**world.admin, "Origin": APP_ORIGIN})
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "origin" in listed(created.headers["vary"])
    assert {"etag", "location", "content-location", "last-modified", "x-request-id", "www-authenticate"} <= listed(
        created.headers["access-control-expose-headers"])
    # a browser app must see its 401 to know its token expired
    unauthorized = await world.client.get("/fhir/Patient", headers={"Origin": APP_ORIGIN})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == APP_ORIGIN
    # another origin gets the same answer without the permission to read it, which the browser enforces
    other = await world.client.get(created.headers["location"], headers={**world.admin, "Origin": EVIL})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers and "origin" in listed(other.headers["vary"])
    plain = await world.client.get(created.headers["location"], headers=world.admin)
    assert "access-control-allow-origin" not in plain.headers


async def test_token_answers_carry_the_origin(world: World) -> None:
    record, secret = world.auth.add_client("b", "confidential-symmetric", "system/*.rs", [])
    token = await world.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                                    auth=(record.client_id, secret or ""), headers={"Origin": APP_ORIGIN})
    assert token.status_code == 200 and token.headers["access-control-allow-origin"] == APP_ORIGIN
    refused = await world.client.post("/auth/token", data={"grant_type": "client_credentials"},
                                      headers={"Origin": EVIL})
    assert "access-control-allow-origin" not in refused.headers


async def test_endpoints_for_people_and_ehrs_answer_no_cors(world: World) -> None:
    for path in ("/auth/authorize", "/auth/launch", "/docs"):
        answer = await preflight(world.client, path, APP_ORIGIN)
        assert "access-control-allow-origin" not in answer.headers, path


async def test_configured_origins_replace_the_registered_ones(tmp_path: Path, seeded_database: Path) -> None:
    async with app_world(tmp_path, seeded_database, cors_origins=["https://app.clinic.example/"]) as world:
        world.app_client("launch/patient patient/*.rs")
        allowed = await preflight(world.client, "/fhir/Patient", "https://app.clinic.example")
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == "https://app.clinic.example"
        assert (await preflight(world.client, "/fhir/Patient", APP_ORIGIN)).status_code == 403


async def test_a_client_added_from_the_cli_is_allowed_within_the_cache_time(tmp_path: Path,
                                                                           seeded_database: Path) -> None:
    async with app_world(tmp_path, seeded_database, cors_cache_seconds=0.5) as world:
        origin = "https://app.example:8443"
        assert (await preflight(world.client, "/auth/token", origin)).status_code == 403
        added = subprocess.run([sys.executable, "-m", "server", "clients", "add", "--name", "later", "--type",
                                "public", "--scope", "launch/patient patient/*.rs", "--redirect-uri",
                                f"{origin}/cb", "--redirect-uri", "com.example.app:/native", "--db",
                                str(tmp_path / "fhir.db")], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        deadline = time.monotonic() + 5
        while (answer := await preflight(world.client, "/auth/token", origin)).status_code != 204:
            assert time.monotonic() < deadline, "the new client's origin was never allowed"
            await anyio.sleep(0.1)
        assert answer.headers["access-control-allow-origin"] == origin
        # default ports are not part of an origin
        world.auth.add_client("tls", "public", "launch/patient patient/*.rs", ["https://tls.example:443/cb"])
        await anyio.sleep(0.6)
        answer = await preflight(world.client, "/auth/token", "https://tls.example")
        assert answer.headers["access-control-allow-origin"] == "https://tls.example"
