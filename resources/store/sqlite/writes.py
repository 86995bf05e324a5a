"""Write statements of the SQLite store: resources, the version log and index entries.

Run on the writer thread inside the (exclusive) write transaction.
https://hl7.org/fhir/R4B/http.html#update
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from resources.errors import Conflict
from resources.search.index import IndexRows
from resources.store.protocol import Write
from resources.store.sqlite.bodies import encode
from resources.store.sqlite.schema import INDEX_TABLES

PidFor = Callable[[str, str], int]
SidFor = Callable[[str | None], int | None]
Subsumed = Callable[[str], Mapping[str, tuple[str, ...]]]


def apply_writes(conn: sqlite3.Connection, writes: list[Write], pid: PidFor, sid: SidFor,
                 subsumed: Subsumed) -> None:
    """Insert or update resources with their versions (the change feed) and index entries."""
    tables: dict[str, list[tuple[Any, ...]]] = {name: [] for name in INDEX_TABLES}
    # This connection holds the only write transaction, so row ids and version sequence numbers can be
    # assigned here and every insert batched.
    next_rid = conn.execute("SELECT coalesce(max(rid), 0) FROM resource").fetchone()[0] + 1
    next_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM version").fetchone()[0] + 1
    new_rows, versions = [], []
    for w in writes:
        deleted = 1 if w.action == "delete" else 0
        body = encode(w.body) if w.body is not None and not deleted else None
        # a new resource skips the lookup: UNIQUE (type, id) still refuses a duplicate
        existing = None if w.action == "create" and w.expected_vid == 0 else _update_row(conn, w, deleted, body)
        if existing is None:
            rid, next_rid = next_rid, next_rid + 1
            new_rows.append((rid, w.type, w.id, w.vid, w.updated_ms, deleted, body))
        else:
            rid = existing
        seq, next_seq = next_seq, next_seq + 1
        # the current version's body lives in its resource row only (body NULL here until it is replaced)
        versions.append((seq, rid, w.type, w.vid, w.updated_ms, w.method, w.action, deleted))
        if w.rows is not None and not deleted:
            _collect_rows(w, rid, tables, pid, sid, subsumed(w.type))
    try:
        conn.executemany("INSERT INTO resource (rid, type, id, vid, updated, deleted, body) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", new_rows)
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"A resource with this id was created concurrently: {exc}") from exc
    conn.executemany("INSERT INTO version (seq, rid, type, vid, updated, method, action, deleted) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", versions)
    _insert_rows(conn, tables)

def _update_row(conn: sqlite3.Connection, w: Write, deleted: int, body: bytes | None) -> int | None:
    """Update the current row in place; None when there is none yet (the caller inserts it)."""
    row = conn.execute("SELECT rid, vid FROM resource WHERE type = ? AND id = ?", (w.type, w.id)).fetchone()
    current = row[1] if row else 0
    if w.expected_vid is not None and w.expected_vid != current:
        raise Conflict(f"{w.type}/{w.id} changed concurrently (expected version {w.expected_vid}, "
                       f"found {current})")
    if row is None:
        return None
    # the replaced version keeps its body in the version log from now on
    conn.execute("UPDATE version SET body = (SELECT body FROM resource WHERE rid = ?) WHERE rid = ? AND vid = ?",
                 (row[0], row[0], row[1]))
    conn.execute("UPDATE resource SET vid = ?, updated = ?, deleted = ?, body = ? WHERE rid = ?",
                 (w.vid, w.updated_ms, deleted, body, row[0]))
    for name in INDEX_TABLES:
        conn.execute(f"DELETE FROM {name} WHERE rid = ?", (row[0],))
    return int(row[0])

def replace_index(conn: sqlite3.Connection, type_: str, items: list[tuple[int, int, IndexRows]], pid: PidFor,
                  sid: SidFor, subsumed: Subsumed) -> None:
    """Replace the index entries of versions that are still current."""
    tables: dict[str, list[tuple[Any, ...]]] = {name: [] for name in INDEX_TABLES}
    for rid, vid, rows in items:
        row = conn.execute("SELECT id, vid, deleted FROM resource WHERE rid = ?", (rid,)).fetchone()
        if row is None or row[1] != vid or row[2]:
            continue  # changed since it was read: its own write indexed it with the current parameters
        for name in INDEX_TABLES:
            conn.execute(f"DELETE FROM {name} WHERE rid = ?", (rid,))
        _collect_rows(Write(type_, row[0], vid, 0, "update", None, rows), rid, tables, pid, sid, subsumed(type_))
    _insert_rows(conn, tables)

def _shared_left_out(rows: list[Any], wide: Mapping[str, tuple[str, ...]]) -> list[Any]:
    """Rows (code first) without the entries of a parameter that a parameter it subsumes already has.

    A search on the wide parameter reads its own entries and the narrow ones' (ParamIds.including), so
    Observation's `combo-code` keeps only the component codes that `code` does not hold.
    """
    narrow = {code for codes in wide.values() for code in codes}
    held: dict[str, set[tuple[Any, ...]]] = {}
    for row in rows:
        if row[0] in narrow:
            held.setdefault(row[0], set()).add(tuple(row[1:]))
    if not held:
        return rows
    return [row for row in rows if not any(tuple(row[1:]) in held.get(code, ()) for code in wide.get(row[0], ()))]


def _collect_rows(w: Write, rid: int, tables: dict[str, list[tuple[Any, ...]]], pid_for: PidFor,
                  sid: SidFor, wide: Mapping[str, tuple[str, ...]]) -> None:
    rows = w.rows
    assert rows is not None
    if wide:
        rows = replace(rows, tokens=_shared_left_out(rows.tokens, wide),
                       strings=_shared_left_out(rows.strings, wide), dates=_shared_left_out(rows.dates, wide),
                       numbers=_shared_left_out(rows.numbers, wide),
                       quantities=_shared_left_out(rows.quantities, wide), uris=_shared_left_out(rows.uris, wide),
                       composites=_shared_left_out(rows.composites, wide))

    def pid(code: str) -> int:
        return pid_for(w.type, code)

    tables["idx_token"].extend((rid, n, pid(c), sid(s), v, t) for n, (c, s, v, t) in enumerate(rows.tokens))
    tables["idx_string"].extend((rid, n, pid(c), no, e) for n, (c, no, e) in enumerate(rows.strings))
    tables["idx_ref"].extend((rid, n, pid(c), tt, ti, u) for n, (c, tt, ti, u) in enumerate(rows.references))
    tables["idx_date"].extend((rid, n, pid(c), lo, hi) for n, (c, lo, hi) in enumerate(rows.dates))
    tables["idx_number"].extend((rid, n, pid(c), v) for n, (c, v) in enumerate(rows.numbers))
    tables["idx_quantity"].extend((rid, n, pid(c), sid(s), u, v) for n, (c, s, u, v) in enumerate(rows.quantities))
    tables["idx_uri"].extend((rid, n, pid(c), v) for n, (c, v) in enumerate(rows.uris))
    tables["idx_composite"].extend((rid, n, pid(c), sid(s1), c1, sid(s2), c2, lo, hi)
                                   for n, (c, s1, c1, s2, c2, lo, hi) in enumerate(rows.composites))
    tables["compartment"].extend((rid, p) for p in dict.fromkeys(rows.compartments))

def _insert_rows(conn: sqlite3.Connection, tables: dict[str, list[tuple[Any, ...]]]) -> None:
    for name, rows in tables.items():
        if rows:
            marks = ",".join("?" * len(rows[0]))
            conn.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)


def expunge(conn: sqlite3.Connection, type_: str, ids: list[str]) -> int:
    """Remove resources, every version and every index entry of them for good; how many resources were removed.

    Row ids and version numbers are assigned as the largest so far plus one (apply_writes), so removing the
    newest row would hand its numbers out again, and a change-feed consumer past them would skip a change:
    the store's newest resource and newest change are refused instead.
    """
    rids: list[int] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        rids += [row[0] for row in conn.execute(
            f"SELECT rid FROM resource WHERE type = ? AND id IN ({','.join('?' * len(chunk))})", (type_, *chunk))]
    if not rids:
        return 0
    newest_rid = conn.execute("SELECT max(rid) FROM resource").fetchone()[0]
    newest_seq = conn.execute("SELECT rid FROM version ORDER BY seq DESC LIMIT 1").fetchone()[0]
    if newest_rid in rids or newest_seq in rids:
        raise Conflict(f"The newest {type_} of the store cannot be removed (its numbers would be reused); "
                       f"write anything, then try again")
    for start in range(0, len(rids), 500):
        batch = rids[start:start + 500]
        marks = ",".join("?" * len(batch))
        for name in (*INDEX_TABLES, "version", "resource"):
            conn.execute(f"DELETE FROM {name} WHERE rid IN ({marks})", batch)
    return len(rids)
