"""Shared fixtures: a real SQLite file per test, the ASGI app with its lifespan, and an HTTP client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from fastapi import FastAPI

from resources.ids import now_ms
from resources.search.dates import format_instant
from server.app import create_app
from server.settings import Settings

DATA = Path(__file__).parent / "data"
FHIR_JSON = {"content-type": "application/fhir+json"}


def pytest_report_header() -> str:
    """Say which MongoDB the store conformance suite (tests/conformance) runs against."""
    url = os.environ.get("CARELOOP_TEST_MONGODB_URL")
    target = (f"a real MongoDB at {url}" if url else
              "the in-process stand-in (mongomock); set CARELOOP_TEST_MONGODB_URL for a real replica set")
    return f"store conformance: SQLite, and MongoDB on {target}"


def pytest_configure(config: pytest.Config) -> None:
    """No disk reserve (8 MiB per data folder, a thousand folders) in the suite; tests/reliability sets its own."""
    os.environ.setdefault("CARELOOP_DISK_RESERVE_MIB", "0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_serving(process: subprocess.Popen[Any], base: str, seconds: float = 90) -> None:
    """Wait until a started server answers GET {base}/metadata; fail if it exits or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.2)


@contextmanager
def serving(port: int, db: Path, env: dict[str, str], base: str, stdout: Any = None) -> Iterator[
        subprocess.Popen[str]]:
    """`python -m server serve` on `port` and `db` with `env`, once it answers at `base`; stopped afterwards."""
    process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--db", str(db)],
                               cwd=Path(__file__).parent.parent, env=env, stdout=stdout, text=True)
    try:
        wait_until_serving(process, base)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `python -m server serve` process on a free port; yields its FHIR base URL."""
    port = free_port()
    db = tmp_path_factory.mktemp("live") / "live.db"
    env = {**os.environ, "CARELOOP_LOG_LEVEL": "warning", "CARELOOP_AUTH": "off"}
    base = f"http://127.0.0.1:{port}/fhir"
    with serving(port, db, env, base):
        yield base


@pytest.fixture(scope="session")
def seeded_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the shipped terminology, made once: each test starts from a copy of the file."""
    path = tmp_path_factory.mktemp("template") / "seeded.db"

    async def build() -> None:
        application = create_app(Settings(auth="off", sqlite_path=str(path), validation_workers=0))
        async with application.router.lifespan_context(application):
            pass

    anyio.run(build)
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    return path


_started = {"at": "1970-01-01T00:00:00Z"}


@pytest.fixture(autouse=True)
def _mark_test_start() -> None:
    """Remember when the test began: the shipped terminology in the store is older than that."""
    _started["at"] = format_instant(now_ms())


def changes_since_start() -> dict[str, str]:
    """Query parameters of a system history holding only what the running test wrote."""
    return {"_since": _started["at"]}


@pytest.fixture
def settings(tmp_path: Path, seeded_database: Path) -> Settings:
    target = tmp_path / "careloop.db"
    shutil.copyfile(seeded_database, target)
    return Settings(auth="off", sqlite_path=str(target), validation_workers=0)


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
