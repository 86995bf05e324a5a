"""Several writers on one audit log file: their own chains, or one chain shared without a fork (real SQLite files).

https://profiles.ihe.net/ITI/BALP/ (docs/audit.md, "The chain: one per server instance")
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consent.access import Access
from consent.audit.clock import instant
from consent.audit.log_recorder import LogRecorder
from consent.audit.shapes import Exchange, Touched
from consent.audit.verify import verify_log
from resources.ids import now_ms
from resources.models import resource_types
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.audit_log.sqlite import SqliteAuditLog

pytestmark = pytest.mark.anyio
INDEXER = Indexer(default_registry(resource_types()), load_patient_compartment())
CALLER = Access(client_id="c", purposes=("TREAT",), jti="j")


async def read(recorder: LogRecorder, n: int) -> None:
    at = now_ms()
    exchange = Exchange(f"r{n}", "read", 200, instant(at), "Patient", f"p{n}", raw_query=b"GET /fhir/Patient/x")
    await recorder.record_request((exchange, CALLER, [Touched("Patient", f"p{n}", 1, (f"p{n}",))], []), at)


@pytest.mark.parametrize(("first", "second", "chains"), [("east", "west", 2), ("shared", "shared", 1)])
async def test_two_writers_on_one_file(tmp_path: Path, first: str, second: str, chains: int) -> None:
    path = str(tmp_path / "audit.sqlite")
    one = LogRecorder(SqliteAuditLog(path), INDEXER, instance_id=first, checkpoint_events=4)
    two = LogRecorder(SqliteAuditLog(path), INDEXER, instance_id=second, checkpoint_events=4)
    await one.open()
    await two.open()
    try:
        for n in range(6):  # interleaved, and at once
            await read(one, n)
            await read(two, 100 + n)
            await asyncio.gather(read(one, 200 + n), read(two, 300 + n))
        report = await verify_log(one.log, None, one.chain)
    finally:
        await one.close()
        await two.close()
    assert report.ok and report.first_break is None and report.truncation is None
    assert len(report.chains) == chains and report.checked == 24
    assert sorted(state.head[0] for state in report.chains) == ([12, 12] if chains == 2 else [24])
