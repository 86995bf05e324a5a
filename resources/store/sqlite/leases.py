"""Leases on background jobs in the SQLite file, so several processes on one data folder run each job once.

A lease is one row (job, holder, until): taken when absent or run out, renewed by its holder, in one upsert
whose WHERE is the compare-and-set (SQLite runs one writer at a time across processes). Times are the wall
clock of the processes, which share a machine. https://www.sqlite.org/lang_upsert.html
"""

from __future__ import annotations

import sqlite3
import time

DDL = "CREATE TABLE IF NOT EXISTS lease (job TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL) WITHOUT ROWID"


def claim(conn: sqlite3.Connection, job: str, holder: str, seconds: float) -> bool:
    """Take or renew `job` for `holder` until `seconds` from now; False while someone else's lease runs."""
    now = time.time()
    row = conn.execute("INSERT INTO lease (job, holder, until) VALUES (?, ?, ?) ON CONFLICT (job) DO UPDATE "
                       "SET holder = excluded.holder, until = excluded.until "
                       "WHERE lease.holder = excluded.holder OR lease.until < ? RETURNING holder",
                       (job, holder, now + seconds, now)).fetchone()
    return row is not None


def release(conn: sqlite3.Connection, job: str, holder: str) -> None:
    """End `holder`'s lease on `job` now, so another process takes over without waiting for it to run out."""
    conn.execute("DELETE FROM lease WHERE job = ? AND holder = ?", (job, holder))
