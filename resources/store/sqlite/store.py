"""SqliteStore: the embedded, durable, transactional store (WAL, one writer thread, reader threads).

Each write transaction runs on one dedicated writer connection, so a version check and the write it
guards can never interleave with another writer; readers use their own connections and see committed
snapshots (WAL). https://www.sqlite.org/isolation.html
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from resources.errors import Conflict
from resources.search.index import IndexRows
from resources.search.query import Include, SearchQuery
from resources.store.protocol import HistoryQuery, OutboxEvent, SearchPage, StoredResource, Write
from resources.store.sqlite.compile import compile_search
from resources.store.sqlite.schema import DDL, INDEX_TABLES, PRAGMAS

T = TypeVar("T")
_VERSION_COLUMNS = "seq, type, id, vid, updated, deleted, body, method"


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


def _version(row: tuple[Any, ...]) -> StoredResource:
    seq, type_, id_, vid, updated, deleted, body, method = row
    return StoredResource(type_, id_, vid, updated, bool(deleted), body, method, seq)


class SqliteStore:
    """The embedded store on one SQLite file (or ':memory:' for throw-away use)."""

    def __init__(self, path: str, *, readers: int = 2) -> None:
        self._path = path
        self._memory = path == ":memory:"
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._pids: dict[tuple[str, str], int] = {}
        self._reader_conns: list[sqlite3.Connection] = []
        self._loop_conn: sqlite3.Connection | None = None
        self._listeners: list[Callable[[list[Write]], None]] = []

    def add_commit_listener(self, listener: Callable[[list[Write]], None]) -> None:
        """Call listener with the writes of every committed write session."""
        self._listeners.append(listener)

    # -- threads ---------------------------------------------------------------------------------
    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self._path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            self._reader_conns.append(conn)
        return conn

    async def _on_reader(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        if self._memory:  # one in-memory database lives on one connection
            return await loop.run_in_executor(self._writer, fn, self._wconn(), *args)
        return await loop.run_in_executor(self._readers, self._with_reader, fn, args)

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
        self._write_conn = _connect(self._path)
        self._write_conn.executescript(DDL)
        self._pids = {(t, c): p for p, t, c in self._write_conn.execute("SELECT pid, type, code FROM sp")}

    async def close(self) -> None:
        """Close connections and stop threads."""
        if self._write_conn is not None:
            await self._on_writer(self._close_sync)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        for conn in self._reader_conns:
            conn.close()
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None

    def _close_sync(self) -> None:
        assert self._write_conn is not None
        self._write_conn.close()
        self._write_conn = None

    # -- reads -----------------------------------------------------------------------------------
    async def read(self, type: str, id: str) -> StoredResource | None:
        """The current version of a resource (a primary-key lookup, run inline: see _inline_conn)."""
        if self._memory:
            return await self._on_reader(_read_current, type, id)
        return _read_current(self._inline_conn(), type, id)

    async def vread(self, type: str, id: str, vid: int) -> StoredResource | None:
        """One version of a resource (a primary-key lookup, run inline)."""
        if self._memory:
            return await self._on_reader(_read_version, type, id, vid)
        return _read_version(self._inline_conn(), type, id, vid)

    def _inline_conn(self) -> sqlite3.Connection:
        # Point reads by primary key take ~20 us from SQLite's page cache, less than handing the call to a
        # thread and back (which also waits for the GIL under load, up to the 5 ms switch interval). They
        # run on the event loop's own read-only connection; scans (search, history) still go to threads.
        if self._loop_conn is None:
            self._loop_conn = _connect(self._path)
            self._loop_conn.execute("PRAGMA query_only=ON")
        return self._loop_conn

    async def history(self, query: HistoryQuery) -> list[StoredResource]:
        """Versions newest first, filtered by scope, _since, _at and a paging cursor."""
        return await self._on_reader(_history, query)

    async def search(self, query: SearchQuery) -> SearchPage:
        """One page of matches, and the total when the query asks for it."""
        return await self._on_reader(_search, query, self.param_id)

    async def included(self, page: list[StoredResource], includes: tuple[Include, ...],
                       limit: int) -> list[StoredResource]:
        """Resources that _include/_revinclude add to a page."""
        return await self._on_reader(_included, page, includes, self.param_id, limit)

    async def outbox(self, after_seq: int, limit: int) -> list[OutboxEvent]:
        """Change events after a sequence number."""
        return await self._on_reader(_outbox, after_seq, limit)

    def param_id(self, type: str, code: str) -> int | None:
        """The numeric id of a search parameter in the index tables, if any entry was ever written."""
        return self._pids.get((type, code))

    # -- writes ----------------------------------------------------------------------------------
    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[SqliteWriteSession]:
        """An exclusive write transaction; commits on success, rolls back on any error."""
        async with self._lock:
            session = SqliteWriteSession(self)
            await self._on_writer(self._begin)
            try:
                yield session
            except BaseException:
                await self._on_writer(self._rollback)
                raise
            else:
                await self._on_writer(self._commit, session.new_pids)
                if session.applied:
                    for listener in self._listeners:
                        listener(session.applied)

    def _begin(self) -> None:
        self._wconn().execute("BEGIN IMMEDIATE")

    def _rollback(self) -> None:
        self._wconn().execute("ROLLBACK")

    def _commit(self, new_pids: dict[tuple[str, str], int]) -> None:
        self._wconn().execute("COMMIT")
        self._pids.update(new_pids)

    def _pid_for_write(self, type_: str, code: str, pending: dict[tuple[str, str], int]) -> int:
        key = (type_, code)
        pid = self._pids.get(key) or pending.get(key)
        if pid is None:
            cur = self._wconn().execute("INSERT INTO sp (type, code) VALUES (?, ?)", key)
            pid = int(cur.lastrowid or 0)
            pending[key] = pid
        return pid

    def _apply_sync(self, writes: list[Write], pending: dict[tuple[str, str], int]) -> None:
        conn = self._wconn()
        tables: dict[str, list[tuple[Any, ...]]] = {name: [] for name in INDEX_TABLES}
        # This connection holds the only write transaction, so row ids and version sequence numbers can be
        # assigned here and every insert batched.
        next_rid = conn.execute("SELECT coalesce(max(rid), 0) FROM resource").fetchone()[0] + 1
        next_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM version").fetchone()[0] + 1
        new_rows, versions, events = [], [], []
        for w in writes:
            deleted = 1 if w.action == "delete" else 0
            # a new resource skips the lookup: UNIQUE (type, id) still refuses a duplicate
            existing = None if w.action == "create" and w.expected_vid == 0 else self._update_row(conn, w, deleted)
            if existing is None:
                rid, next_rid = next_rid, next_rid + 1
                new_rows.append((rid, w.type, w.id, w.vid, w.updated_ms, deleted, w.body))
            else:
                rid = existing
            seq, next_seq = next_seq, next_seq + 1
            versions.append((seq, rid, w.type, w.id, w.vid, w.updated_ms, w.method, deleted, w.body))
            events.append((seq, w.type, w.id, w.vid, w.action, w.updated_ms))
            if w.rows is not None and not deleted:
                self._collect_rows(w, rid, tables, pending)
        try:
            conn.executemany("INSERT INTO resource (rid, type, id, vid, updated, deleted, body) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", new_rows)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"A resource with this id was created concurrently: {exc}") from exc
        conn.executemany("INSERT INTO version (seq, rid, type, id, vid, updated, method, deleted, body) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", versions)
        conn.executemany("INSERT INTO outbox (version_seq, type, id, vid, action, at) VALUES (?, ?, ?, ?, ?, ?)",
                         events)
        self._insert_rows(conn, tables)

    def _update_row(self, conn: sqlite3.Connection, w: Write, deleted: int) -> int | None:
        """Update the current row in place; None when there is none yet (the caller inserts it)."""
        row = conn.execute("SELECT rid, vid FROM resource WHERE type = ? AND id = ?", (w.type, w.id)).fetchone()
        current = row[1] if row else 0
        if w.expected_vid is not None and w.expected_vid != current:
            raise Conflict(f"{w.type}/{w.id} changed concurrently (expected version {w.expected_vid}, "
                           f"found {current})")
        if row is None:
            return None
        conn.execute("UPDATE resource SET vid = ?, updated = ?, deleted = ?, body = ? WHERE rid = ?",
                     (w.vid, w.updated_ms, deleted, w.body, row[0]))
        for name in INDEX_TABLES:
            conn.execute(f"DELETE FROM {name} WHERE rid = ?", (row[0],))
        return int(row[0])

    def _replace_index_sync(self, type_: str, items: list[tuple[int, int, IndexRows]],
                            pending: dict[tuple[str, str], int]) -> None:
        conn = self._wconn()
        tables: dict[str, list[tuple[Any, ...]]] = {name: [] for name in INDEX_TABLES}
        for rid, vid, rows in items:
            row = conn.execute("SELECT id, vid, deleted FROM resource WHERE rid = ?", (rid,)).fetchone()
            if row is None or row[1] != vid or row[2]:
                continue  # changed since it was read: its own write indexed it with the current parameters
            for name in INDEX_TABLES:
                conn.execute(f"DELETE FROM {name} WHERE rid = ?", (rid,))
            self._collect_rows(Write(type_, row[0], vid, 0, "update", None, rows), rid, tables, pending)
        self._insert_rows(conn, tables)

    def _collect_rows(self, w: Write, rid: int, tables: dict[str, list[tuple[Any, ...]]],
                      pending: dict[tuple[str, str], int]) -> None:
        rows = w.rows
        assert rows is not None

        def pid(code: str) -> int:
            return self._pid_for_write(w.type, code, pending)

        tables["idx_token"].extend((rid, n, pid(c), s, v, t) for n, (c, s, v, t) in enumerate(rows.tokens))
        tables["idx_string"].extend((rid, n, pid(c), no, e) for n, (c, no, e) in enumerate(rows.strings))
        tables["idx_ref"].extend((rid, n, pid(c), tt, ti, u) for n, (c, tt, ti, u) in enumerate(rows.references))
        tables["idx_date"].extend((rid, n, pid(c), lo, hi) for n, (c, lo, hi) in enumerate(rows.dates))
        tables["idx_number"].extend((rid, n, pid(c), v) for n, (c, v) in enumerate(rows.numbers))
        tables["idx_quantity"].extend((rid, n, pid(c), s, u, v) for n, (c, s, u, v) in enumerate(rows.quantities))
        tables["idx_uri"].extend((rid, n, pid(c), v) for n, (c, v) in enumerate(rows.uris))
        tables["idx_composite"].extend((rid, n, pid(c), *rest) for n, (c, *rest) in enumerate(rows.composites))
        tables["compartment"].extend((rid, p) for p in dict.fromkeys(rows.compartments))

    @staticmethod
    def _insert_rows(conn: sqlite3.Connection, tables: dict[str, list[tuple[Any, ...]]]) -> None:
        for name, rows in tables.items():
            if rows:
                marks = ",".join("?" * len(rows[0]))
                conn.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)


class SqliteWriteSession:
    """Reads and writes inside one SQLite write transaction."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.new_pids: dict[tuple[str, str], int] = {}
        self.applied: list[Write] = []

    async def head(self, type: str, id: str) -> StoredResource | None:
        """The current version row, body included."""
        return await self._store._on_writer(_read_current, self._store._wconn(), type, id)

    async def read(self, type: str, id: str) -> StoredResource | None:
        """The current version as this transaction sees it."""
        return await self.head(type, id)

    async def vread(self, type: str, id: str, vid: int) -> StoredResource | None:
        """One version as this transaction sees it."""
        return await self._store._on_writer(_read_version, self._store._wconn(), type, id, vid)

    async def search(self, query: SearchQuery) -> SearchPage:
        """A page of matches as this transaction sees them."""
        return await self._store._on_writer(_search, self._store._wconn(), query, self._pid)

    async def included(self, page: list[StoredResource], includes: tuple[Include, ...],
                       limit: int) -> list[StoredResource]:
        """Resources that _include/_revinclude add to a page, as this transaction sees them."""
        return await self._store._on_writer(_included, self._store._wconn(), page, includes, self._pid, limit)

    async def search_ids(self, query: SearchQuery, limit: int) -> list[tuple[str, str, int]]:
        """Matches of a query as seen inside this transaction."""
        page = await self._store._on_writer(_search, self._store._wconn(), query, self._pid)
        return [(r.type, r.id, r.vid) for r in page.resources[:limit]]

    def _pid(self, type: str, code: str) -> int | None:
        return self._store.param_id(type, code) or self.new_pids.get((type, code))

    async def apply(self, writes: list[Write]) -> None:
        """Write versions, index rows and outbox events."""
        await self._store._on_writer(self._store._apply_sync, writes, self.new_pids)
        self.applied.extend(writes)

    async def replace_index(self, type: str, items: list[tuple[int, int, IndexRows]]) -> None:
        """Replace the index entries of versions that are still current."""
        await self._store._on_writer(self._store._replace_index_sync, type, items, self.new_pids)


