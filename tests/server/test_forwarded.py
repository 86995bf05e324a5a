"""Forwarded headers count only from configured proxies; issuer, audience and discovery come from configuration.

https://www.rfc-editor.org/rfc/rfc7239, https://hl7.org/fhir/smart-app-launch/conformance.html
"""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from server.app import create_app
from server.settings import Settings
from tests.auth.conftest import FHIR_JSON, World, build_world
from tests.conftest import body, client_for
from tests.factories import patient

pytestmark = pytest.mark.anyio

# the default base: from CARELOOP_HOST and CARELOOP_PORT, what `make run` serves (the client says localhost)
BASE = "http://127.0.0.1:8080"
FHIR = f"{BASE}/fhir"
EVIL_FORWARDED = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443"}
EVIL_HEADERS = [EVIL_FORWARDED, {"Host": "evil.example"}, {"Forwarded": 'for=6.6.6.6;proto=https;host="evil.example"'}]


@asynccontextmanager
async def smart(tmp_path: Path, seeded: Path, **extra: Any) -> AsyncIterator[World]:
    """A SMART-on app with the default configuration (no CARELOOP_BASE_URL): its base is http://127.0.0.1:8080."""
    tmp_path.mkdir(exist_ok=True)
    shutil.copyfile(seeded, tmp_path / "fhir.db")
    settings = Settings(sqlite_path=str(tmp_path / "fhir.db"), validation_workers=0, **extra)
    async with build_world(create_app(settings)) as world:
        yield world


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    found: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return found


async def backend_token(client: httpx.AsyncClient, world: World, headers: dict[str, str]) -> httpx.Response:
    record, secret = world.auth.add_client("backend", "confidential-symmetric", "system/*.rs", [])
    return await client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                             auth=(record.client_id, secret or ""), headers=headers)


@pytest.mark.parametrize("headers", EVIL_HEADERS, ids=["x-forwarded", "host", "forwarded"])
async def test_discovery_names_the_configured_urls_whatever_the_request_says(
        tmp_path: Path, seeded_database: Path, headers: dict[str, str]) -> None:
    async with smart(tmp_path, seeded_database) as world:
        for path in ("/fhir/.well-known/smart-configuration", "/.well-known/oauth-authorization-server"):
            found = (await world.client.get(path, headers=headers)).json()
            urls = [v for k, v in found.items() if k.endswith("_endpoint") or k in ("issuer", "jwks_uri")]
            assert len(urls) == 6 and all(u.startswith(f"{BASE}/auth") for u in urls), found
            assert found["token_endpoint"] == f"{BASE}/auth/token"


async def test_the_capability_statement_is_not_poisoned_by_the_first_request(tmp_path: Path,
                                                                               seeded_database: Path) -> None:
    async with smart(tmp_path, seeded_database) as world:
        first = (await world.client.get("/fhir/metadata", headers=EVIL_FORWARDED)).json()
        later = (await world.client.get("/fhir/metadata")).json()
        for statement in (first, later):
            uris = {e["url"]: e["valueUri"] for e in statement["rest"][0]["security"]["extension"][0]["extension"]}
            assert uris["token"] == f"{BASE}/auth/token"
            assert statement["implementation"]["url"] == FHIR


@pytest.mark.parametrize("headers", [EVIL_FORWARDED, {"Forwarded": 'proto=https;host="evil.example"'}],
                         ids=["x-forwarded", "forwarded"])
async def test_tokens_carry_the_configured_issuer_and_audience(tmp_path: Path, seeded_database: Path,
                                                               headers: dict[str, str]) -> None:
    async with smart(tmp_path, seeded_database) as world:
        response = await backend_token(world.client, world, headers)
        assert response.status_code == 200, response.text
        claims = claims_of(response.json()["access_token"])
        assert (claims["iss"], claims["aud"]) == (f"{BASE}/auth", FHIR)


async def test_a_host_header_over_tls_does_not_name_the_issuer(tmp_path: Path, seeded_database: Path) -> None:
    # a server serving TLS itself: the Host header alone used to become the issuer and the audience
    async with smart(tmp_path, seeded_database) as world, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=world.app), base_url="https://evil.example") as tls:
        response = await backend_token(tls, world, {})
        assert response.status_code == 200, response.text
        claims = claims_of(response.json()["access_token"])
        assert (claims["iss"], claims["aud"]) == (f"{BASE}/auth", FHIR)


async def test_the_api_checks_the_configured_audience_not_the_requests(tmp_path: Path,
                                                                       seeded_database: Path) -> None:
    async with smart(tmp_path, seeded_database) as world:
        good = world.admin["Authorization"]
        now = int(time.time())
        evil = world.auth.signer.sign({"iss": "https://evil.example/auth", "aud": "https://evil.example/fhir",
                                       "sub": "x", "client_id": "x", "scope": "system/*.cruds", "iat": now,
                                       "exp": now + 600, "jti": "evil"}, "at+jwt")
        for headers in EVIL_HEADERS[::2]:
            accepted = await world.client.get("/fhir/Patient", headers={**headers, "Authorization": good})
            assert accepted.status_code == 200, accepted.text
            refused = await world.client.get("/fhir/Patient", headers={**headers, "Authorization": f"Bearer {evil}"})
            assert refused.status_code == 401, refused.text


async def test_oauth_over_plain_http_to_a_public_name_stays_refused(tmp_path: Path, seeded_database: Path) -> None:
    # untrusted X-Forwarded-Proto cannot claim TLS; a trusted proxy's can
    form = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    claims_tls = {"Host": "clinic.example", "X-Forwarded-Proto": "https"}
    async with smart(tmp_path, seeded_database) as world:
        refused = await world.client.post("/auth/token", data=form, headers=claims_tls)
        assert refused.status_code == 400 and refused.json()["error"] == "insecure_transport"
    async with smart(tmp_path / "trusted", seeded_database, trusted_proxies=["127.0.0.1"]) as world:
        response = await backend_token(world.client, world, claims_tls)
        assert response.status_code == 200, response.text
        assert claims_of(response.json()["access_token"])["iss"] == f"{BASE}/auth"


