"""The audit log on SQLite: one row per record, a narrow clustered index, the chains' checkpoints, in one file.

`audit_record` holds each record once (its members are materialised by the audit trail on read);
`audit_index` is WITHOUT ROWID and clustered by (param, value, recorded, seq, member, sys), so each entry costs
one B-tree insert and every compliance query of SECURITY.md §4 (a parameter's value over a time window, newest
first) is one range of it. A batch of records and their entries commits in one transaction on the writer thread;
readers use their own connection (WAL). https://www.sqlite.org/withoutrowid.html
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from resources.store.audit_log.model import (
    MEMBERS,
    ChainMoved,
    CheckpointRow,
    Entry,
    LogQuery,
    NewRecord,
    StoredRecord,
)
from resources.store.sqlite.failures import is_full
from resources.store.sqlite.reserve import DiskReserve

T = TypeVar("T")
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=10000",
           "PRAGMA temp_store=MEMORY", "PRAGMA cache_size=-16384")
DDL = """
CREATE TABLE IF NOT EXISTS audit_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_chain (chain TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS audit_record (
    seq INTEGER PRIMARY KEY,
    chain TEXT NOT NULL,
    n INTEGER NOT NULL,
    recorded INTEGER NOT NULL,
    members INTEGER NOT NULL,
    previous TEXT NOT NULL,
    hash TEXT NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (chain, n)
);
CREATE INDEX IF NOT EXISTS audit_record_recorded ON audit_record (recorded);
CREATE TABLE IF NOT EXISTS audit_index (
    param TEXT NOT NULL,
    value TEXT NOT NULL,
    recorded INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    member INTEGER NOT NULL,
    sys TEXT NOT NULL,
    PRIMARY KEY (param, value, recorded, seq, member, sys)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_member (m INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    chain TEXT NOT NULL,
    n INTEGER NOT NULL,
    hash TEXT NOT NULL,
    recorded TEXT NOT NULL,
    jws TEXT,
    PRIMARY KEY (chain, n)
);
"""
INLINE_MS = 1.0  # a read's budget on the event loop before it moves to the reader thread
_CHECK_EVERY = 2000  # SQLite VM steps between two looks at the clock
_RECORD = "seq, chain, n, recorded, members, previous, hash, body"
_IN = 500  # ids per IN list


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


def _range(value: tuple[str, float, float], column: str) -> tuple[str, list[Any]]:
    # the record's instant is one millisecond: its [low, high] is [recorded, recorded] (resources/search/match.py)
    prefix, a, b = value
    if prefix == "ap":
        margin = max((b - a) * 0.1, 86_400_000.0)
        return f"{column} >= ? AND {column} <= ?", [a - margin, b + margin]
    return {"eq": (f"{column} >= ? AND {column} <= ?", [a, b]),
            "ne": (f"NOT ({column} >= ? AND {column} <= ?)", [a, b]),
            "gt": (f"{column} > ?", [b]), "lt": (f"{column} < ?", [a]), "ge": (f"{column} >= ?", [a]),
            "le": (f"{column} <= ?", [b]), "sa": (f"{column} > ?", [b]), "eb": (f"{column} < ?", [a])}[prefix]


def _dates(query: LogQuery, column: str) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for group in query.dates:
        parts = [_range(v, column) for v in group]
        where.append("(" + " OR ".join(f"({sql})" for sql, _ in parts) + ")")
        for _, found in parts:
            args.extend(found)
    return where, args


def _alternative(alias: str, alternative: tuple[Any, ...]) -> tuple[str, list[Any]]:
    kind, a, b = alternative
    if kind == "v":
        return f"{alias}.value = ?", [a]
    if kind == "vs":
        return f"{alias}.value = ? AND {alias}.sys = ?", [a, b]
    if kind == "vn":
        return f"{alias}.value = ? AND {alias}.sys != ?", [a, b]
    return f"{alias}.value >= ? AND {alias}.value < ?", [a, b]  # "p": a string prefix [a, b)


def compile_events(query: LogQuery, *, count: bool = False) -> tuple[str, list[Any]]:
    """SQL of the (seq, member, recorded) of every member the query finds (or their count), in the query's order."""
    args: list[Any] = []
    conditions = list(query.conditions)
    if conditions:  # the first condition drives: its entries are read as one range per alternative
        driver = conditions.pop(0)
        date_sql, date_args = _dates(query, "i.recorded")
        seqs = sorted({s for s, _ in query.ids}) if query.ids is not None else None
        parts = []
        for alternative in driver.alternatives:
            sql, found = _alternative("i", alternative)
            where = [f"i.param = ? AND {sql}", *date_sql]
            args.extend([driver.param, *found, *date_args])
            if seqs is not None:
                where.append(f"i.seq IN ({','.join('?' * len(seqs))})")
                args.extend(seqs)
            parts.append(f"SELECT i.seq, i.member, i.recorded FROM audit_index i WHERE {' AND '.join(where)}")
        head = (f"WITH d(seq, member, recorded) AS ({' UNION ALL '.join(parts)}), "
                f"e(seq, member, recorded) AS (SELECT d.seq, m.m, d.recorded FROM d JOIN audit_record r ON r.seq = "
                f"d.seq JOIN audit_member m ON m.m < r.members WHERE d.member = {MEMBERS} UNION SELECT seq, member, "
                f"recorded FROM d WHERE member >= 0) ")
    else:
        date_sql, date_args = _dates(query, "r.recorded")
        where = list(date_sql)
        args.extend(date_args)
        if query.ids is not None:
            seqs = sorted({s for s, _ in query.ids})
            where.append(f"r.seq IN ({','.join('?' * len(seqs))})")
            args.extend(seqs)
        head = (f"WITH e(seq, member, recorded) AS (SELECT r.seq, m.m, r.recorded FROM audit_record r JOIN "
                f"audit_member m ON m.m < r.members{' WHERE ' + ' AND '.join(where) if where else ''}) ")
    tests: list[str] = []
    for condition in conditions:
        alternatives = []
        for alternative in condition.alternatives:
            sql, found = _alternative("j", alternative)
            alternatives.append(f"EXISTS (SELECT 1 FROM audit_index j WHERE j.param = ? AND {sql} AND j.recorded = "
                                f"e.recorded AND j.seq = e.seq AND j.member IN ({MEMBERS}, e.member))")
            args.extend([condition.param, *found])
        tests.append("(" + " OR ".join(alternatives) + ")")
    if query.before_seq is not None:
        tests.append("e.seq < ?")
        args.append(query.before_seq)
    if query.ids is not None:
        tests.append("(" + " OR ".join("(e.seq = ? AND e.member = ?)" for _ in query.ids) + ")")
        args.extend(v for pair in query.ids for v in pair)
    where_sql = f" WHERE {' AND '.join(tests)}" if tests else ""
    if count:
        return f"{head}SELECT count(*) FROM e{where_sql}", args
    order = ("e.seq DESC, e.member" if query.newest_first else "e.seq, e.member") if query.descending is None else (
        f"e.recorded {'DESC' if query.descending else 'ASC'}, e.seq, e.member")
    sql = f"{head}SELECT e.seq, e.member, e.recorded FROM e{where_sql} ORDER BY {order}"
    if query.limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args.extend([query.limit, query.offset])
    return sql, args


class SqliteAuditLog:
    """The audit log in one SQLite file (':memory:' for throw-away use: one connection then)."""

    def __init__(self, path: str, *, inline_ms: float = INLINE_MS, reserve: DiskReserve | None = None) -> None:
        self.path = path
        self._reserve = reserve  # the data folder's room kept for the trail (resources/store/sqlite/reserve.py)
        self._memory = path == ":memory:"
        self._inline_s = inline_ms / 1000
        self._deadline = math.inf
        self._loop_conn: sqlite3.Connection | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._reader = self._writer if self._memory else ThreadPoolExecutor(max_workers=1,
                                                                            thread_name_prefix="audit-reader")
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._members = 0  # rows of audit_member: records of up to this many members can be expanded

    async def _on(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def open(self) -> None:
        """Create the tables if needed and open the connections."""
        await self._on(self._writer, self._open)

    def _open(self) -> None:
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        conn.executescript(DDL)
        self._write_conn = conn
        self._members = conn.execute("SELECT count(*) FROM audit_member").fetchone()[0]
        self._read_conn = conn if self._memory else _connect(self.path)
        if not self._memory:  # short reads run on the event loop, within a budget (no thread hand-off)
            self._loop_conn = _connect(self.path)
            self._loop_conn.set_progress_handler(self._over_budget, _CHECK_EVERY)

    def _over_budget(self) -> int:
        return 1 if time.perf_counter() > self._deadline else 0
    async def close(self) -> None:
        """Close the connections and stop the threads."""
        if self._write_conn is not None:
            await self._on(self._writer, self._close)
        self._writer.shutdown(wait=True)
        if self._reader is not self._writer:
            self._reader.shutdown(wait=True)

    def _close(self) -> None:
        for conn in {id(c): c for c in (self._read_conn, self._write_conn, self._loop_conn)
                     if c is not None}.values():
            conn.close()
        self._write_conn = self._read_conn = self._loop_conn = None

    # -- writing ---------------------------------------------------------------------------------
    async def append(self, records: Sequence[NewRecord], checkpoints: Sequence[CheckpointRow] = ()) -> list[int]:
        """Append records (with their index entries) and checkpoints in one transaction; their sequences."""
        return await self._on(self._writer, self._append, records, checkpoints)

    def _append(self, records: Sequence[NewRecord], checkpoints: Sequence[CheckpointRow]) -> list[int]:
        if self._reserve is None:
            return self._append_once(records, checkpoints)
        self._reserve.before_write(essential=True)  # the trail is never refused for room: it may use the reserve
        try:
            return self._append_once(records, checkpoints)
        except sqlite3.Error as exc:
            if not is_full(exc):
                raise
            # the disk filled before the reserve was let go: let it go (clinical writes stop) and write into it
            self._reserve.on_full()
            return self._append_once(records, checkpoints)

    def _append_once(self, records: Sequence[NewRecord], checkpoints: Sequence[CheckpointRow]) -> list[int]:
        conn = self._write_conn
        assert conn is not None, "the audit log is not open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            # sequences are taken inside the write lock: several processes may append to one file
            first = (conn.execute("SELECT max(seq) FROM audit_record").fetchone()[0] or 0) + 1
            seqs = list(range(first, first + len(records)))
            conn.executemany(f"INSERT INTO audit_record ({_RECORD}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [(s, r.chain, r.n, r.recorded, r.members, r.previous, r.hash, r.body)
                              for s, r in zip(seqs, records, strict=True)])
            conn.executemany("INSERT OR IGNORE INTO audit_index (param, value, recorded, seq, member, sys) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             [(param, value, r.recorded, s, member, sys)
                              for s, r in zip(seqs, records, strict=True) for param, value, sys, member in r.entries])
            widest = max((r.members for r in records), default=0)
            if widest > self._members:
                conn.executemany("INSERT OR IGNORE INTO audit_member (m) VALUES (?)",
                                 [(m,) for m in range(self._members, widest)])
            chains = {r.chain for r in records} | {p.chain for p in checkpoints}
            conn.executemany("INSERT OR IGNORE INTO audit_chain (chain) VALUES (?)", [(c,) for c in chains])
            # a head signed again (a restart signs the head it found) keeps its first checkpoint
            conn.executemany("INSERT OR IGNORE INTO audit_checkpoint (chain, n, hash, recorded, jws) "
                             "VALUES (?, ?, ?, ?, ?)", checkpoints)
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            raise ChainMoved(str(exc)) from exc  # (chain, n) taken: another process writes this chain too
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._members = max(self._members, widest)
        return seqs

    async def remove(self, records: Sequence[tuple[StoredRecord, Sequence[Entry]]]) -> int:
        """Remove records and their index entries (retention); how many records were removed."""
        return await self._on(self._writer, self._remove, records)

    def _remove(self, records: Sequence[tuple[StoredRecord, Sequence[Entry]]]) -> int:
        conn = self._write_conn
        assert conn is not None, "the audit log is not open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            removed = 0
            for record, entries in records:
                removed += conn.execute("DELETE FROM audit_record WHERE seq = ?", (record.seq,)).rowcount
                # by their whole key: the entries are what the record yields, so no scan finds them
                conn.executemany("DELETE FROM audit_index WHERE param = ? AND value = ? AND recorded = ? AND seq = ? "
                                 "AND member = ? AND sys = ?",
                                 [(param, value, record.recorded, record.seq, member, sys)
                                  for param, value, sys, member in entries])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return removed

    async def instance(self, configured: str | None) -> str:
        """The chain id of this writer: the configured one, else one minted once and kept in the file."""
        if configured:
            return configured
        return await self._on(self._writer, self._instance)

    def _instance(self) -> str:
        conn = self._write_conn
        assert conn is not None, "the audit log is not open"
        conn.execute("INSERT OR IGNORE INTO audit_meta (name, value) VALUES ('instance', ?)", (uuid.uuid4().hex[:12],))
        return str(conn.execute("SELECT value FROM audit_meta WHERE name = 'instance'").fetchone()[0])

    # -- reading ---------------------------------------------------------------------------------
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        conn = self._read_conn
        assert conn is not None, "the audit log is not open"
        return conn.execute(sql, args).fetchall()

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Rows of a read-only statement: on the event loop within the budget, else on the reader thread."""
        if self._loop_conn is not None and self._inline_s > 0:
            self._deadline = time.perf_counter() + self._inline_s
            try:
                return self._loop_conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if "interrupted" not in str(exc):
                    raise
            finally:
                self._deadline = math.inf
        return await self._on(self._reader, self._read, sql, list(args))

    async def head(self, chain: str) -> tuple[int, str] | None:
        """(n, hash) of a chain's newest record, None for a chain without one."""
        found = await self.query("SELECT n, hash FROM audit_record WHERE chain = ? ORDER BY n DESC LIMIT 1", (chain,))
        return (int(found[0][0]), str(found[0][1])) if found else None

    async def chains(self) -> list[str]:
        """Every chain that ever wrote."""
        return [str(c) for (c,) in await self.query("SELECT chain FROM audit_chain ORDER BY chain")]

    async def records(self, seqs: Sequence[int]) -> dict[int, StoredRecord]:
        """The stored records of these sequences (absent ones left out)."""
        found: dict[int, StoredRecord] = {}
        unique = sorted(set(seqs))
        for at in range(0, len(unique), _IN):
            part = unique[at:at + _IN]
            for row in await self.query(f"SELECT {_RECORD} FROM audit_record WHERE seq IN "
                                        f"({','.join('?' * len(part))})", part):
                found[row[0]] = StoredRecord(*row)
        return found

    async def walk(self, chain: str, after_n: int, limit: int) -> list[StoredRecord]:
        """A chain's records after `after_n`, in chain order."""
        return [StoredRecord(*row) for row in await self.query(
            f"SELECT {_RECORD} FROM audit_record WHERE chain = ? AND n > ? ORDER BY n LIMIT ?",
            (chain, after_n, limit))]

    async def before(self, before_ms: int, after_seq: int, limit: int) -> list[StoredRecord]:
        """Records recorded before an instant, in write order after a sequence (retention)."""
        return [StoredRecord(*row) for row in await self.query(
            f"SELECT {_RECORD} FROM audit_record WHERE recorded < ? AND seq > ? ORDER BY seq LIMIT ?",
            (before_ms, after_seq, limit))]

    async def checkpoints(self, chain: str | None = None) -> list[CheckpointRow]:
        """The checkpoints of one chain (or of all), oldest first."""
        if chain is None:
            rows = await self.query("SELECT chain, n, hash, recorded, jws FROM audit_checkpoint ORDER BY chain, n")
        else:
            rows = await self.query("SELECT chain, n, hash, recorded, jws FROM audit_checkpoint WHERE chain = ? "
                                    "ORDER BY n", (chain,))
        return [CheckpointRow(*row) for row in rows]

    async def events(self, query: LogQuery) -> list[tuple[int, int, int]]:
        """(seq, member, recorded) of the members a query finds, in its order and page."""
        sql, args = compile_events(query)
        return [(int(s), int(m), int(r)) for s, m, r in await self.query(sql, args)]

    async def count(self, query: LogQuery) -> int:
        """How many members a query finds."""
        sql, args = compile_events(query, count=True)
        return int((await self.query(sql, args))[0][0])
