"""g3: `AuditEvent?patient=&date=` over HTTP against the same SQL issued straight to the store file.

The trail is made by bench.audit_trail (10M events, or fewer with --events). The server runs pinned to core 0
with authorization on (a backend token with system/AuditEvent.rs, as an audit tool would hold); this process,
on core 1, asks one patient's quarter at a time (c=1, so each figure is a latency) and, in turns with it, runs
the SQL the audit log compiles for that very query (resources/store/audit_log/sqlite.py: the page of members
from the narrow index) and the fetch of their records, on its own connection to the file (the store's part
alone, records left unmaterialised). Rounds alternate (ABBA) and each reports its p50s, so a
machine whose speed swings sees both sides alike. The p50 of the same request for a patient with no events
is reported beside them: the part of the HTTP figure that does not depend on the trail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bench.audit_trail import generate
from bench.common import PYTHON, backend_token, free_port, pinned, record, start, stop
from consent.audit.logstore import plan
from resources.models import resource_types
from resources.search.parse import parse_search
from resources.search.registry import default_registry
from resources.store.audit_log.sqlite import PRAGMAS, compile_events

QUARTERS = [("2024-01-01", "2024-04-01"), ("2024-04-01", "2024-07-01"), ("2025-01-01", "2025-04-01"),
            ("2025-07-01", "2025-10-01")]


Params = list[tuple[str, str | int | float | bool | None]]


def queries(patients: int, count: int, sort: bool, seed: int = 7) -> list[Params]:
    """Search parameters of `count` patient-quarter questions."""
    rng = random.Random(seed)
    found: list[Params] = []
    for _ in range(count):
        low, high = rng.choice(QUARTERS)
        params: Params = [("patient", f"Patient/p{rng.randrange(patients)}"), ("date", f"ge{low}"),
                          ("date", f"lt{high}")]
        found.append(params + ([("_sort", "-date")] if sort else []))
    return found


class Raw:
    """The audit log's SQL for a query, run on a connection of this process (the same pragmas as the server's)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        for pragma in PRAGMAS:
            self._conn.execute(pragma)
        self._registry = default_registry(resource_types())

    def sql(self, params: Params) -> tuple[str, list[Any]]:
        """The page SQL the log issues for these parameters (default page size, one more to know of a next)."""
        query = parse_search("AuditEvent", [(k, str(v)) for k, v in params], self._registry, strict=True).query
        found, left = plan(query)
        if left:
            raise SystemExit(f"{params}: not answered by the index alone ({[f.code for f in left]})")
        return compile_events(replace(found, limit=query.count + 1, offset=0))

    def run(self, sql: str, args: list[Any]) -> int:
        """Members found by one execution, their records fetched as the store fetches them."""
        members = self._conn.execute(sql, args).fetchall()
        seqs = sorted({seq for seq, _, _ in members})
        if seqs:
            self._conn.execute(f"SELECT seq, chain, n, recorded, members, previous, hash, body FROM audit_record "
                               f"WHERE seq IN ({','.join('?' * len(seqs))})", seqs).fetchall()
        return len(members)


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(base: str, token: str, raw: Raw, asked: list[Params], rounds: int) -> dict[str, Any]:
    """p50 (ms) of HTTP and raw per round, in ABBA order, with the rows each answered (checked equal)."""
    headers = {"authorization": f"Bearer {token}", "accept": "application/fhir+json"}
    compiled = [raw.sql(params) for params in asked]
    per_round = []
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for params, (sql, args) in zip(asked, compiled, strict=True):  # warm both, and check they agree
            entries = client.get("/AuditEvent", params=params).json().get("entry", [])
            rows = raw.run(sql, args)
            if len(entries) != min(rows, 50):
                raise SystemExit(f"HTTP found {len(entries)} and SQL {rows} for {params}")
        for n in range(rounds):
            http_times: list[float] = []
            raw_times: list[float] = []

            def http_turn(times: list[float] = http_times) -> None:
                for params in asked:
                    began = time.perf_counter()
                    client.get("/AuditEvent", params=params).raise_for_status()
                    times.append(time.perf_counter() - began)

            def raw_turn(times: list[float] = raw_times) -> None:
                for sql, args in compiled:
                    began = time.perf_counter()
                    raw.run(sql, args)
                    times.append(time.perf_counter() - began)

            floor_times: list[float] = []
            for turn in (http_turn, raw_turn) if n % 2 == 0 else (raw_turn, http_turn):
                turn()
            # the same request path answering nothing (a patient with no events): HTTP, token, parse, Bundle
            for params in asked:
                began = time.perf_counter()
                client.get("/AuditEvent", params=[("patient", "Patient/none"), *params[1:]]).raise_for_status()
                floor_times.append(time.perf_counter() - began)
            per_round.append({"http_p50_ms": _p50(http_times), "raw_p50_ms": _p50(raw_times),
                              "empty_http_p50_ms": _p50(floor_times), "ratio": _p50(http_times) / _p50(raw_times)})
    return {"rounds": per_round, **{key: statistics.median(r[key] for r in per_round)
                                    for key in ("http_p50_ms", "raw_p50_ms", "empty_http_p50_ms", "ratio")}}


def main() -> None:
    """Generate (or reuse) the trail, serve it, measure and record."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--db", help="an existing trail (bench.audit_trail --out), e.g. "
                        "/work/bench-data/audit-10m/audit.sqlite; default: generate one in bench/out")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    patients = max(1, args.events // 100)
    db = args.db or str(Path(__file__).parent / "out" / f"audit-{args.events}.db")
    if not Path(db).exists():
        asyncio.run(generate(db, args.events, patients))
    port = free_port()
    # the trail is the server's audit store (AuditEvents are routed there); the clinical store is a file beside it
    clinical = str(Path(db).with_suffix("")) + "-clinical.db"
    server = start(pinned([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", clinical], 0),
                   f"http://127.0.0.1:{port}/fhir/metadata", env={"CARELOOP_LOG_LEVEL": "warning",
                                                                  "CARELOOP_AUTH": "on", "CARELOOP_AUDIT_DB": db},
                   timeout=600)
    figures: dict[str, Any] = {"events": args.events, "patients": patients, "queries": args.queries}
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        token = backend_token(base, clinical, "system/AuditEvent.rs")
        raw = Raw(db)
        for name, sort in (("sorted", True), ("unsorted", False)):
            figures[name] = measure(base, token, raw, queries(patients, args.queries, sort), args.rounds)
    finally:
        stop(server)
    record(f"audit_query_{args.events}", figures)
    sys.stdout.write(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "rounds"} if isinstance(v, dict)
                                     else v) for k, v in figures.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
