"""SqliteStore: the embedded, durable, transactional store (WAL, one writer thread, reader threads).

Each write transaction runs on one dedicated writer connection, so a version check and the write it
guards can never interleave with another writer; readers use their own connections and see committed
snapshots (WAL). https://www.sqlite.org/isolation.html
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from resources.search.index import IndexRows
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
    StoredResource,
    SubscriptionEvent,
    Tallies,
    Write,
)
from resources.store.sqlite import aggregates, leases, reads
from resources.store.sqlite.bodies import MEMO_MIB, set_memo_mib
from resources.store.sqlite.failures import is_full, reraise
from resources.store.sqlite.reserve import DiskReserve
from resources.store.sqlite.schema import CACHE_MIB, DDL, HEAP_LIMIT_MIB, LAYOUT, LOOP_CACHE_MIB, PRAGMAS
from resources.store.sqlite.writes import apply_writes, expunge, replace_index

T = TypeVar("T")
INLINE_MS = 1.0  # default budget of a search on the event loop's connection before it moves to a reader thread
WRITER_IDLE_S = 5.0  # default quiet time after which the writer hands its page cache back
_CHECK_EVERY = 2000  # SQLite VM steps between two looks at the clock (a look costs ~0.2 us; 2000 steps ~10 us)
# A search whose shape (type, parameters, total, sort, includes) went past the budget, and then also took
# longer than the budget on the reader thread, goes straight to a thread next time, so a broad
# `_total=accurate` does not lose the budget on every call. The run on the thread is the judge: an overrun
# on the loop can be a stall (the process preempted on a busy machine), not the search's cost. Every run
# on a thread is timed again, and a shape that ran within the budget there returns to the event loop.
_SHAPES_KEPT = 1024  # shapes remembered; the memory is cleared when full
Subsumed = Callable[[str], Mapping[str, tuple[str, ...]]]


def _nothing_subsumed(resource_type: str) -> Mapping[str, tuple[str, ...]]:
    return {}


class ParamIds:
    """Index ids of search parameters, with the ids of the parameters each one subsumes (compile.ParamId)."""

    def __init__(self, ids: Callable[[str, str], int | None], subsumed: Subsumed) -> None:
        self._ids = ids
        self._subsumed = subsumed

    def __call__(self, resource_type: str, code: str) -> int | None:
        """The id of one parameter's entries; None when none was ever written."""
        return self._ids(resource_type, code)

    def including(self, resource_type: str, code: str) -> tuple[int, ...]:
        """The ids whose entries together are the parameter's values."""
        codes = (code, *self._subsumed(resource_type).get(code, ()))
        return tuple(p for p in (self._ids(resource_type, c) for c in codes) if p is not None)


