"""Shared fixtures: a real SQLite file per test, the ASGI app with its lifespan, and an HTTP client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from server.app import create_app
from server.settings import Settings

DATA = Path(__file__).parent / "data"
FHIR_JSON = {"content-type": "application/fhir+json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `python -m server serve` process on a free port; yields its FHIR base URL."""
    port = free_port()
    db = tmp_path_factory.mktemp("live") / "live.db"
    env = {**os.environ, "CARELOOP_LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--db", str(db)],
                               cwd=Path(__file__).parent.parent, env=env)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(sqlite_path=str(tmp_path / "careloop.db"), validation_workers=0)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a fresh app with its own settings (lifespan included)."""
    application = create_app(settings)
    transport = httpx.ASGITransport(app=application)
    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def body(value: Any) -> bytes:
    """FHIR JSON bytes of a value."""
    return orjson.dumps(value)


def issue_code(response: httpx.Response) -> str:
    """The first OperationOutcome issue code of an error answer."""
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return str(outcome["issue"][0]["code"])


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    """POST a resource and return the stored representation."""
    response = await client.post(f"/fhir/{resource['resourceType']}", content=body(resource), headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    stored: dict[str, Any] = response.json()
    return stored
