"""Liveness and readiness probes (issue 34, item 4): /healthz answers while the process runs, /readyz only when
the store, the audit trail and the validation workers are ready.

https://kubernetes.io/docs/reference/using-api/health-checks/
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.settings import Settings
from tests.auth.conftest import open_world

pytestmark = pytest.mark.anyio


async def test_ready_when_store_audit_and_validation_are(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        alive = await world.client.get("/healthz")
        assert alive.status_code == 200 and alive.json() == {"status": "ok"}
        ready = await world.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "checks": {"store": "ok", "audit": "ok", "validation": "ok"}}
        assert ready.headers["cache-control"] == "no-store"


async def test_not_ready_while_the_audit_trail_cannot_be_written(tmp_path: Path, seeded_database: Path) -> None:
    # a directory where the audit file should be: the trail cannot open, so no FHIR request may be answered
    (tmp_path / "audit-here").mkdir()
    shutil.copyfile(seeded_database, tmp_path / "fhir.db")
    app = create_app(Settings(sqlite_path=str(tmp_path / "fhir.db"), validation_workers=0,
                              audit_db=str(tmp_path / "audit-here")))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url="http://localhost:8080") as client:
        assert (await client.get("/healthz")).status_code == 200  # alive: restarting it would not help
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        found = ready.json()
        assert found["status"] == "unavailable"
        assert found["checks"]["store"] == "ok" and "cannot be opened" in found["checks"]["audit"]
        assert (await client.get("/fhir/Patient")).status_code == 503


async def test_not_ready_until_the_validation_workers_hold_the_models(tmp_path: Path,
                                                                     seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database, validation_workers=1) as world:
        answers = []
        deadline = time.monotonic() + 180
        while True:
            ready = await world.client.get("/readyz")
            answers.append((ready.status_code, ready.json()["checks"]["validation"]))
            if ready.status_code == 200:
                break
            assert time.monotonic() < deadline, f"never ready: {answers[-1]}"
            await asyncio.sleep(0.2)
        # every answer before the workers were ready named them, and nothing else was the matter
        assert all(a == (503, "workers starting") for a in answers[:-1])
        assert answers[-1] == (200, "ok")