def _read_current(conn: sqlite3.Connection, type_: str, id_: str) -> StoredResource | None:
    row = conn.execute("SELECT rid, type, id, vid, updated, deleted, body FROM resource WHERE type = ? AND id = ?",
                       (type_, id_)).fetchone()
    if row is None:
        return None
    return StoredResource(row[1], row[2], row[3], row[4], bool(row[5]), row[6], seq=row[0])


def _read_version(conn: sqlite3.Connection, type_: str, id_: str, vid: int) -> StoredResource | None:
    row = conn.execute(f"SELECT {_VERSION_COLUMNS} FROM version WHERE type = ? AND id = ? AND vid = ?",
                       (type_, id_, vid)).fetchone()
    return _version(row) if row else None


def _history(conn: sqlite3.Connection, q: HistoryQuery) -> list[StoredResource]:
    where, args = [], []
    if q.type is not None:
        where.append("v.type = ?")
        args.append(q.type)
    if q.id is not None:
        where.append("v.id = ?")
        args.append(q.id)
    if q.since_ms is not None:
        where.append("v.updated >= ?")
        args.append(q.since_ms)
    if q.at_ms is not None:
        # versions current at that moment: written by then and not superseded before it
        where.append("v.updated <= ? AND NOT EXISTS (SELECT 1 FROM version n WHERE n.type = v.type AND "
                     "n.id = v.id AND n.vid > v.vid AND n.updated <= ?)")
        args.extend([q.at_ms, q.at_ms])
    if q.before_seq is not None:
        where.append("v.seq < ?")
        args.append(q.before_seq)
    sql = f"SELECT {', '.join('v.' + c.strip() for c in _VERSION_COLUMNS.split(','))} FROM version v"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY v.seq DESC LIMIT ?"
    args.append(q.count)
    return [_version(r) for r in conn.execute(sql, args)]


