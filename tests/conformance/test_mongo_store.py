"""Store-level behaviour on the MongoDB adapter: outbox, atomic rollback, conflicts, concurrency, the envelope,
start-up checks and outages.

https://hl7.org/fhir/R4B/http.html#concurrency, https://www.mongodb.com/docs/manual/core/transactions/
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo.errors import AutoReconnect

from resources.errors import Conflict
from resources.models import resource_types
from resources.repository import Repository
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.mongo.store import MongoStore
from resources.store.protocol import HistoryQuery
from server.app import create_app
from tests.conformance.conftest import MONGODB_URL, mongo_settings
from tests.conftest import FHIR_JSON, body, create
from tests.factories import patient
from tests.resources.store.change_feed import check_change_feed, check_subscription_events
from tests.resources.store.test_sqlite_store import (  # noqa: F401 -- the same tests on this folder's store
    test_concurrent_creates_lose_nothing,
    test_concurrent_updates_with_same_if_match_one_wins,
)
from tests.support.mongo_standin import StandInClient

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store() -> AsyncIterator[MongoStore]:
    settings, client = mongo_settings()
    found = MongoStore(settings.mongodb_url, settings.mongodb_database, client=client)
    await found.open()
    try:
        yield found
    finally:
        await found.close()


def repository(store: MongoStore) -> Repository:
    registry = default_registry(resource_types())
    return Repository(store, registry, Indexer(registry, load_patient_compartment()))


async def test_outbox_records_every_change_in_order(store: MongoStore) -> None:
    repo = repository(store)
    created = await repo.create("Patient", patient())
    await repo.update("Patient", created.resource.id, {**patient(), "id": created.resource.id})
    await repo.delete("Patient", created.resource.id)
    events = await store.outbox(0, 10)
    assert [(e.type, e.id, e.vid, e.action) for e in events] == [
        ("Patient", created.resource.id, 1, "create"), ("Patient", created.resource.id, 2, "update"),
        ("Patient", created.resource.id, 3, "delete")]
    assert await store.outbox(events[-1].seq, 10) == []


async def test_failed_write_session_leaves_nothing(store: MongoStore) -> None:
    repo = repository(store)
    with pytest.raises(RuntimeError):
        async with store.write_session() as session:
            await session.apply([repo.prepare("Patient", "p1", patient(), 1, 1_700_000_000_000, "create", 0,
                                              "PUT")])
            raise RuntimeError("abort after the write")
    assert await store.read("Patient", "p1") is None
    assert await store.outbox(0, 10) == []
    assert await store.history(HistoryQuery()) == []


async def test_duplicate_create_and_stale_version_conflict(store: MongoStore) -> None:
    repo = repository(store)
    stamp = 1_700_000_000_000
    async with store.write_session() as session:
        await session.apply([repo.prepare("Patient", "a", patient(), 1, stamp, "create", 0, "POST"),
                             repo.prepare("Patient", "b", patient(), 1, stamp, "create", None, "PUT")])
    with pytest.raises(Conflict):
        async with store.write_session() as session:
            await session.apply([repo.prepare("Patient", "a", patient(), 1, stamp, "create", 0, "POST")])
    with pytest.raises(Conflict):
        async with store.write_session() as session:
            await session.apply([repo.prepare("Patient", "b", patient(), 3, stamp, "update", 2, "PUT")])
    assert len(await store.outbox(0, 10)) == 2
    assert (await store.read("Patient", "b")).vid == 1  # type: ignore[union-attr]


async def test_the_fhir_json_sits_inside_the_envelope(client: httpx.AsyncClient) -> None:
    sent = patient(birthDate="1970-01-01", _birthDate={"extension": [
        {"url": "http://example.org/precision", "valueString": "estimated"}]})
    stored = await create(client, sent)
    read = (await client.get(f"/fhir/Patient/{stored['id']}")).json()
    assert read["_birthDate"] == sent["_birthDate"] and read["id"] == stored["id"]


@pytest.mark.parametrize("query", ["name=$where", "name=$ne", "name[$ne]=x", "family={\"$ne\":null}",
                                   "_id=$gt"])
async def test_query_text_is_never_an_operator(client: httpx.AsyncClient, query: str) -> None:
    await create(client, patient(family="Real"))
    response = await client.get(f"/fhir/Patient?{query}")
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        entries = response.json().get("entry", [])
        matches = [e for e in entries if e["search"]["mode"] == "match"]
        ignored = [e for e in entries if e["search"]["mode"] == "outcome"]
        assert matches == [] or ignored, response.text  # a match only when the parameter was ignored, and said so


@pytest.mark.skipif(MONGODB_URL is not None, reason="needs an address where no MongoDB listens")
async def test_start_refuses_an_unreachable_server() -> None:
    store = MongoStore("mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300", timeout_ms=300)
    with pytest.raises(SystemExit, match="unreachable"):
        await store.open()
    await store.close()


async def test_start_refuses_a_server_that_is_not_a_replica_set() -> None:
    class Standalone(StandInClient):
        def __init__(self) -> None:
            super().__init__()

            class Admin:
                async def command(self, name: str) -> dict[str, Any]:
                    return {"ok": 1, "isWritablePrimary": True}

            self.admin = Admin()

    with pytest.raises(SystemExit, match="replica set"):
        await MongoStore("mongodb://standalone", client=Standalone()).open()


@pytest.mark.skipif(MONGODB_URL is not None, reason="simulates an outage of the stand-in")
async def test_an_outage_answers_503_and_the_server_recovers() -> None:
    settings, client = mongo_settings()
    assert isinstance(client, StandInClient)
    app = create_app(settings, mongo_client=client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            stored = await create(http, patient())
            original = client._mongo["careloop"]["resources"].find_one

            def down(*args: Any, **kwargs: Any) -> Any:
                raise AutoReconnect("connection refused")

            client._mongo["careloop"]["resources"].find_one = down  # type: ignore[method-assign]
            try:
                failed = await http.get(f"/fhir/Patient/{stored['id']}")
                assert failed.status_code == 503
                assert failed.json()["issue"][0]["code"] == "transient"
                written = await http.put(f"/fhir/Patient/{stored['id']}", content=body({**stored, "active": True}),
                                         headers=FHIR_JSON)
                assert written.status_code == 503
            finally:
                client._mongo["careloop"]["resources"].find_one = original  # type: ignore[method-assign]
            back = await http.get(f"/fhir/Patient/{stored['id']}")
            assert back.status_code == 200 and back.json()["meta"]["versionId"] == "1"


async def test_change_feed_and_marks(store: MongoStore) -> None:
    await check_change_feed(store)


async def test_subscription_events_and_cursors(store: MongoStore) -> None:
    await check_subscription_events(store)