async def test_links_ignore_forwarded_headers_from_an_untrusted_peer(tmp_path: Path) -> None:
    async with client_for(Settings(auth="off", sqlite_path=str(tmp_path / "f.db"), validation_workers=0)) as c:
        created = await c.post("/fhir/Patient", content=body(patient()), headers={
            **FHIR_JSON, **EVIL_FORWARDED, "X-Forwarded-Prefix": "/api"})
        assert created.headers["location"].startswith("http://testserver/fhir/Patient/")
        rfc = await c.get("/fhir/Patient", headers={"Forwarded": 'proto=https;host="evil.example"'})
        assert rfc.json()["link"][0]["url"].startswith("http://testserver/fhir/Patient")


async def test_links_follow_a_trusted_proxy(tmp_path: Path) -> None:
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "t.db"), validation_workers=0,
                        trusted_proxies=["127.0.0.0/8", "::1"])
    async with client_for(settings) as c:
        created = await c.post("/fhir/Patient", content=body(patient()), headers={
            **FHIR_JSON, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "clinic.example.org",
            "X-Forwarded-Port": "8443", "X-Forwarded-Prefix": "/api"})
        assert created.headers["location"].startswith("https://clinic.example.org:8443/api/fhir/Patient/")
        default_port = await c.get("/fhir/Patient", headers={"X-Forwarded-Proto": "https",
                                                             "X-Forwarded-Host": "clinic.example.org",
                                                             "X-Forwarded-Port": "443"})
        assert default_port.json()["link"][0]["url"].startswith("https://clinic.example.org/fhir/Patient")


async def test_a_configured_base_still_wins_for_links_behind_a_trusted_proxy(tmp_path: Path) -> None:
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "c.db"), validation_workers=0,
                        trusted_proxies=["127.0.0.1"], base_url="https://fhir.clinic.test/fhir")
    async with client_for(settings) as c:
        created = await c.post("/fhir/Patient", content=body(patient()), headers={**FHIR_JSON, **EVIL_FORWARDED})
        assert created.headers["location"].startswith("https://fhir.clinic.test/fhir/Patient/")


def test_a_trusted_proxy_that_is_not_an_address_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="CARELOOP_TRUSTED_PROXIES"):
        create_app(Settings(auth="off", sqlite_path=str(tmp_path / "x.db"), trusted_proxies=["10.0.0.0/33"]))


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that answers with what the rest of CareLoop would see of the request."""
    answer = orjson.dumps({"client": list(scope["client"]), "scheme": scope["scheme"]})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": answer})


async def seen(peer: str, headers: dict[str, str], trusted: list[str]) -> dict[str, Any]:
    from server.forwarded import ForwardedMiddleware, TrustedProxies

    app = ForwardedMiddleware(_echo, TrustedProxies(trusted))
    transport = httpx.ASGITransport(app=app, client=(peer, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        found: dict[str, Any] = (await client.get("/", headers=headers)).json()
        return found


@pytest.mark.parametrize(("peer", "headers", "client", "scheme"), [
    # an untrusted peer: its own address, whatever it claims
    ("203.0.113.9", {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"}, "203.0.113.9", "http"),
    # a trusted proxy: the address it forwards, and its scheme
    ("10.0.0.2", {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"}, "1.2.3.4", "https"),
    # a chain: trusted hops are skipped from the right; what the client itself sent on the left is not believed
    ("10.0.0.2", {"X-Forwarded-For": "6.6.6.6, 1.2.3.4, 10.0.0.7"}, "1.2.3.4", "http"),
    ("10.0.0.2", {"X-Forwarded-For": "6.6.6.6"}, "6.6.6.6", "http"),
    # RFC 7239, IPv6 in brackets with a port
    ("10.0.0.2", {"Forwarded": 'for="[2001:db8::1]:4711";proto=https, for=10.0.0.9'}, "2001:db8::1", "https"),
    # an obfuscated or malformed address: the proxy's own address stays
    ("10.0.0.2", {"X-Forwarded-For": "unknown"}, "10.0.0.2", "http"),
    ("10.0.0.2", {"Forwarded": "for=_hidden"}, "10.0.0.2", "http"),
    ("10.0.0.2", {"X-Forwarded-Proto": "gopher"}, "10.0.0.2", "http"),
    ("::1", {"X-Forwarded-For": "2001:db8::5"}, "2001:db8::5", "http"),
])
async def test_the_client_address_comes_from_trusted_proxies_only(peer: str, headers: dict[str, str], client: str,
                                                                 scheme: str) -> None:
    found = await seen(peer, headers, ["10.0.0.0/8", "::1"])
    assert (found["client"][0], found["scheme"]) == (client, scheme)


async def test_a_configured_base_of_any_shape_issues_tokens_the_api_accepts(tmp_path: Path,
                                                                          seeded_database: Path) -> None:
    async with smart(tmp_path, seeded_database, base_url="http://localhost:8080/fhir/r4") as world:
        response = await backend_token(world.client, world, {})
        claims = claims_of(response.json()["access_token"])
        assert (claims["iss"], claims["aud"]) == ("http://localhost:8080/fhir/r4/auth", "http://localhost:8080/fhir/r4")
        read = await world.client.get("/fhir/Patient", headers=world.bearer(response.json()["access_token"]))
        assert read.status_code == 200, read.text