def _search(conn: sqlite3.Connection, query: SearchQuery, param_id: Callable[[str, str], int | None]) -> SearchPage:
    stored_types: tuple[str, ...] = ()
    if query.is_system and not query.types:
        stored_types = tuple(t for (t,) in conn.execute("SELECT DISTINCT type FROM sp"))
    page_sql, args, count_sql, count_args = compile_search(query, param_id, stored_types)
    rows = conn.execute(page_sql, args).fetchall()
    more = len(rows) > query.count
    rows = rows[: query.count]
    resources = [StoredResource(t, i, v, u, False, b, seq=rid) for rid, t, i, v, u, b in rows]
    total = None
    if query.total in ("accurate", "estimate"):
        total = conn.execute(count_sql, count_args).fetchone()[0]
    next_cursor = None
    if more and rows:
        next_cursor = str((query.cursor or 0) + query.count) if query.sort else str(rows[-1][0])
    return SearchPage(resources, next_cursor, total)


_INCLUDE_COLUMNS = "t.rid, t.type, t.id, t.vid, t.updated, t.body"


def _include_rows(conn: sqlite3.Connection, frontier: list[StoredResource], inc: Include,
                  param_id: Callable[[str, str], int | None]) -> list[tuple[Any, ...]]:
    pid = param_id(inc.source_type, inc.code)
    if pid is None:
        return []
    target = " AND i.target_type = ?" if inc.target_type else ""
    extra = [inc.target_type] if inc.target_type else []
    if not inc.reverse:
        rids = [r.seq for r in frontier if r.type == inc.source_type]
        if not rids:
            return []
        return conn.execute(
            f"SELECT {_INCLUDE_COLUMNS} FROM idx_ref i JOIN resource t ON t.type = i.target_type AND "
            f"t.id = i.target_id WHERE i.pid = ? AND t.deleted = 0{target} AND i.rid IN "
            f"({','.join('?' * len(rids))})", [pid, *extra, *rids]).fetchall()
    pairs = [(r.type, r.id) for r in frontier if not inc.target_type or r.type == inc.target_type]
    if not pairs:
        return []
    values = ",".join("(?, ?)" for _ in pairs)
    return conn.execute(
        f"SELECT {_INCLUDE_COLUMNS} FROM idx_ref i JOIN resource t ON t.rid = i.rid WHERE i.pid = ? AND "
        f"t.deleted = 0{target} AND (i.target_type, i.target_id) IN (VALUES {values})",
        [pid, *extra, *(v for pair in pairs for v in pair)]).fetchall()


def _included(conn: sqlite3.Connection, page: list[StoredResource], includes: tuple[Include, ...],
              param_id: Callable[[str, str], int | None], limit: int) -> list[StoredResource]:
    seen = {(r.type, r.id) for r in page}
    found: list[StoredResource] = []
    frontier = page
    for round_ in range(4):  # :iterate goes at most this many levels deep
        fresh: list[StoredResource] = []
        for inc in includes:
            if round_ > 0 and not inc.iterate:
                continue
            for rid, type_, id_, vid, updated, body in _include_rows(conn, frontier, inc, param_id):
                if (type_, id_) not in seen and len(found) < limit:
                    seen.add((type_, id_))
                    res = StoredResource(type_, id_, vid, updated, False, body, seq=rid)
                    found.append(res)
                    fresh.append(res)
        if not fresh or not any(inc.iterate for inc in includes):
            break
        frontier = fresh
    return found


def _outbox(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[OutboxEvent]:
    rows = conn.execute("SELECT seq, type, id, vid, action, at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                        (after_seq, limit))
    return [OutboxEvent(*row) for row in rows]
