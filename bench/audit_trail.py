"""A generated audit trail for g3: millions of BALP AuditEvents written through the store's bulk path.

Each event is indexed as the server's audit writer indexes it (consent.audit.rows, checked against the generic
Indexer in tests/audit/test_rows.py) and applied in large write sessions of the adapter (the path ingest takes,
without HTTP and validation), so the file is what the server would have written.
`python -m bench.audit_trail --events 1000000 --out bench/out/audit.db`
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from bench.audit_shapes import Who, consent_event, rest_event
from consent.audit.rows import AuditRows
from resources.models import resource_types
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.protocol import Write
from resources.store.sqlite.store import SqliteStore

START_MS = 1_704_067_200_000  # 2024-01-01: the trail spans two years
SPAN_MS = 2 * 365 * 86_400_000
TYPES = ("Observation", "Encounter", "Condition", "CarePlan", "MedicationRequest")


def events(count: int, patients: int, seed: int = 20261207) -> Iterator[dict[str, Any]]:
    """`count` events over `patients` patients: reads, searches, writes and consent decisions, 1% break-glass."""
    rng = random.Random(seed)
    clinicians = [f"Practitioner/dr{n}" for n in range(max(1, patients // 50))]
    apps = [f"app-{n}" for n in range(20)]
    made = 0
    while made < count:
        patient = f"p{rng.randrange(patients)}"
        at = START_MS + rng.randrange(SPAN_MS)
        btg = rng.random() < 0.01
        who = Who(rng.choice(apps), rng.choice(clinicians), "clinician", ("BTG",) if btg else ("TREAT",),
                  uuid.UUID(int=rng.getrandbits(128)).hex)
        request = uuid.UUID(int=rng.getrandbits(128)).hex
        data = f"{rng.choice(TYPES)}/{patient}-{rng.randrange(100)}/_history/1"
        roll = rng.random()
        if roll < 0.15:
            permit = rng.random() > 0.1 or btg
            yield consent_event(who, at, request, patient, permit=permit, consents=[f"Consent/c-{patient}/_history/1"],
                                btg_reason="unconscious patient in ED" if btg else None,
                                reason=None if permit else "denied by patient consent")
        else:
            kind = "read" if roll < 0.7 else "search" if roll < 0.9 else rng.choice(("create", "update", "delete"))
            yield rest_event(kind, who, at, request, patient=patient, data=[data],
                             query=f"{data.split('/')[0]}?patient={patient}" if kind == "search" else None,
                             outcome="0" if rng.random() > 0.02 else "4",
                             btg_reason="unconscious patient in ED" if btg else None)
        made += 1


async def generate(path: str, count: int, patients: int, batch: int = 5000) -> float:
    """Write the trail into a new SQLite store; seconds taken."""
    registry = default_registry(resource_types())
    rows = AuditRows(Indexer(registry, load_patient_compartment()))
    store = SqliteStore(path, subsumed=registry.subsumed)
    await store.open()
    began = time.monotonic()
    pending: list[Write] = []
    try:
        for n, event in enumerate(events(count, patients)):
            event["id"] = f"ae{n}"
            event["meta"] = {"versionId": "1", "lastUpdated": event["recorded"]}
            pending.append(Write("AuditEvent", event["id"], 1, int(time.time() * 1000), "create",
                                 orjson.dumps(event), rows.rows(event), 0, "POST"))
            if len(pending) >= batch:
                await _apply(store, pending)
                pending = []
                if n % 100_000 < batch:
                    sys.stdout.write(f"{n + 1} events, {time.monotonic() - began:.0f} s\n")
                    sys.stdout.flush()
        if pending:
            await _apply(store, pending)
    finally:
        await store.close()
    return time.monotonic() - began


async def _apply(store: SqliteStore, writes: list[Write]) -> None:
    async with store.write_session() as session:
        await session.apply(writes)


def main() -> None:
    """Generate a trail file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--patients", type=int, default=None, help="default: one per 100 events")
    parser.add_argument("--out", required=True, help="SQLite file to create")
    args = parser.parse_args()
    seconds = asyncio.run(generate(args.out, args.events, args.patients or max(1, args.events // 100)))
    sys.stdout.write(f"{args.events} events in {seconds:.0f} s ({args.events / seconds:.0f}/s)\n")


if __name__ == "__main__":
    main()
