"""The SQLite store on a filled file system: SQLite's SQLITE_FULL becomes a 507 error, the reserve lets only the
audit trail write, and both stores write again once space returns (issue 34 item 2).

https://www.sqlite.org/rescode.html#full
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from resources.errors import InsufficientStorage
from resources.ids import now_ms
from resources.store.protocol import Write
from resources.store.sqlite.reserve import NAME, DiskReserve
from resources.store.sqlite.store import SqliteStore
from tests.reliability.conftest import fill

pytestmark = pytest.mark.anyio
BIG = b'{"resourceType":"Basic","text":"' + b"x" * 200_000 + b'"}'


async def write(store: SqliteStore, id_: str, body: bytes = b'{"resourceType":"Basic"}') -> None:
    async with store.write_session() as session:
        await session.apply([Write("Basic", id_, 1, now_ms(), "create", body, None, 0, "POST")])


def whole(path: Path) -> bool:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_sqlite_full_is_insufficient_storage_and_passes(small_disk: Path) -> None:
    # no reserve: the write itself meets SQLITE_FULL, at its statements or at COMMIT
    store = SqliteStore(str(small_disk / "plain.db"), writer_idle_s=0)
    await store.open()
    try:
        await write(store, "kept")
        filler = fill(small_disk)
        with pytest.raises(InsufficientStorage) as refused:
            await write(store, "refused", BIG)
        assert refused.value.status == 507 and refused.value.issues[0].code == "no-store"
        assert refused.value.headers == {"retry-after": "60"}
        assert (await store.read("Basic", "kept")) is not None
        assert (await store.read("Basic", "refused")) is None
        filler.unlink()
        await write(store, "after", BIG)  # the writer was left outside any transaction
        assert (await store.read("Basic", "after")) is not None
    finally:
        await store.close()
    assert whole(small_disk / "plain.db")


async def test_reserve_keeps_room_for_the_essential_store_only(small_disk: Path) -> None:
    reserve = DiskReserve(small_disk, 2)
    clinical = SqliteStore(str(small_disk / "main.db"), writer_idle_s=0, reserve=reserve)
    audit = SqliteStore(str(small_disk / "audit.sqlite"), writer_idle_s=0, reserve=reserve, essential=True)
    await clinical.open()
    await audit.open()
    try:
        assert (small_disk / NAME).stat().st_size == 2 * 1024 * 1024
        assert reserve.state() == "ok"
        filler = fill(small_disk)
        with pytest.raises(InsufficientStorage):
            await write(clinical, "refused")
        for n in range(20):  # the released reserve takes the audit trail's writes
            await write(audit, f"event{n}", BIG[:20_000])
        assert not (small_disk / NAME).exists()
        assert "full" in reserve.state()
        with pytest.raises(InsufficientStorage):
            await write(clinical, "still-refused")
        filler.unlink()
        await write(clinical, "after")
        assert reserve.state() == "ok" and (small_disk / NAME).exists()
        assert (await clinical.read("Basic", "refused")) is None
        assert (await clinical.read("Basic", "after")) is not None
    finally:
        await clinical.close()
        await audit.close()
    assert whole(small_disk / "main.db") and whole(small_disk / "audit.sqlite")
