"""A change-feed check every store adapter passes: windows of versions with bodies, and durable marks.

https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/components.html
"""

from __future__ import annotations

import orjson

from resources.models import resource_types
from resources.repository import Repository
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.protocol import Store, SubscriptionEvent
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


async def check_subscription_events(store: Store) -> None:
    """Numbered events and their marks commit together; a range reads oldest first; trimming drops the oldest."""
    # event 4 was withheld from the owner (patient consent): it must stay withheld when read back for a resend
    events = [SubscriptionEvent("s1", n, 1000 + n, "Observation", f"o{n}", 1, "POST", n == 4) for n in range(1, 6)]
    await store.record_events(events[:3], {"subscription:s1:events": 3, "subscription:s1:delivered": 0}, {})
    await store.record_events(events[3:], {"subscription:s1:events": 5}, {"s1": 2})
    await store.record_events(events[4:], {}, {})  # a batch recorded again after a crash changes nothing
    assert await store.mark("subscription:s1:events") == 5
    assert await store.mark("subscription:s1:delivered") == 0
    assert await store.subscription_events("s1", 0, None, 10) == events[2:]
    assert await store.subscription_events("s1", 3, 4, 10) == [events[3]]
    assert [e.withheld for e in await store.subscription_events("s1", 0, None, 10)] == [False, True, False]
    assert await store.subscription_events("s1", 0, None, 1) == [events[2]]
    assert await store.subscription_events("other", 0, None, 10) == []
