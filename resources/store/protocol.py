"""The Store protocol: what every storage adapter (SQLite, MongoDB) provides.

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from resources.search.index import IndexRows
from resources.search.query import SearchQuery


class StoredResource(NamedTuple):
    """One stored version of a resource: its identity, version, time and canonical JSON bytes.

    A named tuple rather than a frozen dataclass: searches make one per row, and a frozen dataclass
    takes 1.4 us to build against 0.4 us here (100 rows of `$everything` spent 0.1 ms on it).
    """

    type: str
    id: str
    vid: int
    updated_ms: int
    deleted: bool
    body: bytes | None
    method: str = "PUT"
    seq: int = 0


def entry(resource: StoredResource) -> tuple[bytes, bytes]:
    """A current resource as a searchset entry's parts: its reference (type/id, as bytes) and body."""
    return f"{resource.type}/{resource.id}".encode(), resource.body or b"{}"


@dataclass(frozen=True)
class Write:
    """One change to apply: create, update or delete of a resource, with its index rows."""

    type: str
    id: str
    vid: int
    updated_ms: int
    action: str  # "create" | "update" | "delete"
    body: bytes | None = None
    rows: IndexRows | None = None
    expected_vid: int | None = None  # the version the writer based its change on; 0 when it must not exist
    method: str = "PUT"


@dataclass(frozen=True)
class SearchPage:
    """One page of search results with the cursor of the next page and the total when asked."""

    resources: list[StoredResource]
    next_cursor: str | None
    total: int | None = None
    included: list[StoredResource] = field(default_factory=list)  # _include/_revinclude, same snapshot


@dataclass(frozen=True)
class Spans:
    """An aggregate over a query's matches: per resource, the time from one date parameter to another.

    A span starts at the earliest value of `start` and ends at the earliest value of `end` (or, without one,
    when the resource was last written); it is on time when that end is at or before the latest value of
    `limit`. Quantiles are by nearest rank over the spans that have a start.
    """

    start: str
    end: str
    limit: str
    quantiles: tuple[float, ...] = (0.5, 0.9)


@dataclass(frozen=True)
class SpanStats:
    """What Spans computed: matches, those on time, those with a start, and each quantile's span (ms)."""

    count: int
    on_time: int
    measured: int
    quantiles: tuple[int | None, ...]


@dataclass(frozen=True)
class HistoryQuery:
    """A history request at instance, type or system level."""

    type: str | None = None
    id: str | None = None
    since_ms: int | None = None
    at_ms: int | None = None
    before_seq: int | None = None
    count: int = 50


@dataclass(frozen=True)
class OutboxEvent:
    """A change event recorded in the same transaction as the change."""

    seq: int
    type: str
    id: str
    vid: int
    action: str
    at_ms: int


@dataclass(frozen=True)
class SubscriptionEvent:
    """One numbered event of one subscription, kept for redelivery and $events.

    https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/notifications.html#event-numbering
    """

    subscription: str
    number: int
    at_ms: int
    type: str
    id: str
    vid: int
    method: str  # POST, PUT or DELETE
    withheld: bool = False  # the owner may not see the resource (patient consent): numbered, never sent


class ReadSource(Protocol):
    """Where reads come from: the store (committed state) or a write session (its own uncommitted changes)."""

    async def read(self, type: str, id: str) -> StoredResource | None:
        """The current version of a resource."""

    async def vread(self, type: str, id: str, vid: int) -> StoredResource | None:
        """A specific version of a resource."""

    async def search(self, query: SearchQuery) -> SearchPage:
        """One page of current resources matching a query."""


class WriteSession(ReadSource, Protocol):
    """An exclusive write transaction: reads inside it see a stable state, writes commit together."""

    async def head(self, type: str, id: str) -> StoredResource | None:
        """The current version (deleted or not), without the body."""

    async def search_ids(self, query: SearchQuery, limit: int) -> list[tuple[str, str, int]]:
        """(type, id, vid) of resources matching a query, inside the transaction."""

    async def apply(self, writes: list[Write]) -> None:
        """Apply writes; raises Conflict/PreconditionFailed if an expected version no longer holds."""

    async def replace_index(self, type: str, items: list[tuple[int, int, IndexRows]]) -> None:
        """Replace the index entries of (row id, version) pairs that are still the current version."""


async def every(source: ReadSource, resource_type: str, batch: int = 500) -> AsyncIterator[StoredResource]:
    """Every current resource of a type, page by page (loading stored configuration at start-up)."""
    cursor: int | None = None
    while True:
        page = await source.search(SearchQuery(resource_type, count=batch, cursor=cursor))
        for found in page.resources:
            if found.body:
                yield found
        if page.next_cursor is None:
            return
        cursor = int(page.next_cursor)


@dataclass(frozen=True)
class Linked:
    """A resource linked to each match by an identifier `system|prefix<match id>` (one current result each)."""

    resource_type: str
    system: str
    prefix: str


@dataclass(frozen=True)
class GroupKey:
    """One dimension an aggregate counts matches by: the value a search parameter indexes for each match.

    kind is token (the code), string (the exact text), date (the band: how many `bands` edges, in ms and
    descending, the value is not after; "0" for after the first) or reference (the id of the first `target`
    the parameter names). With `linked`, the parameter is the linked resource's. A match with no value counts
    under None; a match with several under its first. Without a value for `param`, the first of `also` that
    has one is taken. A token key may be limited to one `system` and some `codes`; a date key bands the start
    of the value (bound "low") or its end (bound "high"; a range open at the end by its start).
    """

    param: str
    kind: str = "token"
    bands: tuple[int, ...] = ()
    linked: Linked | None = None
    also: tuple[str, ...] = ()
    target: str = "Patient"
    system: str | None = None
    codes: tuple[str, ...] = ()
    bound: str = "low"


