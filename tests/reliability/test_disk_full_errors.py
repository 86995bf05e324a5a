"""Which of SQLite's errors become which FHIR error (507 full, 503 unusable file, or left alone), with errors
SQLite itself raises on real files.

https://www.sqlite.org/rescode.html
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from resources.store.sqlite.failures import is_full, storage_error


def read_only(folder: Path) -> None:
    sqlite3.connect(folder / "a.db").execute("CREATE TABLE t (x)").connection.commit()
    sqlite3.connect(f"file:{folder / 'a.db'}?mode=ro", uri=True).execute("INSERT INTO t VALUES (1)")


def not_a_database(folder: Path) -> None:
    (folder / "a.db").write_bytes(b"this is not a database file" * 100)
    sqlite3.connect(folder / "a.db").execute("SELECT * FROM sqlite_master").fetchall()


def cannot_open(folder: Path) -> None:
    sqlite3.connect(folder / "missing" / "a.db")


def full(folder: Path) -> None:
    conn = sqlite3.connect(folder / "a.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    conn.execute("INSERT INTO t VALUES (randomblob(100000))")  # the file may not grow: SQLITE_FULL


def duplicate(folder: Path) -> None:
    conn = sqlite3.connect(folder / "a.db")
    conn.execute("CREATE TABLE t (x PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("INSERT INTO t VALUES (1)")


CASES: list[tuple[str, Callable[[Path], None], int | None, str | None]] = [
    ("disk full", full, 507, "no-store"),
    ("read-only file", read_only, 503, "no-store"),
    ("not a database", not_a_database, 503, "no-store"),
    ("cannot open", cannot_open, 503, "no-store"),
    ("constraint (a bug, not storage)", duplicate, None, None),
]


@pytest.mark.parametrize(("case", "make", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_storage_error(tmp_path: Path, case: str, make: Callable[[Path], None], status: int | None,
                       code: str | None) -> None:
    with pytest.raises(sqlite3.Error) as raised:
        make(tmp_path)
    mapped = storage_error(raised.value)
    assert is_full(raised.value) is (status == 507)
    if status is None:
        assert mapped is None
        return
    assert mapped is not None, case
    assert (mapped.status, mapped.issues[0].code, mapped.headers) == (status, code, {"retry-after": "60"})
