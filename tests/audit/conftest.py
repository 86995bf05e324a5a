"""Fixtures for the audit trail tests: the SMART-on world, an auditor's view of the trail, callers built directly."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from consent.access import Access, BoundGuard
from consent.scopes import parse_scopes
from resources.guard import GUARD
from resources.models import resource_types
from server.app import create_app
from server.settings import Settings
from tests.auth.conftest import BASE, FHIR, World, open_world


@pytest.fixture
async def world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, seeded_database) as found:
        yield found


def forge(world: World, **claims: Any) -> dict[str, str]:
    """Bearer headers of an access token signed with the server's own key, with the claims given."""
    now = int(time.time())
    base = {"iss": f"{BASE}/auth", "aud": FHIR, "sub": "x", "client_id": "x", "scope": "system/*.cruds",
            "iat": now, "exp": now + 600, "jti": f"jti-{time.monotonic_ns()}",
            "purpose_of_use": ["TREAT"]}  # every token the server issues names its purposes (default TREAT)
    return world.bearer(world.auth.signer.sign({**base, **claims}, "at+jwt"))


async def auditor(world: World) -> dict[str, str]:
    """A backend client's token with the audit scope."""
    return world.bearer(await world.backend_token("system/AuditEvent.rs"))


async def trail(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: str) -> list[dict[str,
                                                                                                               Any]]:
    """The stored AuditEvents matching the parameters, oldest first."""
    response = await client.get("/fhir/AuditEvent", params={"_count": "1000", **params}, headers=headers or {})
    assert response.status_code == 200, response.text
    return sorted((e["resource"] for e in response.json().get("entry", [])), key=sequence)


def sequence(event: dict[str, Any]) -> int:
    """The chain sequence of an event."""
    for extension in event.get("extension", ()):
        if extension["url"].endswith("audit-chain"):
            return int(next(e["valueInteger"] for e in extension["extension"] if e["url"] == "sequence"))
    raise AssertionError("the event carries no chain link")


def request_id(event: dict[str, Any]) -> str | None:
    """The X-Request-Id an event names."""
    for entity in event.get("entity", ()):
        if entity.get("type", {}).get("code") == "XrequestId":
            return str(entity["what"]["identifier"]["value"])
    return None


def of_request(events: list[dict[str, Any]], rid: str) -> list[dict[str, Any]]:
    """The events of one request."""
    return [e for e in events if request_id(e) == rid]


class AsCaller:
    """Serves every request as the Access given (the token fields other parts fill: roles, purposes, break-glass).

    Stands where the token check stands (authorization off, so it passes through): it sets the request's Access and
    guard exactly as server/auth/bearer.py does from a verified token.
    """

    def __init__(self, app: ASGIApp, caller: dict[str, Access]) -> None:
        self.app = app
        self.caller = caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        access = self.caller.get("access")
        if scope["type"] != "http" or access is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["access"] = access
        token = GUARD.set(BoundGuard(scope["app"].state.services.policy, access))
        try:
            await self.app(scope, receive, send)
        finally:
            GUARD.reset(token)


def access(scope: str, **fields: Any) -> Access:
    """An Access with the scopes given and the other fields set directly."""
    scopes, _ = parse_scopes(scope, frozenset(resource_types()))
    return Access(scopes, **{"purposes": ("TREAT",), **fields})  # tokens name their purposes (default TREAT)


@asynccontextmanager
async def caller_app(tmp_path: Path, seeded_database: Path, **settings: Any) -> AsyncIterator[
        tuple[FastAPI, httpx.AsyncClient, dict[str, Access]]]:
    """An app whose callers are set per request in the returned dict (key "access"; none: full access)."""
    import shutil

    shutil.copyfile(seeded_database, tmp_path / "fhir.db")
    app = create_app(Settings(**{"auth": "off", "sqlite_path": str(tmp_path / "fhir.db"), "validation_workers": 0,
                                 **settings}))
    caller: dict[str, Access] = {}
    # inside the audit edge and the token check, as the token check's own result would be
    app.user_middleware.append(_middleware(caller))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url=BASE) as client:
        yield app, client, caller


def _middleware(caller: dict[str, Access]) -> Any:
    from starlette.middleware import Middleware

    return Middleware(AsCaller, caller=caller)
