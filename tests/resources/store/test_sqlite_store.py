"""The embedded SQLite store: durability, optimistic concurrency, the outbox, atomic rollback.

https://hl7.org/fhir/R4B/http.html#concurrency
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from resources.errors import Conflict, Invalid
from resources.models import resource_types
from resources.repository import Repository
from resources.search.index import Indexer, load_patient_compartment
from resources.search.parse import SearchLimits, parse_search
from resources.search.registry import default_registry
from resources.store.protocol import HistoryQuery
from resources.store.sqlite import reads
from resources.store.sqlite.store import SqliteStore, SqliteWriteSession, _shape
from server.app import build_store
from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create
from tests.factories import patient
from tests.resources.store.change_feed import check_change_feed, check_subscription_events

pytestmark = pytest.mark.anyio


def repository(store: SqliteStore) -> Repository:
    registry = default_registry(resource_types())
    return Repository(store, registry, Indexer(registry, load_patient_compartment()))


async def test_data_survives_restart(tmp_path: Path) -> None:
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "durable.db"), validation_workers=0)
    async with client_for(settings) as client:
        stored = await create(client, patient(mrn="9"))
        await client.put(f"/fhir/Patient/{stored['id']}", content=body({**stored, "active": True}),
                         headers=FHIR_JSON)
    async with client_for(settings) as client:
        read = await client.get(f"/fhir/Patient/{stored['id']}")
        assert read.status_code == 200
        assert read.json()["active"] is True
        assert (await client.get(f"/fhir/Patient/{stored['id']}/_history/1")).status_code == 200
        found = await client.get("/fhir/Patient", params={"identifier": "urn:oid:1.2.36.146.595.217.0.1|9"})
        assert len(found.json()["entry"]) == 1


async def test_concurrent_updates_with_same_if_match_one_wins(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    url = f"/fhir/Patient/{stored['id']}"

    async def attempt(n: int) -> int:
        changed = {**stored, "name": [{"family": f"Writer{n}"}]}
        response = await client.put(url, content=body(changed), headers={**FHIR_JSON, "If-Match": 'W/"1"'})
        return response.status_code

    statuses = await asyncio.gather(*(attempt(n) for n in range(12)))
    assert sorted(statuses) == [200] + [412] * 11
    final = (await client.get(url)).json()
    assert final["meta"]["versionId"] == "2"
    history = (await client.get(f"{url}/_history")).json()
    assert len(history["entry"]) == 2


async def test_concurrent_creates_lose_nothing(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(client.post("/fhir/Patient", content=body(patient(mrn=str(n))),
                                                   headers=FHIR_JSON) for n in range(40)))
    assert all(r.status_code == 201 for r in responses)
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 40
    listed = (await client.get("/fhir/Patient", params={"_count": "100"})).json()
    assert {e["resource"]["id"] for e in listed["entry"]} == ids


async def test_outbox_records_every_change_in_order(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "o.db"))
    await store.open()
    try:
        repo = repository(store)
        created = await repo.create("Patient", patient())
        await repo.update("Patient", created.resource.id, {**patient(), "id": created.resource.id})
        await repo.delete("Patient", created.resource.id)
        events = await store.outbox(0, 10)
        assert [(e.type, e.id, e.vid, e.action) for e in events] == [
            ("Patient", created.resource.id, 1, "create"), ("Patient", created.resource.id, 2, "update"),
            ("Patient", created.resource.id, 3, "delete")]
        assert [e.seq for e in events] == sorted(e.seq for e in events)
        assert await store.outbox(events[-1].seq, 10) == []
    finally:
        await store.close()


async def test_failed_write_leaves_no_version_and_no_event(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "f.db"))
    await store.open()
    try:
        repo = repository(store)
        with pytest.raises(RuntimeError):
            async with store.write_session() as session:
                write = repo.prepare("Patient", "p1", patient(), 1, 1_700_000_000_000, "create", 0, "PUT")
                await session.apply([write])
                raise RuntimeError("abort after the write")
        assert await store.read("Patient", "p1") is None
        assert await store.outbox(0, 10) == []
        assert await store.history(HistoryQuery()) == []
        with pytest.raises(Invalid):
            await repo.create("Patient", {"resourceType": "Patient", "gender": 7})
        assert await store.outbox(0, 10) == []
    finally:
        await store.close()


async def test_a_write_cancelled_while_it_begins_leaves_the_writer_usable(tmp_path: Path) -> None:
    # a background job cancelled at shutdown (escalation, surveys, recomputation) may be cancelled at any await
    # of a write session, the first included: the next writer must still find no transaction open
    store = SqliteStore(str(tmp_path / "c.db"))
    await store.open()
    try:
        repo = repository(store)

        async def write(pid: str) -> None:
            async with store.write_session() as session:
                await session.apply([repo.prepare("Patient", pid, patient(), 1, 1_700_000_000_000, "create", 0,
                                                  "PUT")])

        for attempt in range(20):
            task = asyncio.create_task(write(f"cancelled{attempt}"))
            while not store._lock.locked():  # the session holds the writer: it is beginning its transaction
                await asyncio.sleep(0)
            time.sleep(0.002 * (attempt % 4))  # the writer thread gets the GIL: BEGIN runs before the cancel lands
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await write(f"next{attempt}")  # refused with "cannot start a transaction within a transaction"
            await store.record_events([], {"probe": attempt}, {})
            assert await store.read("Patient", f"next{attempt}") is not None
            assert await store.read("Patient", f"cancelled{attempt}") is None
    finally:
        await store.close()


async def test_in_memory_store_works() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    try:
        repo = repository(store)
        created = await repo.create("Patient", patient())
        assert (await repo.read("Patient", created.resource.id)).vid == 1
    finally:
        await store.close()


async def test_mixed_writes_in_one_transaction_and_duplicate_create(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "m.db"))
    await store.open()
    try:
        repo = repository(store)
        stamp = 1_700_000_000_000
        async with store.write_session() as session:
            await session.apply([
                repo.prepare("Patient", "a", patient(), 1, stamp, "create", 0, "POST"),
                repo.prepare("Patient", "b", patient(), 1, stamp, "create", None, "PUT"),
                repo.prepare("Patient", "c", patient(), 1, stamp, "create", 0, "POST"),
            ])
        assert [(await store.read("Patient", i)).vid for i in "abc"] == [1, 1, 1]  # type: ignore[union-attr]
        with pytest.raises(Conflict):
            async with store.write_session() as session:
                await session.apply([repo.prepare("Patient", "a", patient(), 1, stamp, "create", 0, "POST")])
        assert len(await store.outbox(0, 10)) == 3
    finally:
        await store.close()


async def test_subscription_events_and_cursors(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "events.db"))
    await store.open()
    try:
        await check_subscription_events(store)
    finally:
        await store.close()
    reopened = SqliteStore(str(tmp_path / "events.db"))
    await reopened.open()
    try:  # the events outlive the process
        assert [e.number for e in await reopened.subscription_events("s1", 0, None, 10)] == [3, 4, 5]
    finally:
        await reopened.close()


async def test_change_feed_and_marks(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "feed.db"))
    await store.open()
    try:
        await check_change_feed(store)
    finally:
        await store.close()
    reopened = SqliteStore(str(tmp_path / "feed.db"))
    await reopened.open()
    try:  # a consumer's position outlives the process
        assert await reopened.mark("feed") == await reopened.last_seq()
    finally:
        await reopened.close()


async def test_the_page_cache_of_every_connection_is_the_configured_size(tmp_path: Path) -> None:
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "cache.db"), sqlite_cache_mib=8)
    registry = default_registry(resource_types())
    store = build_store(settings, registry)
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        def size(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA cache_size").fetchone()[0])

        readers = {await store._on_reader(size) for _ in range(6)}
        writer = await store._on_writer(size, store._wconn())
        assert readers == {-8 * 1024} and writer == -8 * 1024  # KiB
    finally:
        await store.close()


async def _load_patients(settings: Settings, count: int) -> None:
    entries = [{"resource": patient(family=f"Inline{n:03d}", mrn=str(n)),
                "request": {"method": "POST", "url": "Patient"}} for n in range(count)]
    async with client_for(settings) as client:
        response = await client.post("/fhir", content=body({"resourceType": "Bundle", "type": "transaction",
                                                            "entry": entries}), headers=FHIR_JSON)
        assert response.status_code == 200, response.text


async def test_searches_answer_alike_inline_on_a_thread_and_when_moved_past_the_budget(
        settings: Settings) -> None:
    await _load_patients(settings, 300)
    queries = [{"family": "inline", "_count": "500", "_total": "accurate", "_sort": "-family"},
               {"family": "Inline1", "_count": "20"}, {"identifier": "urn:oid:1.2.36.146.595.217.0.1|42"},
               {"family": "inline", "_count": "7", "_sort": "family", "_elements": "name"}]
    answers = []
    # 0: every search on a reader thread; 1e-6 ms: every search long enough to be checked moves to a thread
    # after it began on the event loop; the default budget: most searches finish on the event loop
    for budget in (0.0, 1e-6, 1.0):
        async with client_for(settings.model_copy(update={"sqlite_inline_ms": budget})) as client:
            found = []
            for params in queries:
                response = await client.get("/fhir/Patient", params=params)
                assert response.status_code == 200, response.text
                bundle = response.json()
                found.append((bundle.get("total"), [e["resource"]["id"] for e in bundle.get("entry", [])],
                              [e["resource"].get("name") for e in bundle.get("entry", [])]))
            answers.append(found)
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0][0] == 300 and len(answers[0][0][1]) == 300
    assert len(answers[0][2][1]) == 1


async def test_a_search_past_its_budget_on_the_event_loop_is_finished_on_a_reader_thread(
        settings: Settings) -> None:
    await _load_patients(settings, 300)
    registry = default_registry(resource_types())
    clock = _Clock()
    store = SqliteStore(settings.sqlite_path, inline_ms=1e-6, clock=clock)
    await store.open()
    try:
        parsed = parse_search("Patient", [("family", "inline"), ("_total", "accurate"), ("_count", "1000")],
                              registry, SearchLimits())
        query = parsed.query
        assert store._search_inline(reads.search, query) is None  # stopped by the progress handler, not an error
        page = await store.search(query)
        assert page.total == 300 and len(page.resources) == 300
        # the shape overran on the thread too, so it goes straight to a thread afterwards, same answer
        assert store._long_shapes == {_shape(query)}
        readings = clock.readings
        again = await store.search(query)
        assert [r.id for r in again.resources] == [r.id for r in page.resources]
        assert clock.readings == readings + 2  # the thread's start and end: no deadline set on the loop
        assert store._long_shapes == {_shape(query)}
        # the event loop's connection is usable afterwards, with no budget left behind
        assert (await store.read("Patient", page.resources[0].id)) is not None
    finally:
        await store.close()


class _Clock:
    """perf_counter, counting its readings; with a stall, a second ahead from the given reading on."""

    def __init__(self, stall_at: int | None = None) -> None:
        self.readings = 0
        self.stall_at = stall_at

    def __call__(self) -> float:
        self.readings += 1
        stalled = self.stall_at is not None and self.readings >= self.stall_at
        return time.perf_counter() + (1.0 if stalled else 0.0)


async def test_a_search_that_overran_only_because_the_process_stalled_stays_on_the_event_loop(
        settings: Settings) -> None:
    await _load_patients(settings, 300)
    registry = default_registry(resource_types())
    clock = _Clock(stall_at=2)  # the process stalls right after the loop set its deadline
    store = SqliteStore(settings.sqlite_path, inline_ms=20.0, clock=clock)
    await store.open()
    try:
        query = parse_search("Patient", [("family", "inline"), ("_total", "accurate"), ("_count", "10")],
                             registry, SearchLimits()).query
        page = await store.search(query)  # stopped on the loop by the stall, answered on a thread
        assert page.total == 300 and len(page.resources) == 10
        assert clock.readings >= 4  # the loop's deadline and check, then the thread's start and end
        # on the thread it took less than the 20 ms budget: the overrun was the stall, so the shape is not
        # sent to threads, and the next search of it finishes on the loop (with the reader threads gone)
        assert store._long_shapes == set()
        store._readers.shutdown()
        again = await store.search(query)
        assert [r.id for r in again.resources] == [r.id for r in page.resources] and again.total == 300
    finally:
        await store.close()


async def test_the_event_loops_connection_keeps_its_own_page_cache_size(settings: Settings) -> None:
    configured = settings.model_copy(update={"sqlite_cache_mib": 5, "sqlite_loop_cache_mib": 3})
    store = build_store(configured, default_registry(resource_types()))
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        def cache_kib(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA cache_size").fetchone()[0])

        # negative: KiB. The loop's connection serves reads by id and short searches; readers the long ones
        assert cache_kib(store._inline_conn()) == -3 * 1024
        assert await store._on_reader(cache_kib) == -5 * 1024
        defaults = Settings.model_fields
        assert defaults["sqlite_loop_cache_mib"].default == 8 and defaults["sqlite_cache_mib"].default == 32
    finally:
        await store.close()


def _sqlite_memory_used() -> int:
    """Bytes SQLite holds in this process (page caches included), from the library Python's sqlite3 uses."""
    library = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return int(library.sqlite3_memory_used())


