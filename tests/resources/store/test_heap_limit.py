"""The bound on SQLite's page caches together: the server sets SQLite's soft heap limit, which is the process's.

Past it, a connection that needs a page recycles one of its own instead of allocating, so the caches of
all connections (each up to CARELOOP_SQLITE_CACHE_MIB) stay near the bound together.
https://www.sqlite.org/pragma.html#pragma_soft_heap_limit
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.store.sqlite.schema import HEAP_LIMIT_MIB
from server.settings import Settings
from tests.conftest import client_for, create
from tests.factories import patient

MIB = 1024 * 1024


def _limit() -> int:
    conn = sqlite3.connect(":memory:")
    try:
        return int(conn.execute("PRAGMA soft_heap_limit").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def _default_limit() -> Iterator[None]:
    """The limit is the process's: leave the server's default behind for the tests that follow."""
    yield
    conn = sqlite3.connect(":memory:")
    conn.execute(f"PRAGMA soft_heap_limit={HEAP_LIMIT_MIB * MIB}")
    conn.close()


def _settings(path: Path, **extra: object) -> Settings:
    return Settings(auth="off", sqlite_path=str(path), validation_workers=0, **extra)


@pytest.mark.anyio
@pytest.mark.parametrize(("mib", "expected"), [(6, 6 * MIB), (0, 0), (None, HEAP_LIMIT_MIB * MIB)])
async def test_the_setting_becomes_the_process_soft_heap_limit(tmp_path: Path, mib: int | None,
                                                              expected: int) -> None:
    extra = {} if mib is None else {"sqlite_heap_limit_mib": mib}
    async with client_for(_settings(tmp_path / "limit.db", **extra)) as client:
        assert _limit() == expected
        await create(client, patient())  # the store still serves under the bound
        assert len((await client.get("/fhir/Patient")).json()["entry"]) == 1


def _sqlite_library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    library = ctypes.CDLL(name)
    library.sqlite3_libversion.restype = ctypes.c_char_p
    library.sqlite3_memory_used.restype = ctypes.c_int64
    # only the library Python's sqlite3 module uses shares its heap counter and limit
    return library if library.sqlite3_libversion().decode() == sqlite3.sqlite_version else None


@pytest.mark.anyio
async def test_connections_with_large_caches_stay_near_the_bound_together(tmp_path: Path) -> None:
    library = _sqlite_library()
    if library is None:
        pytest.skip("Python's sqlite3 is not linked to a shared libsqlite3 that ctypes can reach")
    big = tmp_path / "big.db"
    with sqlite3.connect(big) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
        conn.executemany("INSERT INTO t (b) VALUES (?)", ((os.urandom(900),) for _ in range(30_000)))
    conn.close()
    async with client_for(_settings(tmp_path / "limit.db", sqlite_heap_limit_mib=8)):
        readers = [sqlite3.connect(big) for _ in range(3)]
        for reader in readers:
            reader.execute("PRAGMA cache_size=-65536")  # 64 MiB each: the file (27 MiB) fits in every one
            reader.execute("SELECT sum(length(b)) FROM t").fetchone()
        used = library.sqlite3_memory_used()
        for reader in readers:
            reader.close()
    # without the bound each reader would hold the whole file, over 80 MiB together
    assert used < 12 * MIB, used / MIB
