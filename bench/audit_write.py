"""The audit trail's write path alone, in CPU time per request: the audit log against the generic store it replaced.

A read by id (1 event) and a search of 20 patients (20 events), recorded through each recorder as the audit edge
does (`record_request`, awaited, batches of 32 concurrent requests), on real SQLite files. CPU seconds of this
process (`time.process_time`, the writer threads included), so a loaded machine changes them less than wall time.
`python -m bench.audit_write --requests 3000`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from consent.access import Access
from consent.audit.clock import instant
from consent.audit.log_recorder import LogRecorder
from consent.audit.recorder import AuditRecorder
from consent.audit.shapes import Exchange, Touched
from resources.ids import now_ms
from resources.models import resource_types
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.audit_log.sqlite import SqliteAuditLog
from resources.store.sqlite.store import SqliteStore

CALLER = Access(client_id="bench", purposes=("TREAT",), jti="jti-bench", clinic_system=True)


def facts(kind: str, n: int) -> tuple[Any, ...]:
    """One request's facts: a read of a Patient, or a search answering 20 Patients."""
    at = now_ms()
    if kind == "read":
        exchange = Exchange(f"r{n}", "read", 200, instant(at), "Patient", f"p{n}", None, f"GET /fhir/Patient/p{n}"
                            .encode(), "127.0.0.1")
        return (exchange, CALLER, [Touched("Patient", f"p{n}", 1, (f"p{n}",))], []), at
    ids = [f"p{n * 20 + k}" for k in range(20)]
    exchange = Exchange(f"s{n}", "search-type", 200, instant(at), "Patient", None, None,
                        f"GET /fhir/Patient?_count=20&_id={','.join(ids)}".encode(), "127.0.0.1")
    return (exchange, CALLER, [Touched("Patient", i, 1, (i,)) for i in ids], []), at


async def run(recorder: Any, kind: str, requests: int, batch: int = 32) -> float:
    """CPU microseconds per request of `requests` recorded in concurrent batches."""
    await recorder.open()
    try:
        for n in range(50):  # warm: the remembered parts, the agents
            await recorder.record_request(*facts(kind, n))
        began = time.process_time()
        for start in range(0, requests, batch):
            await asyncio.gather(*(recorder.record_request(*facts(kind, 1000 + start + k)) for k in range(batch)))
        return (time.process_time() - began) / requests * 1e6
    finally:
        await recorder.close()


async def main_async(requests: int) -> dict[str, Any]:
    """Both recorders, both request kinds, in turns (ABBA)."""
    registry = default_registry(resource_types())
    indexer = Indexer(registry, load_patient_compartment())
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("read", "search20"):
            for turn, name in enumerate(("log", "generic", "generic", "log")):
                path = str(Path(tmp) / f"{kind}-{name}-{turn}.sqlite")
                recorder = LogRecorder(SqliteAuditLog(path), indexer) if name == "log" else AuditRecorder(
                    SqliteStore(path, subsumed=registry.subsumed), indexer)
                figures.setdefault(kind, {}).setdefault(name, []).append(round(await run(recorder, kind, requests)))
    return figures


def main() -> None:
    """Measure and print CPU us per request."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    sys.stdout.write(json.dumps(asyncio.run(main_async(args.requests)), indent=2) + "\n")


if __name__ == "__main__":
    main()
