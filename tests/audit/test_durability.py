"""Durable before the answer, and mandatory: a killed server loses no answered request's event; no trail, no data.

https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.settings import Settings
from tests.audit.conftest import request_id
from tests.conftest import FHIR_JSON, free_port, serving


async def _answered(base: str, count: int) -> set[str]:
    """Request ids of `count` concurrent requests (reads, searches and creates) that were answered with success."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        created = await client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
        pid = created.json()["id"]

        async def one(n: int) -> str | None:
            rid = f"kill-{n}"
            if n % 3 == 0:
                response = await client.get(f"/Patient/{pid}", headers={"X-Request-Id": rid})
            elif n % 3 == 1:
                response = await client.get("/Patient", params={"_id": pid}, headers={"X-Request-Id": rid})
            else:
                response = await client.post("/Patient", json={"resourceType": "Patient"},
                                             headers={**FHIR_JSON, "X-Request-Id": rid})
            return rid if response.status_code in (200, 201) and response.headers["x-request-id"] == rid else None

        found = await asyncio.gather(*(one(n) for n in range(count)))
        return {rid for rid in found if rid is not None}


async def _recorded(base: str) -> set[str]:
    found: set[str] = set()
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        url: str | None = "/AuditEvent?_count=500"
        while url:
            page = (await client.get(url)).json()
            found.update(rid for e in page.get("entry", []) if (rid := request_id(e["resource"])))
            url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return found


def test_every_answered_request_is_in_the_trail_after_kill_9(tmp_path: Path, seeded_database: Path) -> None:
    db = tmp_path / "live.db"
    shutil.copyfile(seeded_database, db)
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    env = {**os.environ, "CARELOOP_LOG_LEVEL": "warning", "CARELOOP_AUTH": "off"}
    with serving(port, db, env, base) as process:
        answered = asyncio.run(_answered(base, 60))
        os.kill(process.pid, signal.SIGKILL)  # right after the answers: no shutdown, no final checkpoint
        process.wait(timeout=30)
    assert len(answered) == 60
    with serving(port, db, env, base):
        recorded = asyncio.run(_recorded(base))
    assert answered <= recorded, sorted(answered - recorded)


@pytest.mark.anyio
async def test_no_audit_trail_means_503_with_nothing_returned_and_nothing_done(tmp_path: Path,
                                                                            seeded_database: Path) -> None:
    db = tmp_path / "fhir.db"
    shutil.copyfile(seeded_database, db)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the audit store's directory should be")
    settings = Settings(auth="off", sqlite_path=str(db), validation_workers=0,
                        audit_db=str(blocker / "audit.sqlite"))
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url="http://testserver") as client:
        before = sqlite3.connect(db).execute("SELECT count(*) FROM resource WHERE type = 'Patient'").fetchone()
        for response in (await client.get("/fhir/Patient"), await client.get("/fhir/CodeSystem?_count=1"),
                         await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)):
            assert response.status_code == 503 and response.headers["retry-after"]
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "transient"
            assert "audit trail cannot be written" in outcome["issue"][0]["diagnostics"]
            assert "entry" not in outcome
        after = sqlite3.connect(db).execute("SELECT count(*) FROM resource WHERE type = 'Patient'").fetchone()
        assert after == before
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert "NotADirectoryError" in health.json()["audit"] or "FileExistsError" in health.json()["audit"]
    app = create_app(Settings(auth="off", sqlite_path=str(db), validation_workers=0))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url="http://testserver") as client:
        health = await client.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "ok", "audit": "ok"}
