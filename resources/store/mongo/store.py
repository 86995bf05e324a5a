"""The MongoDB store: the Store protocol on PyMongo's async API, with multi-document transactions.

Collections: `resources` (current versions in envelopes with their index arrays), `versions` (full history),
`outbox` (change events, written in the same transaction as each change), `counters` (row and event
numbers), `marks` (change-feed consumers' positions, event counts, delivery cursors) and `events` (numbered
subscription events, kept for redelivery and $events).
A replica set is required for transactions; `open` checks for one and says so clearly.
https://pymongo.readthedocs.io/en/stable/api/pymongo/asynchronous/, https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from resources.errors import Conflict, Invalid, Unavailable
from resources.search.index import IndexRows
from resources.search.query import Include, SearchQuery
from resources.store.mongo import documents
from resources.store.mongo.compile import (
    Subquery,
    aggregate_pipeline,
    base_filter,
    compile_filter,
    sort_spec,
    tally_pipeline,
)
from resources.store.mongo.failures import failure, guarded
from resources.store.mongo.retry import Transaction
from resources.store.protocol import (
    GroupKey,
    Groups,
    HistoryQuery,
    Measure,
    OutboxEvent,
    SearchPage,
    Spans,
    SpanStats,
    StoredResource,
    SubscriptionEvent,
    Tallies,
    Write,
    entry,
)

log = logging.getLogger("careloop.mongo")
INCLUDE_LIMIT = 1000
SUBQUERY_LIMIT = 10_000
_NO_INDEX = {"x": 0, "k": 0, "c": 0}
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    "resources": [[("t", 1), ("r", 1)], [("t", 1), ("i", 1)], [("c", 1), ("t", 1)],
                  [("t", 1), ("x.tok.p", 1), ("x.tok.c", 1)], [("t", 1), ("x.str.p", 1), ("x.str.n", 1)],
                  [("t", 1), ("x.ref.p", 1), ("x.ref.i", 1)], [("t", 1), ("x.dt.p", 1), ("x.dt.lo", 1)],
                  [("t", 1), ("x.num.p", 1), ("x.num.v", 1)], [("t", 1), ("x.qty.p", 1), ("x.qty.v", 1)],
                  [("t", 1), ("x.uri.p", 1), ("x.uri.v", 1)], [("t", 1), ("u", 1)]],
    "versions": [[("s", -1)], [("t", 1), ("s", -1)], [("t", 1), ("i", 1), ("v", -1)], [("u", 1)]],
    # these exist before the first transaction writes to them (collections are made outside transactions)
    "outbox": [[("t", 1), ("_id", 1)]],
    "counters": [[("n", 1)]],
    "events": [[("s", 1), ("n", 1)]],
    "marks": [[("n", 1)]],
}
# the audit trail's database (issue 29): an AuditEvent's `pk` is its patient (AuditEvent is in the patient
# compartment) and `k.date` its `recorded`, so (pk, k.date.lo) is the shard key "patient, then time" and the
# compliance question `AuditEvent?patient=P&date=..&_sort=-date` walks one patient's events newest first
AUDIT_INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    "resources": [[("pk", 1), ("k.date.lo", 1)], [("t", 1), ("x.ref.p", 1), ("x.ref.i", 1), ("k.date.hi", -1)],
                  [("t", 1), ("x.ref.p", 1), ("x.ref.i", 1), ("k.date.lo", 1)]],
}


def _unavailable(exc: PyMongoError) -> Unavailable:
    mapped = failure(exc)
    return mapped if isinstance(mapped, Unavailable) else Unavailable(
        f"The database is unavailable ({exc.__class__.__name__}); try again shortly")


class MongoStore:
    """Store protocol implementation on MongoDB (a replica set, for transactions)."""

    def __init__(self, url: str, database: str = "careloop", *, client: Any = None,
                 timeout_ms: int = 5000, indexes: dict[str, list[list[tuple[str, int]]]] | None = None) -> None:
        self._url = url
        self._indexes = {name: INDEXES.get(name, []) + (indexes or {}).get(name, [])
                         for name in {**INDEXES, **(indexes or {})}}
        self._database = database
        self._client = client
        self._timeout_ms = timeout_ms
        self._db: Any = None
        self._lock = asyncio.Lock()  # one write transaction at a time per process, as on SQLite
        self._listeners: list[Callable[[list[Write]], None]] = []

    # -- life cycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, check for a replica set, create the indexes."""
        if self._client is None:
            from pymongo import AsyncMongoClient

            self._client = AsyncMongoClient(self._url, serverSelectionTimeoutMS=self._timeout_ms, tz_aware=False)
        try:
            await self._client.admin.command("ping")
            hello = await self._client.admin.command("hello")
        except PyMongoError as exc:
            raise SystemExit(f"MongoDB at {self._url} is unreachable: {exc}") from exc
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            raise SystemExit(f"MongoDB at {self._url} is not a replica set: CareLoop needs transactions. Start "
                             f"mongod with --replSet and run rs.initiate() (docker compose does this).")
        self._db = self._client[self._database]
        for name, specs in self._indexes.items():
            for spec in specs:
                await self._db[name].create_index(spec)

    async def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            result = self._client.close()
            if asyncio.iscoroutine(result):
                await result

    def add_commit_listener(self, listener: Callable[[list[Write]], None]) -> None:
        """Call listener after each committed write session."""
        self._listeners.append(listener)

    def committed_elsewhere(self, writes: list[Write]) -> None:
        """Hand writes another instance committed (found by the feed follower) to the commit listeners."""
        for listener in self._listeners:
            listener(writes)

    # -- reads -----------------------------------------------------------------------------------
    @guarded
    async def read(self, type: str, id: str, session: Any = None) -> StoredResource | None:
        """The current version."""
        try:
            doc = await self._db.resources.find_one({"_id": documents.key(type, id)}, _NO_INDEX, session=session)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return documents.stored(doc) if doc else None

    @guarded
    async def vread(self, type: str, id: str, vid: int, session: Any = None) -> StoredResource | None:
        """One version."""
        try:
            doc = await self._db.versions.find_one({"_id": f"{type}/{id}/{vid}"}, session=session)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return documents.stored(doc, "s") if doc else None

    @guarded
    async def history(self, query: HistoryQuery) -> list[StoredResource]:
        """Versions newest first."""
        match: dict[str, Any] = {}
        if query.type is not None:
            match["t"] = query.type
        if query.id is not None:
            match["i"] = query.id
        if query.since_ms is not None:
            match["u"] = {"$gte": query.since_ms}
        if query.before_seq is not None:
            match["s"] = {"$lt": query.before_seq}
        try:
            if query.at_ms is None:
                docs = await self._db.versions.find(match).sort("s", DESCENDING).limit(query.count).to_list(None)
            else:
                docs = await self._at(match, query.at_ms, query.count)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return [documents.stored(d, "s") for d in docs]

    async def _at(self, match: dict[str, Any], at_ms: int, count: int) -> list[dict[str, Any]]:
        # the versions current at that moment: the newest of each resource written by then
        written = {**match, "u": {**match.get("u", {}), "$lte": at_ms}}
        pipeline = [{"$match": written}, {"$sort": {"v": -1}},
                    {"$group": {"_id": {"t": "$t", "i": "$i"}, "doc": {"$first": "$$ROOT"}}},
                    {"$replaceRoot": {"newRoot": "$doc"}}, {"$sort": {"s": -1}}, {"$limit": count}]
        return [d async for d in await self._db.versions.aggregate(pipeline)]

    @guarded
    async def compartment_types(self, patient_id: str) -> list[str]:
        """The resource types that have a current resource in a patient's compartment."""
        try:
            return sorted(await self._db.resources.distinct("t", {"c": patient_id, "d": False}))
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc

    @guarded
    async def outbox(self, after_seq: int, limit: int) -> list[OutboxEvent]:
        """Change events after a sequence number, oldest first."""
        docs = await self._db.outbox.find({"_id": {"$gt": after_seq}}).sort("_id", ASCENDING).limit(
            limit).to_list(None)
        return [OutboxEvent(d["_id"], d["t"], d["i"], d["v"], d["a"], d["at"]) for d in docs]

    @guarded
    async def last_seq(self) -> int:
        """The newest committed change's sequence number."""
        try:
            docs = await self._db.versions.find({}, {"s": 1}).sort("s", DESCENDING).limit(1).to_list(None)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return int(docs[0]["s"]) if docs else 0

    @guarded
    async def changes(self, after_seq: int, until_seq: int, types: Collection[str], limit: int,
                      ) -> list[StoredResource]:
        """Versions of the given types written in (after_seq, until_seq], oldest first."""
        if not types:
            return []
        match = {"s": {"$gt": after_seq, "$lte": until_seq}, "t": {"$in": sorted(types)}}
        try:
            docs = await self._db.versions.find(match).sort("s", ASCENDING).limit(limit).to_list(None)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return [documents.stored(d, "s") for d in docs]

    @guarded
    async def mark(self, name: str) -> int | None:
        """A durable number kept under a name."""
        try:
            doc = await self._db.marks.find_one({"_id": name})
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return None if doc is None else int(doc["n"])

    @guarded
    async def set_mark(self, name: str, value: int) -> None:
        """Keep a durable number under a name."""
        try:
            await self._db.marks.update_one({"_id": name}, {"$set": {"n": value}}, upsert=True)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc

    @guarded
    async def expunge(self, type: str, ids: Collection[str]) -> int:
        """Remove resources with all their versions and change events for good (audit retention).

        Outside a transaction: what one call removes is removed again by a repeated call, and only the
        purge command calls it, with the store's newest change refused as on SQLite (its `last_seq`).
        """
        wanted = list(ids)
        keys = [documents.key(type, i) for i in wanted]
        try:
            newest = await self._db.versions.find({}, {"s": 1, "t": 1, "i": 1}).sort("s", DESCENDING).limit(
                1).to_list(None)
            if newest and newest[0].get("t") == type and newest[0].get("i") in set(wanted):
                raise Conflict(f"The newest {type} of the store cannot be removed (the change feed would go "
                               f"back); write anything, then try again")
            removed = 0
            for start in range(0, len(keys), 1000):
                chunk = wanted[start:start + 1000]
                result = await self._db.resources.delete_many({"_id": {"$in": keys[start:start + 1000]}})
                removed += result.deleted_count
                await self._db.versions.delete_many({"t": type, "i": {"$in": chunk}})
                await self._db.outbox.delete_many({"t": type, "i": {"$in": chunk}})
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return removed

    @guarded
    async def record_events(self, events: Sequence[SubscriptionEvent], marks: Mapping[str, int],
                            trim: Mapping[str, int]) -> None:
        """Add numbered events, set marks and drop events up to each `trim` number, in one transaction."""
        async with self._lock:
            try:
                async with self._client.start_session() as session, await session.start_transaction():
                    for e in events:  # replace: a batch matched again after a crash numbers alike
                        await self._db.events.replace_one({"_id": f"{e.subscription}/{e.number}"},
                                                          documents.subscription_event(e), upsert=True,
                                                          session=session)
                    for name, value in marks.items():
                        await self._db.marks.update_one({"_id": name}, {"$set": {"n": value}}, upsert=True,
                                                        session=session)
                    for sub, n in trim.items():
                        await self._db.events.delete_many({"s": sub, "n": {"$lte": n}}, session=session)
            except ConnectionFailure as exc:
                raise _unavailable(exc) from exc

    @guarded
    async def claim(self, job: str, holder: str, seconds: float) -> bool:
        """Take or renew a job's lease: one conditional upsert on `leases` (the _id is the job), so of instances
        asking at once one matches or inserts and the others meet the unique _id. Wall-clock times: the instances'
        clocks are kept in step (NTP). https://www.mongodb.com/docs/manual/reference/method/db.collection.findOneAndUpdate/
        """
        now = time.time()
        try:
            await self._db.leases.find_one_and_update(
                {"_id": job, "$or": [{"holder": holder}, {"until": {"$lt": now}}]},
                {"$set": {"holder": holder, "until": now + seconds}}, upsert=True)
        except DuplicateKeyError:  # the lease exists, held by another and still running
            return False
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return True

    @guarded
    async def release(self, job: str, holder: str) -> None:
        """Give up a job's lease this holder has."""
        try:
            await self._db.leases.delete_many({"_id": job, "holder": holder})  # one at most: _id is the job
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc

    @guarded
    async def subscription_events(self, subscription: str, after: int, until: int | None, limit: int,
                                  ) -> list[SubscriptionEvent]:
        """A subscription's kept events numbered in (after, until], oldest first."""
        bounds: dict[str, int] = {"$gt": after}
        if until is not None:
            bounds["$lte"] = until
        try:
            docs = await self._db.events.find({"s": subscription, "n": bounds}).sort("n", ASCENDING).limit(
                limit).to_list(None)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return [documents.from_subscription_event(d) for d in docs]

    # -- search ----------------------------------------------------------------------------------
    @guarded
    async def search(self, query: SearchQuery, session: Any = None) -> SearchPage:
        """One page of matches, the total when asked, and the _include/_revinclude resources."""
        try:
            return await self._search(query, session)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        except OperationFailure as exc:
            if failure(exc) is not None:  # a step-down, not a query MongoDB refused
                raise
            raise Invalid(f"The search could not run: {exc.details.get('errmsg') if exc.details else exc}",
                          code="too-costly") from exc

    async def entries(self, query: SearchQuery) -> list[tuple[bytes, bytes]]:
        """The matches of a query without includes or a total as (type/id, body), in page order."""
        # a document already holds its type, id and body: the page's resources are the entries
        page = await self.search(query)
        return [entry(r) for r in page.resources]

    @guarded
    async def lastn(self, query: SearchQuery, code: str, date: str, per_code: int) -> list[StoredResource]:
        """Per value of the token parameter `code`, the latest `per_code` matches by the date parameter `date`."""
        pipeline: list[dict[str, Any]] = [
            {"$match": await self._where(query, None)},
            # k holds each parameter's sort bounds: k.<date>.hi is the latest of the resource's dates
            {"$addFields": {"lastn_when": f"$k.{date}.hi", "lastn_code": {"$filter": {
                "input": {"$ifNull": ["$x.tok", []]}, "as": "e", "cond": {"$eq": ["$$e.p", code]}}}}},
            {"$project": {**dict.fromkeys(("t", "i", "v", "u", "d", "b", "m", "r"), 1), "lastn_when": 1,
                          "lastn_code": 1}},
            {"$unwind": "$lastn_code"},
            {"$sort": {"lastn_code.s": 1, "lastn_code.c": 1, "lastn_when": -1, "r": -1}},
            {"$group": {"_id": {"s": "$lastn_code.s", "c": "$lastn_code.c"}, "docs": {"$push": "$$ROOT"}}},
            {"$sort": {"_id.s": 1, "_id.c": 1}},
            {"$project": {"docs": {"$slice": ["$docs", per_code]}}},
        ]
        try:
            groups = await (await self._db.resources.aggregate(pipeline)).to_list(None)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        found: dict[str, StoredResource] = {}
        for group in groups:
            for doc in group["docs"]:
                found.setdefault(documents.key(doc["t"], doc["i"]), documents.stored(doc))
        return list(found.values())

    @guarded
    async def aggregate(self, query: SearchQuery, keys: tuple[GroupKey, ...]) -> Groups:
        """The counts of a query's matches by the keys' values, from one aggregation pipeline."""
        pipeline = aggregate_pipeline(await self._where(query, None), keys)
        try:
            rows = [row async for row in await self._db.resources.aggregate(pipeline)]
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return [(tuple((row["_id"] or {}).get(f"k{n}") for n in range(len(keys))), int(row["n"])) for row in rows]

    @guarded
    async def tally(self, query: SearchQuery, keys: tuple[GroupKey, ...], measures: tuple[Measure, ...]) -> Tallies:
        """Per combination of the keys' values, the count and measures of the matches, from one pipeline."""
        pipeline = tally_pipeline(await self._where(query, None), keys, measures)
        try:
            rows = [row async for row in await self._db.resources.aggregate(pipeline)]
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        found: Tallies = []
        for row in rows:
            values: list[Any] = []
            for n, measure in enumerate(measures):
                value = row.get(f"m{n}")
                if measure.op == "ids":
                    value = sorted((int(p["r"]), p["i"]) for p in value or [])
                elif measure.op == "sum":
                    value = float(value) if row.get(f"h{n}") else None
                elif measure.op in ("min", "max") and value is not None:
                    value = int(value)
                values.append(value)
            found.append((tuple((row["_id"] or {}).get(f"k{n}") for n in range(len(keys))), int(row["n"]),
                          tuple(values)))
        return found

    # -- aggregates --------------------------------------------------------------------------------
    @guarded
    async def spans(self, query: SearchQuery, spec: Spans) -> SpanStats:
        """Spans of the matches, by aggregation pipelines over each document's sort keys (min and max per
        parameter): no body leaves the server."""
        try:
            where = await self._where(query, None)
            value = {"st": {"$ifNull": [f"$k.{spec.start}.lo", None]},
                     "en": {"$ifNull": [f"$k.{spec.end}.lo", "$u"]},
                     "lim": {"$ifNull": [f"$k.{spec.limit}.hi", None]}}
            on_time = {"$cond": [{"$and": [{"$ne": ["$lim", None]}, {"$lte": ["$en", "$lim"]}]}, 1, 0]}
            groups = [d async for d in await self._db.resources.aggregate([
                {"$match": where}, {"$project": value},
                {"$group": {"_id": None, "n": {"$sum": 1}, "on": {"$sum": on_time},
                            "m": {"$sum": {"$cond": [{"$ne": ["$st", None]}, 1, 0]}}}}])]
            count, on, measured = (groups[0]["n"], groups[0]["on"], groups[0]["m"]) if groups else (0, 0, 0)
            found: list[int | None] = []
            for q in spec.quantiles:
                if not measured:
                    found.append(None)
                    continue
                rank = max(1, min(measured, -(-q * measured // 1))) - 1
                rows = [d async for d in await self._db.resources.aggregate([
                    {"$match": where}, {"$project": value}, {"$match": {"st": {"$ne": None}}},
                    {"$project": {"d": {"$subtract": ["$en", "$st"]}}}, {"$sort": {"d": 1}},
                    {"$skip": int(rank)}, {"$limit": 1}])]
                found.append(int(rows[0]["d"]) if rows else None)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return SpanStats(int(count), int(on), int(measured), tuple(found))

    @guarded
    async def distinct_targets(self, query: SearchQuery, code: str, also: SearchQuery | None = None) -> int:
        """Distinct resources the matches name through a reference parameter (and `also`'s matches too)."""
        try:
            found = await self._targets(query, code)
            if also is not None:
                found &= await self._targets(also, code)
        except ConnectionFailure as exc:
            raise _unavailable(exc) from exc
        return len(found)

    async def _targets(self, query: SearchQuery, code: str) -> set[tuple[str, str]]:
        rows = [d async for d in await self._db.resources.aggregate([
            {"$match": await self._where(query, None)}, {"$unwind": "$x.ref"}, {"$match": {"x.ref.p": code}},
            {"$group": {"_id": {"t": "$x.ref.t", "i": "$x.ref.i"}}}])]
        return {(r["_id"].get("t"), r["_id"]["i"]) for r in rows if r["_id"].get("i") is not None}

    async def _where(self, query: SearchQuery, session: Any) -> dict[str, Any]:
        types = query.types if query.is_system else ()
        parts = [base_filter(query, types)]
        for flt in query.filters:
            parts.append(await self._resolve(compile_filter(flt, query.resource_type), session))
        return {"$and": parts}

    async def _search(self, query: SearchQuery, session: Any) -> SearchPage:
        where = await self._where(query, session)
        total = None
        if query.total in ("accurate", "estimate"):
            total = await self._db.resources.count_documents(where, session=session)
        if query.count == 0:
            return SearchPage([], None, total)
        projection = {"k": 0, "c": 0} if query.includes else _NO_INDEX
        if query.sort:
            cursor = self._db.resources.find(where, projection, session=session).sort(sort_spec(query.sort)).skip(
                query.cursor or 0).limit(query.count + 1)
        else:
            if query.cursor is not None:
                where = {"$and": [where, {"r": {"$gt": query.cursor}}]}
            cursor = self._db.resources.find(where, projection, session=session).sort("r", ASCENDING).limit(
                query.count + 1)
        docs = await cursor.to_list(None)
        more = len(docs) > query.count
        docs = docs[: query.count]
        next_cursor = None
        if more and docs:
            next_cursor = str((query.cursor or 0) + query.count) if query.sort else str(docs[-1]["r"])
        extra = await self._included(docs, query.includes, session) if query.includes else []
        return SearchPage([documents.stored(d) for d in docs], next_cursor, total, extra)

    async def _resolve(self, compiled: Any, session: Any) -> dict[str, Any]:
        """Run the subqueries of chains and _has and put their ids in place."""
        if isinstance(compiled, dict):
            return compiled
        kind = compiled[0]
        if kind in ("any-of", "none-of"):
            groups = [{"$and": [await self._resolve(c, session) for c in group] or [{}]} for group in compiled[1]]
            if kind == "none-of":
                return {"$nor": groups} if groups else {}
            return {"$or": groups} if groups else {"_id": {"$in": []}}
        if kind == "chain":
            _, code, targets = compiled
            alternatives = []
            for target_type, sub in targets:
                ids = await self._ids(sub, session)
                alternatives.append({"x.ref": {"$elemMatch": {"p": code, "t": target_type, "i": {"$in": ids}}}})
            return {"$or": alternatives} if alternatives else {"_id": {"$in": []}}
        sub = compiled[1]  # _has: the ids that the sources point at through the reference parameter
        where = await self._where(SearchQuery(sub.resource_type, sub.filters), session)
        pointed: set[str] = set()
        async for doc in self._db.resources.find(where, {"x.ref": 1}, session=session).limit(SUBQUERY_LIMIT):
            pointed.update(e["i"] for e in doc.get("x", {}).get("ref", [])
                           if e.get("p") == sub.code and e.get("t") == sub.target_type and e.get("i"))
        return {"i": {"$in": sorted(pointed)}}

    async def _ids(self, sub: Subquery, session: Any) -> list[str]:
        where = await self._where(SearchQuery(sub.resource_type, sub.filters), session)
        docs = await self._db.resources.find(where, {"i": 1}, session=session).limit(SUBQUERY_LIMIT).to_list(None)
        return [d["i"] for d in docs]

    async def _included(self, page: list[dict[str, Any]], includes: tuple[Include, ...],
                        session: Any) -> list[StoredResource]:
        seen = {(d["t"], d["i"]) for d in page}
        found: list[StoredResource] = []
        frontier = page
        for round_ in range(4):  # :iterate goes at most this many levels deep
            fresh: list[dict[str, Any]] = []
            for inc in includes:
                if round_ > 0 and not inc.iterate:
                    continue
                for doc in await self._include_docs(frontier, inc, session):
                    if (doc["t"], doc["i"]) not in seen and len(found) < INCLUDE_LIMIT:
                        seen.add((doc["t"], doc["i"]))
                        found.append(documents.stored(doc))
                        fresh.append(doc)
            if not fresh or not any(inc.iterate for inc in includes):
                break
            frontier = fresh
        return found

    async def _include_docs(self, frontier: list[dict[str, Any]], inc: Include, session: Any) -> list[dict[str, Any]]:
        projection = {"k": 0, "c": 0}
        if not inc.reverse:
            keys = {documents.key(e["t"], e["i"]) for d in frontier if d["t"] == inc.source_type
                    for e in d.get("x", {}).get("ref", []) if e.get("p") == inc.code and e.get("t") and e.get("i")
                    and (not inc.target_type or e["t"] == inc.target_type)}
            if not keys:
                return []
            found: list[dict[str, Any]] = await self._db.resources.find(
                {"_id": {"$in": sorted(keys)}, "d": False}, projection, session=session).to_list(None)
            return found
        targets = [d for d in frontier if not inc.target_type or d["t"] == inc.target_type]
        if not targets:
            return []
        alternatives = [{"x.ref": {"$elemMatch": {"p": inc.code, "t": d["t"], "i": d["i"]}}} for d in targets]
        docs: list[dict[str, Any]] = await self._db.resources.find(
            {"t": inc.source_type, "d": False, "$or": alternatives}, projection, session=session).limit(
            INCLUDE_LIMIT).to_list(None)
        return docs

    # -- writes ----------------------------------------------------------------------------------
    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[MongoWriteSession]:
        """A write transaction (multi-document); listeners hear of it after the commit."""
        async with self._lock:
            try:
                async with self._client.start_session() as session:
                    # retried as the driver's with_transaction would: a step-down or a write conflict begins
                    # it again with the same writes, and their numbers (counters roll back with it) stay contiguous
                    transaction = Transaction(session)
                    write_session = MongoWriteSession(self, transaction)
                    await transaction.begin()
                    try:
                        yield write_session
                    except BaseException:
                        await transaction.abort()
                        raise
                    await transaction.commit()
            except DuplicateKeyError as exc:
                raise Conflict("A resource with this id was created concurrently") from exc
            except PyMongoError as exc:  # still failing once the retries are spent: 503 with Retry-After
                mapped = failure(exc)
                if mapped is None:
                    raise
                raise mapped from exc
        if write_session.writes:
            for listener in self._listeners:
                listener(write_session.writes)

    async def _next(self, name: str, n: int, session: Any) -> int:
        """The first of n new numbers of a counter."""
        doc = await self._db.counters.find_one_and_update({"_id": name}, {"$inc": {"n": n}}, upsert=True,
                                                          return_document=ReturnDocument.AFTER, session=session)
        return int(doc["n"]) - n + 1


class MongoWriteSession:
    """Reads and writes inside one MongoDB transaction (each run again with the writes so far after a transient
    error: see retry.Transaction)."""

    def __init__(self, store: MongoStore, transaction: Transaction) -> None:
        self._store = store
        self._transaction = transaction
        self._session = transaction.session
        self.writes: list[Write] = []

    async def head(self, type: str, id: str) -> StoredResource | None:
        """The current version (deleted or not), inside the transaction."""
        return await self._transaction.run(lambda: self._store.read(type, id, self._session), write=False)

    async def read(self, type: str, id: str) -> StoredResource | None:
        """The current version, as this transaction sees it."""
        return await self.head(type, id)

    async def vread(self, type: str, id: str, vid: int) -> StoredResource | None:
        """One version, as this transaction sees it."""
        return await self._transaction.run(lambda: self._store.vread(type, id, vid, self._session), write=False)

    async def search(self, query: SearchQuery) -> SearchPage:
        """A search inside the transaction."""
        return await self._transaction.run(lambda: self._store.search(query, self._session), write=False)

    async def search_ids(self, query: SearchQuery, limit: int) -> list[tuple[str, str, int]]:
        """(type, id, vid) of matches inside the transaction."""
        page = await self.search(SearchQuery(query.resource_type, query.filters, count=limit, types=query.types))
        return [(r.type, r.id, r.vid) for r in page.resources]

    async def apply(self, writes: list[Write]) -> None:
        """Write current versions, versions and events; Conflict when an expected version no longer holds."""
        if not writes:
            return
        batch = list(writes)
        await self._transaction.run(lambda: self._apply(batch), write=True)
        self.writes.extend(batch)

    async def _apply(self, writes: list[Write]) -> None:
        # run again as a whole after a transient error: the version checks are made again in the new transaction
        db, session = self._store._db, self._session
        seq = await self._store._next("seq", len(writes), session)
        for offset, w in enumerate(writes):
            existing = await db.resources.find_one({"_id": documents.key(w.type, w.id)}, {"v": 1, "r": 1, "pk": 1},
                                                   session=session)
            current = existing["v"] if existing else 0
            if w.expected_vid is not None and w.expected_vid != current:
                raise Conflict(f"{w.type}/{w.id} changed concurrently (expected version {w.expected_vid}, "
                               f"found {current})")
            row = existing["r"] if existing else await self._store._next("row", 1, session)
            pk = existing.get("pk") if existing and w.action == "delete" else None
            doc = documents.current(w, row, seq + offset, pk)
            if existing:
                await db.resources.replace_one({"_id": doc["_id"], "v": current}, doc, session=session)
            else:
                await db.resources.insert_one(doc, session=session)
            await db.versions.insert_one(documents.version(w, seq + offset, doc["pk"]), session=session)
            await db.outbox.insert_one(documents.event(w, seq + offset), session=session)

    async def replace_index(self, type: str, items: list[tuple[int, int, IndexRows]]) -> None:
        """New index entries for (row, version) pairs that are still current."""
        async def replace() -> None:
            for row, vid, rows in items:
                await self._store._db.resources.update_one({"t": type, "r": row, "v": vid, "d": False},
                                                           {"$set": documents.index_fields(rows)},
                                                           session=self._session)
        await self._transaction.run(replace, write=True)
