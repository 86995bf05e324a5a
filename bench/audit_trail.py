"""A generated audit trail for g3: millions of AuditEvents written as audit log records, in big batches.

Each record is made as the server's writer makes it (consent.audit.records.new_record: the request's facts, its
index entries, its chain link) and appended through the log's batch API (SqliteAuditLog.append) in batches of
thousands, so the file is what the server would have written, without HTTP. What a clinic's trail looks like
(one chain, two years, one patient per 100 events):
  - 50% of records: a clinician's read or search of one patient under that patient's Consent (2 events: the
    AuthZ-Consent permit or deny and the PatientRead/PatientQuery), 1% of them break-glass (3 events);
  - 35%: a clinic system's read or search of one patient (1 event);
  - 10%: a worklist search of 10 patients (10 events, one per patient);
  - 5%: a create, update or delete (1 event).
That is about 2.4 events a record: 10M events are about 4.2M records. A token serves about 50 requests.
`python -m bench.audit_trail --events 10000000 --out /work/bench-data/audit-10m/audit.sqlite`
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consent.access import Access
from consent.audit.chain import GENESIS
from consent.audit.clock import instant
from consent.audit.records import REQUEST, Facts, events_of_facts, new_record
from consent.audit.rows import AuditRows
from consent.audit.shapes import Exchange, Touched
from consent.decisions import DecisionRecord
from resources.models import resource_types
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.audit_log.model import NewRecord
from resources.store.audit_log.sqlite import SqliteAuditLog

START_MS = 1_704_067_200_000  # 2024-01-01: the trail spans two years
SPAN_MS = 2 * 365 * 86_400_000
TYPES = ("Observation", "Encounter", "Condition", "CarePlan", "MedicationRequest")
CHAIN = "bench"


def requests(count: int, patients: int, seed: int = 20261207) -> Iterator[tuple[Facts, int, int]]:
    """(facts, recorded ms, events) of requests until `count` events: the mix of the module's docstring."""
    rng = random.Random(seed)
    clinicians = [f"Practitioner/dr{n}" for n in range(max(1, patients // 50))]
    apps = [f"app-{n}" for n in range(20)]
    tokens: dict[str, str] = {}
    made = 0
    while made < count:
        at = START_MS + rng.randrange(SPAN_MS)
        patient = f"p{rng.randrange(patients)}"
        roll = rng.random()
        btg = roll < 0.5 and rng.random() < 0.01
        user = rng.choice(clinicians) if roll < 0.5 else "clinic-ehr"
        if user not in tokens or rng.random() < 0.02:  # a token serves about 50 requests of its user
            tokens[user] = uuid.UUID(int=rng.getrandbits(128)).hex
        jti = tokens[user]
        if roll < 0.5:
            access = Access(client_id=rng.choice(apps), fhir_user=user, purposes=(
                "BTG",) if btg else ("TREAT",), roles=("clinician",), jti=jti,
                btg_reason="unconscious patient in ED" if btg else None)
        else:
            access = Access(client_id="clinic-ehr", purposes=("TREAT",), clinic_system=True, jti=jti)
        kind = rng.choice(TYPES)
        request = uuid.UUID(int=rng.getrandbits(128)).hex
        decisions: list[DecisionRecord] = []
        if roll < 0.5:
            permit = rng.random() > 0.1 or btg
            decisions.append(DecisionRecord(patient, permit, (f"Consent/c-{patient}/_history/1",), None,
                                            "permitted by patient consent" if permit else "denied by patient consent",
                                            btg))
        if roll < 0.85:
            search = rng.random() < 0.3
            touched = [Touched(kind, f"{patient}-{rng.randrange(100)}", 1, (patient,))]
            exchange = Exchange(request, "search-type" if search else "read", 200, instant(at), kind,
                                None if search else touched[0].id, None,
                                f"GET /fhir/{kind}?patient={patient}".encode() if search else
                                f"GET /fhir/{kind}/{touched[0].id}".encode(), "10.0.0.1")
        elif roll < 0.95:
            listed = [f"p{rng.randrange(patients)}" for _ in range(10)]
            touched = [Touched("Patient", p, 1, (p,)) for p in dict.fromkeys(listed)]
            exchange = Exchange(request, "search-type", 200, instant(at), "Patient", None, None,
                                b"GET /fhir/Patient?_count=10&general-practitioner=" + access.client_id.encode()
                                if access.client_id else b"GET /fhir/Patient", "10.0.0.1")
        else:
            action = rng.choice(("create", "update", "delete"))
            touched = [Touched(kind, f"{patient}-{rng.randrange(100)}", 2, (patient,), action)]
            exchange = Exchange(request, action, 201 if action == "create" else 200, instant(at), kind,
                                None if action == "create" else touched[0].id, None,
                                f"{'POST' if action == 'create' else 'PUT'} /fhir/{kind}".encode(), "10.0.0.1")
        events = len(decisions) + (1 if btg else 0) + (len(touched) if exchange.interaction != "search-type" or
                                                       roll >= 0.85 else 1)
        made += events
        yield (exchange, access, touched, decisions), at, events


def events(count: int, patients: int, seed: int = 20261207) -> Iterator[dict[str, Any]]:
    """`count` of the generated requests' AuditEvents, as the server's builders make them on read."""
    made = 0
    for facts, _, _ in requests(count, patients, seed):
        for event in events_of_facts(facts):
            if made >= count:
                return
            made += 1
            yield dict(event)


async def generate(path: str, count: int, patients: int, batch: int = 20_000) -> float:
    """Write the trail into a new audit log file; seconds taken."""
    registry = default_registry(resource_types())
    rows = AuditRows(Indexer(registry, load_patient_compartment()))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    audit_log = SqliteAuditLog(path)
    await audit_log.open()
    began = time.monotonic()
    pending: list[NewRecord] = []
    n, previous, made, reported = 0, GENESIS, 0, 0
    try:
        for facts, at, events in requests(count, patients):
            n += 1
            record = new_record(CHAIN, n, previous, REQUEST, facts, at, at, rows)
            previous = record.hash
            pending.append(record)
            made += events
            if len(pending) >= batch:
                await audit_log.append(pending)
                pending = []
                if made - reported >= 500_000:
                    reported = made
                    sys.stdout.write(f"{made} events, {n} records, {time.monotonic() - began:.0f} s\n")
                    sys.stdout.flush()
        if pending:
            await audit_log.append(pending)
    finally:
        await audit_log.close()
    return time.monotonic() - began


def main() -> None:
    """Generate a trail file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--patients", type=int, default=None, help="default: one per 100 events")
    parser.add_argument("--out", required=True, help="SQLite file to create (the server's CARELOOP_AUDIT_DB)")
    args = parser.parse_args()
    if Path(args.out).exists():
        raise SystemExit(f"{args.out} exists: a trail is generated into a new file")
    seconds = asyncio.run(generate(args.out, args.events, args.patients or max(1, args.events // 100)))
    sys.stdout.write(f"{args.events} events in {seconds:.0f} s ({args.events / seconds:.0f}/s)\n")


if __name__ == "__main__":
    main()
