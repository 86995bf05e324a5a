"""AuditEvents served from the audit log: read, search and history of the members of its records, as a Store.

resources/store/routed.py routes the AuditEvent type here, so the FHIR API, the guard and redaction, $access-report
and retention see AuditEvents as before, while the log keeps one record per request. A search is answered by the
log's narrow index (parameters compared by equality, string prefixes and :exact, the record's instant for `date`);
what the index cannot answer (other modifiers, the scopes' and Consents' alternatives) is matched in memory on the
materialised events found by the rest. https://hl7.org/fhir/R4B/auditevent.html#search
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson

from consent.audit.records import entries, event_id, events_of, materialise, parse_id
from consent.audit.rows import AuditRows
from resources.errors import Invalid, NotSupported
from resources.search.match import evaluable, matches_all
from resources.search.query import Filter, ReferenceValue, SearchQuery, StringValue, TokenValue, UriValue
from resources.store.audit_log.model import Condition, LogQuery, StoredRecord
from resources.store.audit_log.sqlite import SqliteAuditLog
from resources.store.protocol import (
    GroupKey,
    Groups,
    HistoryQuery,
    OutboxEvent,
    SearchPage,
    Spans,
    SpanStats,
    StoredResource,
    SubscriptionEvent,
    Write,
    WriteSession,
)

TYPE = "AuditEvent"
# the parameter that drives a search when several are given: the most selective first (a patient's events are
# few; an outcome's are a large part of the trail)
_DRIVERS = ("_compartment", "patient", "entity", "policy", "agent", "altid", "address", "agent-name", "entity-name",
            "source", "site", "purpose", "subtype", "entity-type", "entity-role", "agent-role", "action", "outcome",
            "type")
_SORTS = {"date": "recorded", "_lastUpdated": "recorded"}
_MATCH_BATCH = 500
_TOP = "\U0010ffff"


def _condition(flt: Filter) -> Condition | None:
    """The index condition of a filter; None when it is matched in memory."""
    if flt.chain or flt.has is not None or flt.missing is not None or flt.any_of:
        return None
    alternatives: list[tuple[Any, ...]] = []
    for value in flt.values:
        if flt.type == "compartment" and isinstance(value, ReferenceValue) and value.id:
            alternatives.append(("v", value.id, None))
        elif flt.type == "token" and flt.modifier is None and isinstance(value, TokenValue) and value.code:
            if value.any_system:
                alternatives.append(("v", value.code, None))
            else:
                alternatives.append(("vs", value.code, value.system or ""))
        elif flt.type == "reference" and flt.modifier == "identifier" and isinstance(value, TokenValue) and \
                value.code:  # the request id of a request's events (entity[transaction]), a client's identifier
            alternatives.append(("v", value.code, None) if value.any_system else ("vs", value.code,
                                                                                 value.system or ""))
        elif flt.type == "reference" and flt.modifier is None and isinstance(value, ReferenceValue):
            if value.id and value.type:
                alternatives.append(("vs", value.id, value.type))
            elif value.id:
                alternatives.append(("vn", value.id, "@url"))
            elif value.url:
                alternatives.append(("vs", value.url, "@url"))
            else:
                return None
        elif flt.type == "string" and isinstance(value, StringValue) and flt.modifier in (None, "exact"):
            if flt.modifier == "exact":
                alternatives.append(("vs", value.normalized, value.text))
            else:
                alternatives.append(("p", value.normalized, value.normalized + _TOP))
        elif flt.type == "uri" and flt.modifier is None and isinstance(value, UriValue):
            alternatives.append(("v", value.uri, None))
        else:
            return None
    if not alternatives:
        return None
    param = "_compartment" if flt.type == "compartment" else flt.code
    return Condition(param + ":identifier" if flt.modifier == "identifier" else param, tuple(alternatives))


def plan(query: SearchQuery) -> tuple[LogQuery, list[Filter]]:
    """The part of a search the log's index answers, and the filters left to match in memory."""
    if query.includes:
        raise Invalid("_include and _revinclude are not supported on AuditEvent", code="not-supported",
                      expression=("_include",))
    conditions: list[Condition] = []
    dates: list[tuple[tuple[str, float, float], ...]] = []
    ids: set[tuple[int, int]] | None = None
    left: list[Filter] = []
    for flt in query.filters:
        plain = flt.modifier is None and flt.missing is None and not flt.chain and flt.has is None
        if plain and flt.code == "date" and flt.type == "date":
            dates.append(tuple((v.prefix, v.low, v.high) for v in flt.values if hasattr(v, "prefix")))
            continue
        if plain and flt.code == "_id":
            asked = {p for v in flt.values if isinstance(v, TokenValue) and v.code and (p := parse_id(v.code))}
            ids = asked if ids is None else ids & asked
            continue
        condition = _condition(flt)
        if condition is not None:
            conditions.append(condition)
            continue
        reason = evaluable(flt)
        if reason:
            raise Invalid(f"Not supported on AuditEvent: {reason}", code="not-supported", expression=(flt.code,))
        left.append(flt)
    conditions.sort(key=lambda c: _DRIVERS.index(c.param) if c.param in _DRIVERS else 5)
    descending: bool | None = None
    for key in query.sort[:1]:
        if key.code not in _SORTS:
            raise Invalid(f"AuditEvent sorts by date (or _lastUpdated) only, not by {key.code}", code="not-supported",
                          expression=("_sort",))
        descending = key.descending
    found = LogQuery(tuple(conditions), tuple(dates), tuple(sorted(ids)) if ids is not None else None, descending)
    return found, left


