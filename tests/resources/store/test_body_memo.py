"""The memo of restored bodies: bounded, evicted oldest first, and never able to answer with a stale body.

The memo is keyed by the stored form, so whatever changes a row (an update through the API, another process
writing the file) is seen by the next read. https://hl7.org/fhir/R4B/http.html#read
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from resources.store.sqlite import bodies
from resources.store.sqlite.bodies import MEMO_MIB, decode, decode_many, encode, memo_held_bytes, set_memo_mib
from resources.store.sqlite.memo import BoundedMemo
from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create
from tests.factories import observation, patient


@pytest.fixture(autouse=True)
def _default_budget() -> Iterator[None]:
    """Every test starts from an empty memo and leaves the default budget behind (the memo is per process)."""
    set_memo_mib(0)
    set_memo_mib(MEMO_MIB)
    yield
    set_memo_mib(0)
    set_memo_mib(MEMO_MIB)


def _doc(n: int, size: int = 100) -> bytes:
    return orjson.dumps({"resourceType": "Basic", "id": str(n), "text": "x" * size})


def test_the_memo_stays_within_its_budget_and_evicts_the_oldest_first() -> None:
    memo = BoundedMemo(10_000)
    for n in range(100):
        memo.put(b"k%d" % n, b"v" * 200)
        assert memo.held_bytes <= 10_000
    assert memo.get(b"k0") is None  # the oldest went first
    assert memo.get(b"k99") == b"v" * 200  # the newest is still there
    assert 0 < len(memo) < 100


def test_an_entry_larger_than_the_budget_is_not_kept_and_a_zero_budget_keeps_nothing() -> None:
    memo = BoundedMemo(1_000)
    memo.put(b"big", b"v" * 2_000)
    assert memo.get(b"big") is None and memo.held_bytes == 0
    memo.put(b"small", b"v")
    assert memo.get(b"small") == b"v"
    memo.resize(0)
    assert memo.get(b"small") is None and memo.held_bytes == 0 and len(memo) == 0
    memo.put(b"again", b"v")
    assert memo.get(b"again") is None


def test_restored_bodies_are_the_same_with_and_without_the_memo() -> None:
    docs = [_doc(n) for n in range(50)]
    stored = [encode(d) for d in docs]
    set_memo_mib(0)
    cold = decode_many(stored)
    assert memo_held_bytes() == 0
    set_memo_mib(1)
    warm_up = decode_many(stored)
    assert memo_held_bytes() > 0
    # fresh copies of the stored forms, as a new fetch brings them: found by content
    again = decode_many([bytes(bytearray(s)) for s in stored])
    assert cold == warm_up == again == docs
    assert [decode(s) for s in stored] == docs
    mixed = [stored[0], docs[1], None, stored[3]]  # plain JSON and deleted versions pass through
    assert decode_many(mixed) == [docs[0], docs[1], None, docs[3]]


def test_plain_json_bodies_are_not_memoised() -> None:
    plain = [_doc(n) for n in range(10)]
    assert decode_many(plain) == plain
    assert memo_held_bytes() == 0


def _settings(path: Path, **extra: object) -> Settings:
    return Settings(auth="off", sqlite_path=str(path), validation_workers=0, **extra)


@pytest.mark.anyio
async def test_an_update_is_read_back_at_once_and_the_old_version_still_reads(tmp_path: Path) -> None:
    async with client_for(_settings(tmp_path / "memo.db")) as client:
        subject = await create(client, patient(family="Before"))
        url = f"/fhir/Patient/{subject['id']}"
        for _ in range(2):  # the second read is served from the memo
            assert (await client.get(url)).json()["name"][0]["family"] == "Before"
        assert memo_held_bytes() > 0
        changed = {**subject, "name": [{"family": "After"}]}
        assert (await client.put(url, content=body(changed), headers=FHIR_JSON)).status_code == 200
        assert (await client.get(url)).json()["name"][0]["family"] == "After"
        everything = (await client.get(f"{url}/$everything")).json()
        assert everything["entry"][0]["resource"]["name"][0]["family"] == "After"
        assert (await client.get(f"{url}/_history/1")).json()["name"][0]["family"] == "Before"


@pytest.mark.anyio
async def test_a_row_changed_by_another_process_is_seen_by_the_next_read(tmp_path: Path) -> None:
    """Another process writing the same file leaves no stale memo entry behind: the key is the stored form."""
    db = tmp_path / "shared.db"
    async with client_for(_settings(db)) as client:
        subject = await create(client, patient())
        reading = await create(client, observation(f"Patient/{subject['id']}", value=5.0))
        url = f"/fhir/Observation/{reading['id']}"
        search = f"/fhir/Observation?patient={subject['id']}"
        assert (await client.get(url)).json()["valueQuantity"]["value"] == 5.0
        assert (await client.get(search)).json()["entry"][0]["resource"]["valueQuantity"]["value"] == 5.0
        edited = {**reading, "valueQuantity": {**reading["valueQuantity"], "value": 9.0}}
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("UPDATE resource SET body = ? WHERE id = ?", (bodies.encode(orjson.dumps(edited)),
                                                                      reading["id"]))
        conn.close()
        assert (await client.get(url)).json()["valueQuantity"]["value"] == 9.0
        assert (await client.get(search)).json()["entry"][0]["resource"]["valueQuantity"]["value"] == 9.0


@pytest.mark.anyio
async def test_a_zero_budget_setting_turns_the_memo_off(tmp_path: Path) -> None:
    async with client_for(_settings(tmp_path / "off.db", sqlite_body_memo_mib=0)) as client:
        subject = await create(client, patient())
        for _ in range(3):
            assert (await client.get(f"/fhir/Patient/{subject['id']}/$everything")).status_code == 200
        assert memo_held_bytes() == 0
