"""The hash chain and signed checkpoints: edited, deleted and truncated records are each found by $verify-audit.

The rows are changed behind the API, in the audit log's SQLite file itself (audit_record, audit_index,
audit_checkpoint). https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from consent.audit.chain import CHECKPOINT_TYPE
from server.app import create_app
from server.settings import Settings
from tests.audit.conftest import auditor, sequence, trail
from tests.auth.conftest import BASE, FHIR, World, open_world

pytestmark = pytest.mark.anyio


@pytest.fixture
async def world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, seeded_database, audit_checkpoint_events=5) as found:
        yield found


def audit_file(world: World) -> Path:
    return Path(world.app.state.services.settings.sqlite_path).with_name("fhir-audit.sqlite")


def parts(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters as {name: value or {part name: value}}."""
    found: dict[str, Any] = {}
    for parameter in parameters["parameter"]:
        if "part" in parameter:
            found[parameter["name"]] = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
                                        for p in parameter["part"]}
        else:
            found[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return found


async def verify(world: World) -> dict[str, Any]:
    response = await world.client.post("/fhir/$verify-audit", json={"resourceType": "Parameters"},
                                       headers={**await auditor(world), "content-type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    return parts(response.json())


async def some_requests(world: World, count: int = 12) -> list[dict[str, Any]]:
    for _ in range(count):
        assert (await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=world.admin)).status_code == 200
    return await trail(world.client, await auditor(world))


def rows(world: World) -> sqlite3.Connection:
    return sqlite3.connect(audit_file(world), isolation_level=None)


def seq_of(event_id: str) -> int:
    """The record an AuditEvent was materialised from (its id is `<record>-<member>`)."""
    return int(event_id.split("-")[0])


def remove(conn: sqlite3.Connection, event_id: str) -> None:
    """Delete an event's record and its index entries, as someone with the file would to hide it."""
    conn.execute("DELETE FROM audit_record WHERE seq = ?", (seq_of(event_id),))
    conn.execute("DELETE FROM audit_index WHERE seq = ?", (seq_of(event_id),))


async def test_an_intact_trail_verifies_and_its_checkpoints_verify_with_the_published_keys(world: World) -> None:
    events = await some_requests(world)
    assert [sequence(e) for e in events] == list(range(1, len(events) + 1))
    report = await verify(world)
    assert report["result"] is True and report["checked"] >= len(events)
    assert report["checkpoint"]["signature"] == "valid" and report["checkpoint"]["sequence"] >= 5
    with rows(world) as conn:
        points = conn.execute("SELECT chain, n, hash, jws FROM audit_checkpoint").fetchall()
    assert points and all(jws for *_, jws in points)
    keys = (await world.client.get("/auth/jwks")).json()
    for chain, n, digest, jws in points:
        decoded = jwt.decode(jws, KeySet.import_key_set(keys), algorithms=["RS256"])
        assert decoded.header["typ"] == CHECKPOINT_TYPE
        assert (decoded.claims["chain"], decoded.claims["seq"], decoded.claims["hash"]) == (chain, n, digest)


async def test_an_edited_row_is_found(world: World) -> None:
    events = await some_requests(world)
    target = events[2]
    with rows(world) as conn:  # the request's facts: its answer's status made a failure's
        (stored, chain) = conn.execute("SELECT body, chain FROM audit_record WHERE seq = ?",
                                       (seq_of(target["id"]),)).fetchone()
        edited = orjson.loads(stored)
        edited[2][2] = 404
        conn.execute("UPDATE audit_record SET body = ? WHERE seq = ?", (orjson.dumps(edited), seq_of(target["id"])))
    assert (await world.client.get(f"/fhir/AuditEvent/{target['id']}", headers=await auditor(world))).json()[
        "outcome"] == "4"  # what a reader sees is made of the edited record
    report = await verify(world)
    assert report["result"] is False
    assert report["break"] == {"sequence": 3, "event": {"reference": f"AuditEvent/{target['id']}"},
                               "problem": "altered", "detail": "the record's content does not match its hash",
                               "chain": chain}


async def test_a_deleted_row_is_found(world: World) -> None:
    events = await some_requests(world)
    target = events[3]
    with rows(world) as conn:
        remove(conn, target["id"])
    report = await verify(world)
    assert report["result"] is False
    assert report["break"]["sequence"] == 4 and report["break"]["problem"] == "missing"


async def reopened_report(path: Path) -> dict[str, Any]:
    """$verify-audit of a server started again on the same files."""
    app = create_app(Settings(sqlite_path=str(path), validation_workers=0, base_url=FHIR))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url=BASE) as client:
        record, secret = app.state.services.auth.add_client("auditor", "confidential-symmetric",
                                                            "system/AuditEvent.rs", [])
        token = (await client.post("/auth/token", data={"grant_type": "client_credentials",
                                                        "scope": "system/AuditEvent.rs"},
                                   auth=(record.client_id, secret or ""))).json()["access_token"]
        response = await client.get("/fhir/$verify-audit", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        return parts(response.json())


async def test_a_truncated_tail_is_found_by_the_running_writer(world: World) -> None:
    await some_requests(world)
    with rows(world) as conn:  # the newest event, written after the last checkpoint
        (newest,) = conn.execute("SELECT seq FROM audit_record ORDER BY seq DESC LIMIT 1").fetchone()
        remove(conn, f"{newest}-0")
    # the running writer goes on from the head it wrote, so the loss shows as a gap before its next event
    report = await verify(world)
    assert report["result"] is False and report["break"]["problem"] == "missing"


async def test_a_truncated_tail_is_found_after_a_restart_by_the_signed_checkpoint(tmp_path: Path,
                                                                                 seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database, audit_checkpoint_events=5) as world:
        await some_requests(world)
    with sqlite3.connect(tmp_path / "fhir-audit.sqlite", isolation_level=None) as conn:
        (checkpointed,) = conn.execute("SELECT max(n) FROM audit_checkpoint").fetchone()
        tail = [seq for (seq,) in conn.execute("SELECT seq FROM audit_record WHERE n > ?", (checkpointed - 2,))]
        for seq in tail:
            remove(conn, f"{seq}-0")
    # started again, the writer knows only what is stored: the signed checkpoint still shows the loss
    report = await reopened_report(tmp_path / "fhir.db")
    assert report["result"] is False
    assert "checkpoint" in report.get("truncation", "") or report["break"]["problem"] == "altered", report
