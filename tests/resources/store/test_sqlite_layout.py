"""The SQLite storage layout: each body stored once and compressed, code systems as numbers, layout checks.

What a client sees must not change with the layout: every version reads back byte for byte, history and
`_at` still work, and searches by system match exactly as before.
https://hl7.org/fhir/R4B/http.html#vread
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from resources.search.index import IndexRows
from resources.store.protocol import Write
from resources.store.sqlite.bodies import decode, decode_many, encode
from resources.store.sqlite.schema import LAYOUT
from resources.store.sqlite.store import SqliteStore
from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio


def _settings(path: Path) -> Settings:
    return Settings(auth="off", sqlite_path=str(path), validation_workers=0)


async def test_every_version_reads_back_and_each_body_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "once.db"
    async with client_for(_settings(db)) as client:
        stored = await create(client, patient(mrn="1"))
        url = f"/fhir/Patient/{stored['id']}"
        versions = [stored]
        for n in (2, 3):
            response = await client.put(url, content=body({**stored, "active": n == 3, "gender": "female"}),
                                        headers=FHIR_JSON)
            assert response.status_code == 200
            versions.append(response.json())
        assert (await client.delete(url)).status_code == 200
        for number, expected in enumerate(versions, start=1):
            read = await client.get(f"{url}/_history/{number}")
            assert read.status_code == 200
            assert read.json() == expected
        assert (await client.get(url)).status_code == 410
        history = (await client.get(f"{url}/_history")).json()
        assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "PUT", "POST"]
        assert [e.get("resource") for e in history["entry"][1:]] == versions[::-1]
        # the version that was current at a moment between the second and third writes
        at = versions[1]["meta"]["lastUpdated"]
        found = (await client.get("/fhir/Patient/_history", params={"_at": at})).json()
        assert [e["resource"]["meta"]["versionId"] for e in found.get("entry", [])
                if e.get("resource", {}).get("id") == stored["id"]] == ["2"]
    conn = sqlite3.connect(db)
    rid = conn.execute("SELECT rid FROM resource WHERE id = ?", (stored["id"],)).fetchone()[0]
    copies = conn.execute("SELECT vid, body IS NOT NULL FROM version WHERE rid = ? ORDER BY vid", (rid,)).fetchall()
    current = conn.execute("SELECT body FROM resource WHERE rid = ?", (rid,)).fetchone()[0]
    conn.close()
    # versions 1-3 each hold their own body; the delete has none, and neither does the resource row now
    assert copies == [(1, 1), (2, 1), (3, 1), (4, 0)]
    assert current is None


async def test_current_body_is_compressed_and_not_duplicated(tmp_path: Path) -> None:
    db = tmp_path / "compressed.db"
    async with client_for(_settings(db)) as client:
        subject = await create(client, patient())
        stored = await create(client, observation(f"Patient/{subject['id']}"))
    raw = orjson.dumps(stored)
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT r.body, v.body FROM resource r JOIN version v ON v.rid = r.rid WHERE r.id = ?",
                       (stored["id"],)).fetchone()
    conn.close()
    assert row[1] is None
    assert row[0][:1] != b"{" and len(row[0]) < len(raw) / 2
    assert orjson.loads(decode(row[0]) or b"") == stored


def test_plain_json_bodies_still_read() -> None:
    plain = b'{"resourceType":"Patient","id":"a"}'
    assert decode(plain) == plain
    assert decode(encode(plain)) == plain
    assert decode(None) is None
    with pytest.raises(ValueError, match="unknown dictionary 9"):
        decode(b"\x09rest")


def test_many_bodies_restore_in_order_whatever_their_form() -> None:
    bodies = [orjson.dumps({"resourceType": "Basic", "id": str(n), "text": "x" * n}) for n in range(5)]
    assert decode_many([encode(b) for b in bodies]) == bodies
    mixed = [encode(bodies[0]), bodies[1], None, encode(bodies[3])]
    assert decode_many(mixed) == [bodies[0], bodies[1], None, bodies[3]]
    assert decode_many([encode(bodies[4])]) == [bodies[4]]
    assert decode_many([]) == []
    with pytest.raises(ValueError, match="unknown dictionary 9"):
        decode_many([encode(bodies[0]), b"\x09rest"])


async def test_a_page_mixing_plain_and_compressed_bodies_reads_back_whole(tmp_path: Path) -> None:
    """Rows written before compression sit beside compressed ones; searches and includes return both intact."""
    db = tmp_path / "mixed.db"
    async with client_for(_settings(db)) as client:
        subject = await create(client, patient())
        stored = [await create(client, observation(f"Patient/{subject['id']}")) for _ in range(4)]
        conn = sqlite3.connect(db)
        for res in (stored[1], subject):  # as an older build left them: plain JSON
            conn.execute("UPDATE resource SET body = ? WHERE id = ?", (orjson.dumps(res), res["id"]))
        conn.commit()
        conn.close()
        found = (await client.get("/fhir/Observation", params={
            "patient": subject["id"], "_include": "Observation:patient"})).json()
        everything = (await client.get(f"/fhir/Patient/{subject['id']}/$everything")).json()
    by_id = {e["resource"]["id"]: e["resource"] for e in found["entry"]}
    assert by_id == {r["id"]: r for r in [*stored, subject]}
    assert sorted(e["resource"]["id"] for e in everything["entry"]) == sorted(r["id"] for r in [*stored, subject])
    assert {e["resource"]["id"]: e["resource"] for e in everything["entry"]} == by_id


async def test_a_rolled_back_system_is_not_remembered(tmp_path: Path) -> None:
    """A code system first numbered in a transaction that rolled back gets its number again when stored."""
    system = "urn:careloop:test:rolled-back"
    rows = IndexRows(tokens=[("identifier", system, "v1", None)])
    store = SqliteStore(str(tmp_path / "systems.db"))
    await store.open()
    try:
        with pytest.raises(RuntimeError):
            async with store.write_session() as session:
                await session.apply([Write("Patient", "a", 1, 0, "create", b"{}", rows, expected_vid=0)])
                raise RuntimeError("the transaction fails after the system was numbered")
        async with store.write_session() as session:
            await session.apply([Write("Patient", "b", 1, 0, "create", b"{}", rows, expected_vid=0)])
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "systems.db")
    found = conn.execute("SELECT s.uri, t.code FROM idx_token t JOIN system s ON s.sid = t.system").fetchall()
    conn.close()
    assert found == [(system, "v1")]


async def test_searches_by_system_match_exactly(tmp_path: Path) -> None:
    async with client_for(_settings(tmp_path / "search.db")) as client:
        first = patient(mrn="7")
        first["identifier"] = [{"system": "urn:careloop:test:a", "value": "v1"}]
        second = patient(mrn="8")
        second["identifier"] = [{"system": "urn:careloop:test:b", "value": "v1"}]
        ids = [(await create(client, first))["id"], (await create(client, second))["id"]]

        async def found(value: str) -> list[str]:
            bundle = (await client.get("/fhir/Patient", params={"identifier": value})).json()
            return [e["resource"]["id"] for e in bundle.get("entry", [])]

        assert await found("urn:careloop:test:a|v1") == ids[:1]
        assert await found("urn:careloop:test:b|v1") == ids[1:]
        assert sorted(await found("v1")) == sorted(ids)
        assert await found("urn:never:stored|v1") == []


async def test_a_file_of_an_earlier_layout_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE resource (rid INTEGER PRIMARY KEY, type TEXT, id TEXT)")
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()
    store = SqliteStore(str(path))
    with pytest.raises(SystemExit, match=f"storage layout 0.*reads layout {LAYOUT}"):
        await store.open()
    await store.close()
    fresh = SqliteStore(str(tmp_path / "new.db"))
    await fresh.open()
    await fresh.close()
    conn = sqlite3.connect(tmp_path / "new.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LAYOUT
    conn.close()