Groups = list[tuple[tuple[str | None, ...], int]]


@dataclass(frozen=True)
class Measure:
    """One figure a tally computes over each group of matches, besides how many there are.

    sum: of the first value the quantity parameter `param` (else the first of `also` that has one) indexes for
    each match. min, max: of the end of each match's first `param` date (a range open at the end: its start).
    latest: the id of the match with the greatest such end (of those that have one; on a tie, the one stored
    first). ids: (stored order, id) of each of the group's matches, in that order (the stored order is a number
    that grows with each resource first stored: groups merge in the order a search would list them).
    """

    op: str
    param: str = ""
    also: tuple[str, ...] = ()


Tallies = list[tuple[tuple[str | None, ...], int, tuple[Any, ...]]]


class Store(Protocol):
    """A FHIR resource store with versions, history, search and an outbox of change events."""

    async def open(self) -> None:
        """Create the schema if needed and start serving."""

    async def close(self) -> None:
        """Release connections and threads."""

    async def read(self, type: str, id: str) -> StoredResource | None:
        """The current version of a resource (deleted ones have no body)."""

    async def vread(self, type: str, id: str, vid: int) -> StoredResource | None:
        """A specific version of a resource."""

    async def history(self, query: HistoryQuery) -> list[StoredResource]:
        """Versions, newest first."""

    async def search(self, query: SearchQuery) -> SearchPage:
        """One page of current resources matching a query."""

    async def entries(self, query: SearchQuery) -> list[tuple[bytes, bytes]]:
        """The matches of a query without includes or a total as (type/id, body), in page order."""
        ...

    async def aggregate(self, query: SearchQuery, keys: tuple[GroupKey, ...]) -> Groups:
        """How many matches of a query have each combination of the keys' values (GROUP BY in the store)."""
        ...

    async def tally(self, query: SearchQuery, keys: tuple[GroupKey, ...], measures: tuple[Measure, ...]) -> Tallies:
        """Per combination of the keys' values: how many matches, and each measure over them, as
        (key values, count, measure values); computed in the store (GROUP BY), no body leaves it."""
        ...

    def write_session(self) -> AbstractAsyncContextManager[WriteSession]:
        """An exclusive write transaction."""

    def add_commit_listener(self, listener: Callable[[list[Write]], None]) -> None:
        """Call listener with the writes of every committed write session, after the commit."""

    def committed_elsewhere(self, writes: list[Write]) -> None:
        """Call the commit listeners with writes another instance on the same store committed (follower.py)."""

    async def lastn(self, query: SearchQuery, code: str, date: str, per_code: int) -> list[StoredResource]:
        """Per value of the token parameter `code` (system and code), the latest `per_code` matches of the query
        by the date parameter `date`, grouped by that value; a resource of several values once (Observation/$lastn).
        """

    async def compartment_types(self, patient_id: str) -> list[str]:
        """The resource types that have a current resource in a patient's compartment."""
        ...

    async def outbox(self, after_seq: int, limit: int) -> list[OutboxEvent]:
        """Change events after a sequence number, oldest first."""

    async def last_seq(self) -> int:
        """The sequence number of the newest committed change (0 for an empty store)."""
        ...

    async def changes(self, after_seq: int, until_seq: int, types: Collection[str], limit: int,
                      ) -> list[StoredResource]:
        """The versions written in (after_seq, until_seq] of the given types, oldest first, bodies included."""
        ...

    async def mark(self, name: str) -> int | None:
        """A durable number kept under a name (a change-feed consumer's position, a counter)."""
        ...

    async def spans(self, query: SearchQuery, spec: Spans) -> SpanStats:
        """Spans of the matches of a query, computed in the store (no body leaves it)."""
        ...

    async def distinct_targets(self, query: SearchQuery, code: str, also: SearchQuery | None = None) -> int:
        """How many distinct resources a reference parameter of the matches names; with `also`, only those that
        the matches of `also` name through the same parameter too."""
        ...

    async def expunge(self, type: str, ids: Collection[str]) -> int:
        """Remove resources with every version of them for good; how many were removed (repeatable).

        Not a FHIR delete (which keeps history): the removal of expired audit events after their export
        (retention). Conflict when it would remove the store's newest change.
        """
        ...

    async def set_mark(self, name: str, value: int) -> None:
        """Keep a durable number under a name."""

    async def record_events(self, events: Sequence[SubscriptionEvent], marks: Mapping[str, int],
                            trim: Mapping[str, int]) -> None:
        """In one transaction: add numbered subscription events, set marks, and drop the events of each
        subscription in `trim` numbered up to its value."""
        ...

    async def subscription_events(self, subscription: str, after: int, until: int | None, limit: int,
                                  ) -> list[SubscriptionEvent]:
        """A subscription's kept events numbered in (after, until], oldest first."""
        ...

    async def claim(self, job: str, holder: str, seconds: float) -> bool:
        """Take or renew the lease on a background job for `seconds` from now; False while another holder's lease
        runs (one compare-and-set: of several instances asking at once, one gets it)."""
        ...

    async def release(self, job: str, holder: str) -> None:
        """Give up a lease this holder has (nothing when another holds it)."""
        ...