async def test_the_writer_hands_its_page_cache_back_once_writes_pause(settings: Settings) -> None:
    released = []
    store = SqliteStore(settings.sqlite_path, writer_idle_s=0.3, on_release=lambda: released.append(True))
    await store.open()
    try:
        repo = repository(store)
        before = _sqlite_memory_used()
        for n in range(1000):
            await repo.create("Patient", patient(family=f"Cache{n:04d}", mrn=str(n)))
        filled = _sqlite_memory_used()
        assert filled - before > 1_000_000  # the ingest filled the writer's cache
        await asyncio.sleep(0.15)
        assert not released  # writes paused for less than the idle time: kept
        # the idle check runs at least 0.5 s apart, and the hand-back itself runs on the writer thread,
        # which a busy machine (tests in parallel) may delay: wait for it rather than for a fixed time
        for _ in range(100):
            if released:
                break
            await asyncio.sleep(0.05)
        assert released == [True]
        assert _sqlite_memory_used() < before + (filled - before) / 4
        # writing again works and reads back: the cache refills from the file
        await repo.create("Patient", patient(family="Cache-after", mrn="after"))
        query = parse_search("Patient", [("family", "cache"), ("_total", "accurate")],
                             default_registry(resource_types()), SearchLimits()).query
        assert (await store.search(query)).total == 1001
    finally:
        await store.close()


async def test_a_finished_write_session_and_its_writes_are_freed_at_once(client: httpx.AsyncClient) -> None:
    # The server runs the cycle collector rarely (gc.freeze, a high threshold), so a session that only it
    # can free holds the bodies and index rows of its writes long after the answer: memory after a load.
    gc.collect()
    gc.disable()
    try:
        await create(client, patient(mrn="1"))
        entries = [{"resource": patient(family=f"Batch{n}"), "request": {"method": "POST", "url": "Patient"}}
                   for n in range(20)]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        answer = await client.post("/fhir", content=body(bundle), headers=FHIR_JSON)
        assert answer.status_code == 200
        held = [o for o in gc.get_objects() if isinstance(o, SqliteWriteSession)]
    finally:
        gc.enable()
    assert held == []
