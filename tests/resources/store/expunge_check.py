"""The expunge behaviour every store adapter shares (audit retention removes exported events for good)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.audit_shapes import Who, rest_event
from resources.errors import Conflict
from resources.repository import Repository
from resources.search.parse import parse_search
from resources.store.protocol import HistoryQuery, Store

WHO = Who("app", "Practitioner/dr", "clinician", ("TREAT",), "j1")
JAN_2019 = 1_546_300_800_000


async def check_expunge(store: Store, repo: Repository) -> None:
    """Removed resources leave no current row, version, history, index entry or change event; others stay."""
    ids = [(await repo.create("AuditEvent", rest_event("read", WHO, JAN_2019 + n, f"r{n}", patient="p1"))).resource.id
           for n in range(3)]
    basic = (await repo.create("Basic", {"resourceType": "Basic", "code": {"text": "one"}})).resource.id
    await repo.update("Basic", basic, {"resourceType": "Basic", "id": basic, "code": {"text": "two"}})
    newest = (await repo.create("Patient", {"resourceType": "Patient"})).resource.id

    assert await store.expunge("AuditEvent", [ids[0], ids[1], "no-such-event"]) == 2
    assert await store.expunge("Basic", [basic]) == 1
    for type_, id_ in (("AuditEvent", ids[0]), ("AuditEvent", ids[1]), ("Basic", basic)):
        assert await store.read(type_, id_) is None
        assert await store.vread(type_, id_, 1) is None
        assert await store.history(HistoryQuery(type_, id_)) == []
    query = parse_search("AuditEvent", [("patient", "p1")], repo.registry, strict=True).query
    assert [r.id for r in (await store.search(replace(query, count=10))).resources] == [ids[2]]
    assert [r.id for r in await store.history(HistoryQuery("AuditEvent"))] == [ids[2]]
    assert {e.id for e in await store.outbox(0, 100)} & {ids[0], ids[1], basic} == set()
    assert await store.expunge("AuditEvent", [ids[0]]) == 0  # again: nothing left to remove

    # the newest change would hand its numbers out again: refused, and nothing removed
    with pytest.raises(Conflict):
        await store.expunge("Patient", [newest])
    assert await store.read("Patient", newest) is not None
