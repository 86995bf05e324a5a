"""A change-feed check every store adapter passes: windows of versions with bodies, and durable marks.

https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/components.html
"""

from __future__ import annotations

import orjson

from resources.models import resource_types
from resources.repository import Repository
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.protocol import Store
from tests.factories import patient


async def check_change_feed(store: Store) -> None:
    """Versions come back in commit order with the body each version had; marks survive and overwrite."""
    registry = default_registry(resource_types())
    repo = Repository(store, registry, Indexer(registry, load_patient_compartment()))
    before = await store.last_seq()
    first = await repo.create("Patient", patient(mrn="1"))
    pid = first.resource.id
    await repo.update("Patient", pid, {**patient(mrn="2"), "id": pid})
    await repo.create("Basic", {"resourceType": "Basic", "code": {"text": "not watched"}})
    await repo.delete("Patient", pid)
    last = await store.last_seq()
    assert last >= before + 4
    feed = await store.changes(before, last, {"Patient"}, 10)
    assert [(c.type, c.id, c.vid, c.deleted) for c in feed] == [
        ("Patient", pid, 1, False), ("Patient", pid, 2, False), ("Patient", pid, 3, True)]
    assert [orjson.loads(c.body or b"{}")["identifier"][0]["value"] for c in feed[:2]] == ["1", "2"]
    assert feed[2].body is None
    assert [c.seq for c in feed] == sorted(c.seq for c in feed)
    assert [c.vid for c in await store.changes(feed[0].seq, last, {"Patient"}, 1)] == [2]
    assert await store.changes(before, feed[0].seq - 1, {"Patient"}, 10) == []
    assert await store.changes(before, last, set(), 10) == []
    assert await store.mark("feed") is None
    await store.set_mark("feed", 7)
    await store.set_mark("feed", last)
    assert await store.mark("feed") == last