def _connect(path: str, cache_mib: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    conn.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")  # negative: KiB, not pages
    return conn



def _shape(query: SearchQuery) -> tuple[object, ...]:
    return (query.resource_type, query.types, tuple((f.code, f.modifier, f.type) for f in query.filters),
            query.total, len(query.sort), len(query.includes), query.count > 100)


class SqliteStore:
    """The embedded store on one SQLite file (or ':memory:' for throw-away use)."""

    def __init__(self, path: str, *, readers: int = 2, subsumed: Subsumed = _nothing_subsumed,
                 cache_mib: int = CACHE_MIB, loop_cache_mib: int = LOOP_CACHE_MIB, inline_ms: float = INLINE_MS,
                 writer_idle_s: float = WRITER_IDLE_S, body_memo_mib: float = MEMO_MIB,
                 heap_limit_mib: float = HEAP_LIMIT_MIB, on_release: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.perf_counter, reserve: DiskReserve | None = None,
                 essential: bool = False,
                 ) -> None:
        # subsumed: for a type, the parameters whose values another parameter always holds
        # (SearchRegistry.subsumed); their shared entries are stored once and searched together
        self._path = path
        # reserve: the data folder's room kept for the audit trail; essential: this store is that trail (its
        # writes may use the released reserve; the others are refused while the disk is full)
        self._reserve = reserve
        self._essential = essential
        set_memo_mib(body_memo_mib)  # the memo is the process's: the last store opened sets its budget
        self._cache_mib = cache_mib
        self._heap_limit = int(heap_limit_mib * 1024 * 1024)  # SQLite's, so also the process's: 0 is none
        self._loop_cache_mib = loop_cache_mib
        self._inline_s = inline_ms / 1000
        self._deadline = math.inf
        self._clock = clock  # times the budget (a parameter so a test can stand in for a stalled process)
        self._long_shapes: set[tuple[object, ...]] = set()  # shapes that took longer than the budget on a thread
        # on_release: called on the writer thread after the writer let its cache go (the server trims the heap)
        self._writer_idle_s = writer_idle_s
        self._on_release = on_release
        self._last_write = 0.0
        self._release_timer: asyncio.TimerHandle | None = None
        self._releasing: asyncio.Task[None] | None = None
        self.subsumed = subsumed
        self._memory = path == ":memory:"
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._pids: dict[tuple[str, str], int] = {}
        self._leases_ready = False  # the lease table exists (made by the first claim)
        self._pid_lock = threading.Lock()  # guards the connection that looks up ids other processes assigned
        self._pid_conn: sqlite3.Connection | None = None
        self._sids: dict[str, int] = {}
        self._reader_conns: list[sqlite3.Connection] = []
        self._loop_conn: sqlite3.Connection | None = None
        self._listeners: list[Callable[[list[Write]], None]] = []
        self.param_ids = ParamIds(self.param_id, self.subsumed)

    def add_commit_listener(self, listener: Callable[[list[Write]], None]) -> None:
        """Call listener with the writes of every committed write session."""
        self._listeners.append(listener)

    def committed_elsewhere(self, writes: list[Write]) -> None:
        """Hand writes another instance committed (found by the feed follower) to the commit listeners."""
        for listener in self._listeners:
            listener(writes)

    # -- threads ---------------------------------------------------------------------------------
    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._on_writer_thread(fn, *args)
        except sqlite3.Error as exc:
            if is_full(exc) and self._reserve is not None:
                self._reserve.on_full()
            reraise(exc)

    async def _on_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        work = asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # The thread finishes what it started whatever the caller does (a background job cancelled at
            # shutdown, say): wait for it, so the next step on the writer (a rollback first) finds the connection
            # as that work left it. Its own failure wins; cancelled after success, the caller learns it succeeded
            # by the CancelledError alone (write_session then still tells the listeners of a commit).
            await asyncio.wait({work})
            if work.exception() is not None:
                raise work.exception() from None
            raise

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self._path, self._cache_mib)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            self._reader_conns.append(conn)
        return conn

    async def _on_reader(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            if self._memory:  # one in-memory database lives on one connection
                return await loop.run_in_executor(self._writer, fn, self._wconn(), *args)
            return await loop.run_in_executor(self._readers, self._with_reader, fn, args)
        except sqlite3.Error as exc:
            reraise(exc)

    def _with_reader(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        return fn(self._reader_conn(), *args)

    def _wconn(self) -> sqlite3.Connection:
        assert self._write_conn is not None, "store is not open"
        return self._write_conn

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the file and schema if needed and load the parameter ids."""
        if not self._memory:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        await self._on_writer(self._open_sync)

    def _open_sync(self) -> None:
        if self._reserve is not None:
            self._reserve.open()
        conn = self._write_conn = _connect(self._path, self._cache_mib)
        conn.execute(f"PRAGMA soft_heap_limit={self._heap_limit}")
        layout = conn.execute("PRAGMA user_version").fetchone()[0]
        used = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'resource'").fetchone()[0]
        if used and layout != LAYOUT:
            conn.close()
            self._write_conn = None
            # a pre-release layout (two copies of every body, an outbox table): no released build wrote it
            raise SystemExit(f"{self._path} was written by a pre-release CareLoop (storage layout {layout}); this "
                             f"build reads layout {LAYOUT}. Load the data again into a new file.")
        conn.executescript(DDL)
        conn.execute(f"PRAGMA user_version = {LAYOUT}")
        self._pids = {(t, c): p for p, t, c in conn.execute("SELECT pid, type, code FROM sp")}
        self._sids = {uri: sid for sid, uri in conn.execute("SELECT sid, uri FROM system")}

    async def close(self) -> None:
        """Close connections and stop threads."""
        if self._release_timer is not None:
            self._release_timer.cancel()
        if self._releasing is not None:
            await self._releasing
        if self._write_conn is not None:
            await self._on_writer(self._close_sync)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        for conn in self._reader_conns:
            conn.close()
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None
        if self._pid_conn is not None:
            self._pid_conn.close()
            self._pid_conn = None

    def _close_sync(self) -> None:
        assert self._write_conn is not None
        self._write_conn.close()
        self._write_conn = None

    # -- reads -----------------------------------------------------------------------------------
    async def read(self, type: str, id: str) -> StoredResource | None:
        """The current version of a resource (a primary-key lookup, run inline: see _inline_conn)."""
        if self._memory:
            return await self._on_reader(reads.read_current, type, id)
        try:
            return reads.read_current(self._inline_conn(), type, id)
        except sqlite3.Error as exc:
            reraise(exc)

    async def vread(self, type: str, id: str, vid: int) -> StoredResource | None:
        """One version of a resource (a primary-key lookup, run inline)."""
        if self._memory:
            return await self._on_reader(reads.read_version, type, id, vid)
        try:
            return reads.read_version(self._inline_conn(), type, id, vid)
        except sqlite3.Error as exc:
            reraise(exc)

    def _inline_conn(self) -> sqlite3.Connection:
        # Point reads by primary key take ~20 us from SQLite's page cache, less than handing the call to a
        # thread and back (which also waits for the GIL under load, up to the 5 ms switch interval). They
        # run on the event loop's own read-only connection, as do searches within the budget (search());
        # history and long searches go to the reader threads.
        if self._loop_conn is None:
            self._loop_conn = _connect(self._path, self._loop_cache_mib)
            self._loop_conn.execute("PRAGMA query_only=ON")
        return self._loop_conn

    async def history(self, query: HistoryQuery) -> list[StoredResource]:
        """Versions newest first, filtered by scope, _since, _at and a paging cursor."""
        return await self._on_reader(reads.history, query)

    async def search(self, query: SearchQuery) -> SearchPage:
        """One page of matches, and the total when the query asks for it."""
        return await self._query(reads.search, query)

    async def entries(self, query: SearchQuery) -> list[tuple[bytes, bytes]]:
        """The matches of a query without includes or a total as (type/id, body), in page order."""
        return await self._query(reads.entries, query)

    async def lastn(self, query: SearchQuery, code: str, date: str, per_code: int) -> list[StoredResource]:
        """Per value of the token parameter `code`, the latest `per_code` matches by the date parameter `date`."""
        return await self._on_reader(reads.lastn, query, self.param_ids, code, date, per_code)

    async def aggregate(self, query: SearchQuery, keys: tuple[GroupKey, ...]) -> Groups:
        """The counts of a query's matches by the keys' values (GROUP BY on a reader thread)."""
        return await self._on_reader(reads.aggregate, query, keys, self.param_ids)

    async def tally(self, query: SearchQuery, keys: tuple[GroupKey, ...], measures: tuple[Measure, ...]) -> Tallies:
        """Per combination of the keys' values, the count and measures of the matches (GROUP BY on a reader)."""
        return await self._on_reader(aggregates.tally, query, keys, measures, self.param_ids)

    async def spans(self, query: SearchQuery, spec: Spans) -> SpanStats:
        """Spans of the matches of a query, computed by SQLite on a reader thread."""
        return await self._on_reader(aggregates.spans, query, self.param_ids, spec)

    async def distinct_targets(self, query: SearchQuery, code: str, also: SearchQuery | None = None) -> int:
        """How many distinct resources the matches name through a reference parameter (and `also`'s too)."""
        return await self._on_reader(aggregates.distinct_targets, query, self.param_ids, code, also)

    async def _query(self, run: Callable[[sqlite3.Connection, SearchQuery, Any], T], query: SearchQuery) -> T:
        if self._memory or self._inline_s <= 0:
            return await self._on_reader(run, query, self.param_ids)
        shape = _shape(query)
        if shape not in self._long_shapes:
            found = self._search_inline(run, query)
            if found is not None:
                return found
        found, took = await self._on_reader(self._timed_search, run, query)
        if took > self._inline_s:
            if len(self._long_shapes) >= _SHAPES_KEPT:
                self._long_shapes.clear()
            self._long_shapes.add(shape)
        else:
            self._long_shapes.discard(shape)
        return found

    def _timed_search(self, conn: sqlite3.Connection, run: Callable[[sqlite3.Connection, SearchQuery, Any], T],
                      query: SearchQuery) -> tuple[T, float]:
        started = self._clock()
        found = run(conn, query, self.param_ids)
        return found, self._clock() - started

    def _search_inline(self, run: Callable[[sqlite3.Connection, SearchQuery, Any], T],
                       query: SearchQuery) -> T | None:
        # Handing a search to a reader thread and back costs 0.2 to 0.5 ms (two thread wake-ups, and the
        # GIL under load), more than most searches take in SQLite. So a search first runs on the event
        # loop's connection with a small budget; SQLite's progress handler stops it at the deadline and
        # the search starts again on a reader thread. The loop is held at most the budget, and a long
        # search loses at most that much work. https://www.sqlite.org/c3ref/progress_handler.html
        conn = self._inline_conn()
        self._deadline = self._clock() + self._inline_s
        conn.set_progress_handler(self._over_budget, _CHECK_EVERY)
        try:
            return run(conn, query, self.param_ids)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_INTERRUPT:
                reraise(exc)
            return None
        finally:
            conn.set_progress_handler(None, 0)
            self._deadline = math.inf

    def _over_budget(self) -> bool:
        return self._clock() > self._deadline

    async def compartment_types(self, patient_id: str) -> list[str]:
        """The resource types that have a current resource in a patient's compartment."""
        return await self._on_reader(reads.compartment_types, patient_id)

    async def outbox(self, after_seq: int, limit: int) -> list[OutboxEvent]:
        """Change events after a sequence number."""
        return await self._on_reader(reads.outbox, after_seq, limit)

    async def last_seq(self) -> int:
        """The newest committed change's sequence number."""
        return await self._on_reader(reads.last_seq)

    async def changes(self, after_seq: int, until_seq: int, types: Collection[str], limit: int,
                      ) -> list[StoredResource]:
        """Versions of the given types written in (after_seq, until_seq], oldest first."""
        if not types:
            return []
        return await self._on_reader(reads.changes, after_seq, until_seq, sorted(types), limit)

    async def mark(self, name: str) -> int | None:
        """A durable number kept under a name."""
        return await self._on_reader(reads.mark, name)

    async def set_mark(self, name: str, value: int) -> None:
        """Keep a durable number under a name (its own short transaction, after any write session)."""
        async with self._lock:
            await self._on_writer(self._set_mark_sync, name, value)

    def _set_mark_sync(self, name: str, value: int) -> None:
        self._room()
        self._wconn().execute("INSERT INTO mark (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                              "SET value = excluded.value", (name, value))

    async def expunge(self, type: str, ids: Collection[str]) -> int:
        """Remove resources with all their versions for good (audit retention); how many were removed."""
        async with self._lock:
            return await self._on_writer(self._expunge_sync, type, list(ids))

    def _expunge_sync(self, type_: str, ids: list[str]) -> int:
        conn = self._wconn()
        self._room()
        conn.execute("BEGIN IMMEDIATE")
        try:
            removed = expunge(conn, type_, ids)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return removed

    async def record_events(self, events: Sequence[SubscriptionEvent], marks: Mapping[str, int],
                            trim: Mapping[str, int]) -> None:
        """Add numbered events, set marks and drop events up to each `trim` number, in one transaction (off the
        request path: the engine calls it once per matched feed batch)."""
        async with self._lock:
            await self._on_writer(self._record_events_sync, list(events), dict(marks), dict(trim))

    def _record_events_sync(self, events: list[SubscriptionEvent], marks: dict[str, int],
                            trim: dict[str, int]) -> None:
        conn = self._wconn()
        self._room()
        conn.execute("BEGIN IMMEDIATE")
        try:
            # replace: a batch matched again after a crash numbers its events alike
            conn.executemany("INSERT OR REPLACE INTO event (sub, n, at, type, id, vid, method, withheld) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [(e.subscription, e.number, e.at_ms, e.type, e.id, e.vid, e.method, int(e.withheld))
                              for e in events])
            conn.executemany("INSERT INTO mark (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                             "SET value = excluded.value", list(marks.items()))
            conn.executemany("DELETE FROM event WHERE sub = ? AND n <= ?", list(trim.items()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def subscription_events(self, subscription: str, after: int, until: int | None, limit: int,
                                  ) -> list[SubscriptionEvent]:
        """A subscription's kept events numbered in (after, until], oldest first."""
        return await self._on_reader(reads.subscription_events, subscription, after, until, limit)

    async def claim(self, job: str, holder: str, seconds: float) -> bool:
        """Take or renew a job's lease (leases.py), on the writer: the upsert is a write of its own."""
        async with self._lock:
            return await self._on_writer(self._claim_sync, job, holder, seconds)

    def _claim_sync(self, job: str, holder: str, seconds: float) -> bool:
        # the table is made on first use: a store no job runs on (the audit trail's) keeps its file as it was
        if not self._leases_ready:
            self._wconn().execute(leases.DDL)
            self._leases_ready = True
        return leases.claim(self._wconn(), job, holder, seconds)

    async def release(self, job: str, holder: str) -> None:
        """Give up a job's lease this holder has."""
        async with self._lock:
            if self._leases_ready:  # nothing to give up in a store that never had a lease taken
                await self._on_writer(leases.release, self._wconn(), job, holder)

    def param_id(self, type: str, code: str) -> int | None:
        """The numeric id of a search parameter in the index tables, if any entry was ever written."""
        found = self._pids.get((type, code))
        if found is None and not self._memory:
            # another process on the file may have written the first entry of this parameter since we opened it
            found = self._stored_pid(type, code)
        return found

    def _stored_pid(self, type_: str, code: str) -> int | None:
        with self._pid_lock:
            if self._pid_conn is None:
                self._pid_conn = _connect(self._path, 1)
                self._pid_conn.execute("PRAGMA query_only=ON")
            row = self._pid_conn.execute("SELECT pid FROM sp WHERE type = ? AND code = ?", (type_, code)).fetchone()
        if row is None:
            return None
        self._pids[(type_, code)] = int(row[0])  # ids never change once committed
        return int(row[0])

    # -- writes ----------------------------------------------------------------------------------
    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[SqliteWriteSession]:
        """An exclusive write transaction; commits on success, rolls back on any error."""
        async with self._lock:
            session = SqliteWriteSession(self)
            try:
                await self._on_writer(self._begin)  # cancelled here, BEGIN may have run: the rollback below ends it
                yield session
            except BaseException:
                await self._on_writer(self._rollback)
                raise
            else:
                try:
                    await self._on_writer(self._commit, session.new_pids, session.new_sids)
                except asyncio.CancelledError:  # committed all the same (_on_writer waited for it)
                    self._committed(session)
                    raise
                except Exception:
                    await self._on_writer(self._rollback)  # a COMMIT that failed (disk full) may leave it open
                    raise
                self._committed(session)

    def _committed(self, session: SqliteWriteSession) -> None:
        self._wrote()
        if session.applied:
            for listener in self._listeners:
                listener(session.applied)

    def _wrote(self) -> None:
        # The writer's page cache fills during an ingest (up to cache_mib) and serves only writes; once
        # writes pause it is handed back (PRAGMA shrink_memory) rather than held for the process's life.
        # The readers keep theirs: searches need them. https://www.sqlite.org/pragma.html#pragma_shrink_memory
        self._last_write = time.monotonic()
        if self._release_timer is None and self._writer_idle_s > 0 and not self._memory:
            self._release_timer = asyncio.get_running_loop().call_later(self._writer_idle_s, self._release_if_idle)

    def _release_if_idle(self) -> None:
        self._release_timer = None
        quiet = time.monotonic() - self._last_write
        if quiet < self._writer_idle_s or self._lock.locked() or self._releasing is not None:
            delay = max(self._writer_idle_s - quiet, 0.5)
            self._release_timer = asyncio.get_running_loop().call_later(delay, self._release_if_idle)
            return
        self._releasing = asyncio.ensure_future(self._release())

    async def _release(self) -> None:
        try:
            async with self._lock:
                await self._on_writer(self._release_sync)
        finally:
            self._releasing = None

    def _release_sync(self) -> None:
        self._wconn().execute("PRAGMA shrink_memory")
        if self._on_release is not None:
            self._on_release()

    def _begin(self) -> None:
        self._room()
        self._wconn().execute("BEGIN IMMEDIATE")

    def _room(self) -> None:
        # before a transaction, so a full disk refuses a clinical write before any of it runs
        if self._reserve is not None:
            self._reserve.before_write(essential=self._essential)

    def _rollback(self) -> None:
        conn = self._wconn()
        if conn.in_transaction:  # a BEGIN that failed (or never ran) left nothing to roll back
            conn.execute("ROLLBACK")

    def _commit(self, new_pids: dict[tuple[str, str], int], new_sids: dict[str, int]) -> None:
        self._wconn().execute("COMMIT")
        # ids assigned inside the transaction become known only once it committed (a rollback forgets them)
        self._pids.update(new_pids)
        self._sids.update(new_sids)

    def _pid_for_write(self, type_: str, code: str, pending: dict[tuple[str, str], int]) -> int:
        key = (type_, code)
        pid = self._pids.get(key) or pending.get(key)
        if pid is None:  # another process on the file may have assigned it (this transaction holds the lock)
            row = self._wconn().execute("SELECT pid FROM sp WHERE type = ? AND code = ?", key).fetchone()
            pid = pending[key] = int(row[0]) if row is not None else 0
        if not pid:
            cur = self._wconn().execute("INSERT INTO sp (type, code) VALUES (?, ?)", key)
            pid = int(cur.lastrowid or 0)
            pending[key] = pid
        return pid

    def _sid_for_write(self, uri: str | None, pending: dict[str, int]) -> int | None:
        if uri is None:
            return None
        sid = self._sids.get(uri) or pending.get(uri)
        if sid is None:  # as for parameter ids: another process may have assigned it
            row = self._wconn().execute("SELECT sid FROM system WHERE uri = ?", (uri,)).fetchone()
            sid = pending[uri] = int(row[0]) if row is not None else 0
        if not sid:
            cur = self._wconn().execute("INSERT INTO system (uri) VALUES (?)", (uri,))
            sid = pending[uri] = int(cur.lastrowid or 0)
        return sid

    def _apply_sync(self, writes: list[Write], pending: dict[tuple[str, str], int], systems: dict[str, int]) -> None:
        apply_writes(self._wconn(), writes, lambda t, c: self._pid_for_write(t, c, pending),
                     lambda uri: self._sid_for_write(uri, systems), self.subsumed)

    def _replace_index_sync(self, type_: str, items: list[tuple[int, int, IndexRows]],
                            pending: dict[tuple[str, str], int], systems: dict[str, int]) -> None:
        replace_index(self._wconn(), type_, items, lambda t, c: self._pid_for_write(t, c, pending),
                      lambda uri: self._sid_for_write(uri, systems), self.subsumed)


class SqliteWriteSession:
    """Reads and writes inside one SQLite write transaction."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.new_pids: dict[tuple[str, str], int] = {}
        self.new_sids: dict[str, int] = {}
        # The lookup closes over the store and this session's new ids, not over the session itself: a
        # bound method here made a cycle (session -> ParamIds -> session), so every finished session and
        # the bodies of its writes waited for the cycle collector, which the server runs rarely (gc.freeze
        # and a 50,000 threshold): 28 sessions and 2,800 writes, 10 MB, were still held after a 200k load.
        known, new_pids = store.param_id, self.new_pids
        self._params = ParamIds(lambda type, code: known(type, code) or new_pids.get((type, code)), store.subsumed)
        self.applied: list[Write] = []

    async def head(self, type: str, id: str) -> StoredResource | None:
        """The current version row, body included."""
        return await self._store._on_writer(reads.read_current, self._store._wconn(), type, id)

    async def read(self, type: str, id: str) -> StoredResource | None:
        """The current version as this transaction sees it."""
        return await self.head(type, id)

    async def vread(self, type: str, id: str, vid: int) -> StoredResource | None:
        """One version as this transaction sees it."""
        return await self._store._on_writer(reads.read_version, self._store._wconn(), type, id, vid)

    async def search(self, query: SearchQuery) -> SearchPage:
        """A page of matches as this transaction sees them."""
        return await self._store._on_writer(reads.search, self._store._wconn(), query, self._params)

    async def search_ids(self, query: SearchQuery, limit: int) -> list[tuple[str, str, int]]:
        """Matches of a query as seen inside this transaction."""
        page = await self._store._on_writer(reads.search, self._store._wconn(), query, self._params)
        return [(r.type, r.id, r.vid) for r in page.resources[:limit]]

    async def apply(self, writes: list[Write]) -> None:
        """Write versions, index rows and outbox events."""
        await self._store._on_writer(self._store._apply_sync, writes, self.new_pids, self.new_sids)
        self.applied.extend(writes)

    async def replace_index(self, type: str, items: list[tuple[int, int, IndexRows]]) -> None:
        """Replace the index entries of versions that are still current."""
        await self._store._on_writer(self._store._replace_index_sync, type, items, self.new_pids, self.new_sids)
