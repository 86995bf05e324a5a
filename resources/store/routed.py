"""A Store that keeps some resource types (the audit trail) in a store of their own.

AuditEvents are written at every request: in the clinical store they would cost a commit each and contend with
the clinical writer. Reads, history and searches of the routed types go to their own store (same adapter, same
index machinery, so FHIR search works unchanged); everything else, writes included, to the main store.
https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from resources.errors import Invalid
from resources.search.query import SearchQuery
from resources.store.protocol import (
    GroupKey,
    Groups,
    HistoryQuery,
    Measure,
    OutboxEvent,
    SearchPage,
    Spans,
    SpanStats,
    Store,
    StoredResource,
    SubscriptionEvent,
    Tallies,
    Write,
    WriteSession,
)


@dataclass
class RoutedStore:
    """The main store, with `types` read from `side` (a store the audit trail's writer writes to)."""

    main: Store
    side: Store
    types: frozenset[str]

    def _for(self, resource_type: str | None) -> Store:
        return self.side if resource_type in self.types else self.main

    def _for_query(self, query: SearchQuery) -> Store:
        if not query.is_system:
            return self._for(query.resource_type)
        wanted = set(query.types)
        if wanted and wanted <= self.types:
            return self.side
        if wanted & self.types:
            raise Invalid(f"Search {', '.join(sorted(wanted & self.types))} on its own: it is kept apart from the "
                          f"other types", code="not-supported", expression=("_type",))
        return self.main  # a search across every type covers the clinical data, not the audit trail

    async def open(self) -> None:
        """Open the main store (the side store is opened and closed by its writer, which reports its failures)."""
        await self.main.open()

    async def close(self) -> None:
        """Close the main store."""
        await self.main.close()

    async def expunge(self, type: str, ids: Collection[str]) -> int:
        """Remove resources and their history for good (audit retention), from the type's store."""
        found: int = await self._for(type).expunge(type, ids)
        return found

    async def read(self, type: str, id: str) -> StoredResource | None:
        """The current version, from the type's store."""
        return await self._for(type).read(type, id)

    async def vread(self, type: str, id: str, vid: int) -> StoredResource | None:
        """One version, from the type's store."""
        return await self._for(type).vread(type, id, vid)

    async def history(self, query: HistoryQuery) -> list[StoredResource]:
        """History of the type's store (system history: the clinical data)."""
        return await self._for(query.type).history(query)

    async def search(self, query: SearchQuery) -> SearchPage:
        """A search in the store of the searched type(s)."""
        return await self._for_query(query).search(query)

    async def entries(self, query: SearchQuery) -> list[tuple[bytes, bytes]]:
        """A search across types in the store of the searched types."""
        return await self._for_query(query).entries(query)

    async def aggregate(self, query: SearchQuery, keys: tuple[GroupKey, ...]) -> Groups:
        """An aggregate in the store of the searched type (linked resources live beside it)."""
        return await self._for_query(query).aggregate(query, keys)

    async def tally(self, query: SearchQuery, keys: tuple[GroupKey, ...], measures: tuple[Measure, ...]) -> Tallies:
        """A tally in the store of the searched type."""
        return await self._for_query(query).tally(query, keys, measures)

    async def spans(self, query: SearchQuery, spec: Spans) -> SpanStats:
        """Spans computed by the store of the searched type."""
        return await self._for_query(query).spans(query, spec)

    async def distinct_targets(self, query: SearchQuery, code: str, also: SearchQuery | None = None) -> int:
        """Distinct targets counted by the store of the searched type."""
        return await self._for_query(query).distinct_targets(query, code, also)

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[WriteSession]:
        """A write transaction of the main store (the routed types are written by their own writer)."""
        async with self.main.write_session() as session:
            yield session

    def add_commit_listener(self, listener: Callable[[list[Write]], None]) -> None:
        """Listen to the main store's commits."""
        self.main.add_commit_listener(listener)

    def committed_elsewhere(self, writes: list[Write]) -> None:
        """Writes another instance committed to the main store."""
        self.main.committed_elsewhere(writes)

    async def lastn(self, query: SearchQuery, code: str, date: str, per_code: int) -> list[StoredResource]:
        """Observation/$lastn on the clinical data."""
        return await self.main.lastn(query, code, date, per_code)

    async def compartment_types(self, patient_id: str) -> list[str]:
        """Types in a patient's compartment, in the clinical data."""
        return await self.main.compartment_types(patient_id)

    async def outbox(self, after_seq: int, limit: int) -> list[OutboxEvent]:
        """The main store's change events."""
        return await self.main.outbox(after_seq, limit)

    async def last_seq(self) -> int:
        """The main store's newest change."""
        return await self.main.last_seq()

    async def changes(self, after_seq: int, until_seq: int, types: Collection[str], limit: int,
                      ) -> list[StoredResource]:
        """The main store's change feed."""
        return await self.main.changes(after_seq, until_seq, types, limit)

    async def mark(self, name: str) -> int | None:
        """A durable number of the main store."""
        return await self.main.mark(name)

    async def set_mark(self, name: str, value: int) -> None:
        """Keep a durable number in the main store."""
        await self.main.set_mark(name, value)

    async def record_events(self, events: Sequence[SubscriptionEvent], marks: Mapping[str, int],
                            trim: Mapping[str, int]) -> None:
        """Subscription events and marks, in the main store (they follow its change feed)."""
        await self.main.record_events(events, marks, trim)

    async def subscription_events(self, subscription: str, after: int, until: int | None, limit: int,
                                  ) -> list[SubscriptionEvent]:
        """A subscription's kept events, from the main store."""
        return await self.main.subscription_events(subscription, after, until, limit)

    async def claim(self, job: str, holder: str, seconds: float) -> bool:
        """A job's lease, in the main store (the instances share it)."""
        return await self.main.claim(job, holder, seconds)

    async def release(self, job: str, holder: str) -> None:
        """Give up a lease in the main store."""
        await self.main.release(job, holder)