class AuditLogStore:
    """The Store of the AuditEvent type over the audit log (other types are never routed here)."""

    def __init__(self, audit_log: SqliteAuditLog, rows: AuditRows) -> None:
        self.log = audit_log
        self._rows = rows

    async def open(self) -> None:
        """Opened by the trail's writer (LogRecorder.open)."""

    async def close(self) -> None:
        """Closed by the trail's writer."""

    # -- materialising ---------------------------------------------------------------------------
    async def member(self, record: StoredRecord, member: int) -> StoredResource | None:
        """One member of a record as a stored AuditEvent."""
        written, events = events_of(record.body)
        if member >= len(events):
            return None
        return self._stored(record, member, events[member], written)

    def _stored(self, record: StoredRecord, member: int, event: dict[str, Any], written: int) -> StoredResource:
        body = orjson.dumps(materialise(record, member, event, written))
        return StoredResource(TYPE, event_id(record.seq, member), 1, written, False, body, "POST", record.seq)

    async def _members(self, found: Sequence[tuple[int, int]]) -> list[StoredResource]:
        records = await self.log.records([seq for seq, _ in found])
        cache: dict[int, tuple[int, list[dict[str, Any]]]] = {}
        out = []
        for seq, member in found:
            record = records.get(seq)
            if record is None:
                continue  # removed since it was found
            if seq not in cache:
                cache[seq] = events_of(record.body)
            written, events = cache[seq]
            if member < len(events):
                out.append(self._stored(record, member, events[member], written))
        return out

    # -- the Store protocol ----------------------------------------------------------------------
    async def read(self, type: str, id: str) -> StoredResource | None:
        """An AuditEvent by id (`<record>-<member>`)."""
        found = parse_id(id) if type == TYPE else None
        if found is None:
            return None
        members = await self._members([found])
        return members[0] if members else None

    async def vread(self, type: str, id: str, vid: int) -> StoredResource | None:
        """Version 1 is the only version of an AuditEvent."""
        return await self.read(type, id) if vid == 1 else None

    async def history(self, query: HistoryQuery) -> list[StoredResource]:
        """An AuditEvent's history is its one version; the type's history its events, newest first."""
        if query.id is not None:
            found = await self.read(query.type or TYPE, query.id)
            return [found] if found is not None and (query.since_ms is None or found.updated_ms >= query.since_ms) \
                else []
        dates = ((("ge", float(query.since_ms), float(query.since_ms)),),) if query.since_ms is not None else ()
        rows = await self.log.events(LogQuery(dates=dates, newest_first=True, before_seq=query.before_seq,
                                              limit=query.count))
        return await self._members([(seq, member) for seq, member, _ in rows])

    async def search(self, query: SearchQuery) -> SearchPage:
        """One page of AuditEvents matching a query (offset cursor), with the accurate total when asked."""
        log_query, left = plan(query)
        offset = query.cursor or 0
        if not left:
            rows = await self.log.events(replace(log_query, limit=query.count + 1, offset=offset))
            page = await self._members([(s, m) for s, m, _ in rows[:query.count]])
            total = await self.log.count(log_query) if query.total != "none" else None
            more = 0 < query.count < len(rows)
        else:
            matched = await self._matching(log_query, left)
            total = len(matched) if query.total != "none" else None
            page = matched[offset:offset + query.count]
            more = query.count > 0 and len(matched) > offset + query.count
        return SearchPage(page, str(offset + query.count) if more else None, total)

    async def _matching(self, log_query: LogQuery, left: list[Filter]) -> list[StoredResource]:
        candidates = await self.log.events(log_query)
        matched: list[StoredResource] = []
        for at in range(0, len(candidates), _MATCH_BATCH):
            for stored in await self._members([(s, m) for s, m, _ in candidates[at:at + _MATCH_BATCH]]):
                event = orjson.loads(stored.body or b"{}")
                if matches_all(left, event, self._rows.rows(event)):
                    matched.append(stored)
        return matched

    async def entries(self, query: SearchQuery) -> list[tuple[bytes, bytes]]:
        """The matches of a query as (type/id, body), in page order."""
        page = await self.search(replace(query, total="none"))
        return [(f"{TYPE}/{r.id}".encode(), r.body or b"{}") for r in page.resources]

    async def expunge(self, type: str, ids: Collection[str]) -> int:
        """Remove the records whose every member is named (retention); how many AuditEvents went."""
        asked = {p for i in ids if (p := parse_id(i)) is not None}
        records = await self.log.records([seq for seq, _ in asked])
        removing = []
        for record in records.values():
            if all((record.seq, m) in asked for m in range(record.members)):
                _, events = events_of(record.body)
                removing.append((record, entries(events, self._rows)))
        await self.log.remove(removing)
        return sum(record.members for record, _ in removing)

    async def aggregate(self, query: SearchQuery, keys: tuple[GroupKey, ...]) -> Groups:
        """Not offered on the audit trail."""
        raise NotSupported("Aggregates are not supported on AuditEvent")

    async def spans(self, query: SearchQuery, spec: Spans) -> SpanStats:
        """Not offered on the audit trail."""
        raise NotSupported("Spans are not supported on AuditEvent")

    async def distinct_targets(self, query: SearchQuery, code: str, also: SearchQuery | None = None) -> int:
        """Not offered on the audit trail."""
        raise NotSupported("Counting targets is not supported on AuditEvent")

    async def lastn(self, query: SearchQuery, code: str, date: str, per_code: int) -> list[StoredResource]:
        """Not offered on the audit trail."""
        raise NotSupported("$lastn is not supported on AuditEvent")

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[WriteSession]:
        """AuditEvents are appended by the trail's writer only."""
        raise NotSupported("AuditEvents are written by the audit trail's writer only")
        yield  # pragma: no cover

    def add_commit_listener(self, listener: Callable[[list[Write]], None]) -> None:
        """The log has no change feed."""

    async def compartment_types(self, patient_id: str) -> list[str]:
        """The trail is not part of a patient's record ($everything)."""
        return []

    async def outbox(self, after_seq: int, limit: int) -> list[OutboxEvent]:
        """The log has no change feed."""
        return []

    async def last_seq(self) -> int:
        """The log has no change feed."""
        return 0

    async def changes(self, after_seq: int, until_seq: int, types: Collection[str], limit: int,
                      ) -> list[StoredResource]:
        """The log has no change feed."""
        return []

    async def mark(self, name: str) -> int | None:
        """The log keeps no marks."""
        return None

    async def set_mark(self, name: str, value: int) -> None:
        """The log keeps no marks."""
        raise NotSupported("The audit log keeps no marks")

    async def record_events(self, events: Sequence[SubscriptionEvent], marks: Mapping[str, int],
                            trim: Mapping[str, int]) -> None:
        """The log keeps no subscription events."""
        raise NotSupported("The audit log keeps no subscription events")

    async def subscription_events(self, subscription: str, after: int, until: int | None, limit: int,
                                  ) -> list[SubscriptionEvent]:
        """The log keeps no subscription events."""
        return []
