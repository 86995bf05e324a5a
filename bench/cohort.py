"""$tier, $churn-risk and $cohort-stats over a clinic population of N patients (issue 31's performance item).

Each patient has a recent record: 4 finished Encounters, 2 Invoices, 2 ChargeItems, 3 Communications sent to
them (some answered), 3 Appointments (some missed), a Condition for some, a satisfaction score and, for some,
a referrer. It is written straight through the Repository (the indexing every write does, without HTTP and
validation, which bench/tier.py measures), into a fresh SQLite file. Then each operation is timed over the
whole population through the app in process (ASGI), three times, and the median kept with the spread:

- `GET Patient/$tier`, `GET Patient/$churn-risk` (every patient judged and answered);
- `POST ... persist=true` for both, first (every result written) and again (nothing changed: none written);
- `GET $cohort-stats` (counts, four cross-tabs and referrals, in SQL over the persisted results), against
  the same GROUP BY on tier alone as hand-written SQL, run side by side in the same process.

Each figure gives the wall time and the process's CPU time (its reader threads included): on a machine shared
with other work the wall time is mostly waiting for a core.

Usage: python -m bench.cohort --patients 10000 [--patients 100000]; figures also in bench/out/cohort_<N>.json.
With `--db DIR` the database is kept in DIR/cohort-<N>.db (outside the repository: 100,000 patients take
about 7 minutes to load) and `--reuse` times the operations on the one loaded there before, without loading.
`--only tier_all,churn_all` times only the named figures (tier_all, churn_all, tier_persist, churn_persist,
cohort_stats), for profiling one operation.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import record
from resources.ids import now_ms
from resources.search.dates import format_instant
from server.app import create_app
from server.settings import Settings

DAY = 86_400_000
CARELOOP = "http://careloop.health/fhir/CodeSystem/"
REGIONS = ["North", "South", "East", "West", "Centre"]
BATCH = 2000
ROUNDS = 2
FIGURES = ("tier_all", "churn_all", "tier_persist", "churn_persist", "cohort_stats")
CPU = [0.0]  # the CPU seconds of the last timed request: on a shared machine the wall time is mostly waiting
RAW_TIER = """
SELECT t.code, count(*) FROM resource r
  LEFT JOIN idx_token i ON i.pid = (SELECT pid FROM sp WHERE type = 'Observation' AND code = 'identifier')
   AND i.code = 'tier-' || r.id
  LEFT JOIN idx_token t ON t.rid = i.rid AND +t.pid = (SELECT pid FROM sp WHERE type = 'Observation'
   AND code = 'value-concept')
WHERE r.type = 'Patient' AND r.deleted = 0 GROUP BY t.code"""


def _at(rng: random.Random, now: int, days: int) -> str:
    return format_instant(now - rng.randint(0, days) * DAY)


def patient_record(rng: random.Random, index: int, now: int, ids: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """One patient's resources (type, body with id)."""
    pid = str(uuid.UUID(int=rng.getrandbits(128)))
    ref = {"reference": f"Patient/{pid}"}
    person: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": rng.choice(["female", "male"]),
                              "birthDate": f"{rng.randint(1940, 2008)}-{rng.randint(1, 12):02d}-01",
                              "address": [{"city": "Springfield", "state": rng.choice(REGIONS)}]}
    if ids and rng.random() < 0.1:
        person["extension"] = [{"url": "http://careloop.health/fhir/StructureDefinition/referred-by",
                                "valueReference": {"reference": f"Patient/{rng.choice(ids)}"}}]
    ids.append(pid)
    yield "Patient", person

    def new(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return body["resourceType"], {**body, "id": str(uuid.UUID(int=rng.getrandbits(128)))}

    span = rng.choice([60, 200, 400, 700])  # how far back this patient's record goes
    for _ in range(4):
        end = now - rng.randint(1, span) * DAY
        yield new({"resourceType": "Encounter", "status": "finished", "subject": ref,
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                   "period": {"start": format_instant(end - 1_800_000), "end": format_instant(end)}})
    for _ in range(2):
        yield new({"resourceType": "Invoice", "status": "issued", "subject": ref, "date": _at(rng, now, span),
                   "totalGross": {"value": round(rng.uniform(20, 900), 2), "currency": "EUR"}})
        yield new({"resourceType": "ChargeItem", "status": "billable", "subject": ref, "code": {"text": "visit"},
                   "occurrenceDateTime": _at(rng, now, span),
                   "priceOverride": {"value": round(rng.uniform(10, 300), 2), "currency": "EUR"}})
    sent = []
    for _ in range(3):
        kind, body = new({"resourceType": "Communication", "status": "completed", "recipient": [ref],
                          "subject": ref, "sent": _at(rng, now, span)})
        sent.append(body["id"])
        yield kind, body
    if rng.random() < 0.5:
        yield new({"resourceType": "Communication", "status": "completed", "sender": ref, "sent": format_instant(now),
                   "inResponseTo": [{"reference": f"Communication/{sent[-1]}"}]})
    for _ in range(3):
        yield new({"resourceType": "Appointment", "status": rng.choice(["fulfilled", "fulfilled", "noshow"]),
                   "start": _at(rng, now, span), "participant": [{"actor": ref, "status": "accepted"}]})
    if rng.random() < 0.3:
        yield new({"resourceType": "Condition", "subject": ref, "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": rng.choice(["44054006", "38341003"])}]}})
    yield new({"resourceType": "Observation", "status": "final", "subject": ref, "effectiveDateTime": _at(rng, now, 90),
               "code": {"coding": [{"system": f"{CARELOOP}churn-signal", "code": "satisfaction"}]},
               "valueInteger": rng.randint(1, 5)})


async def load(repo: Any, patients: int) -> int:
    """Write the population in batches of one transaction each; how many resources."""
    rng, now, ids = random.Random(20261207), now_ms(), []
    pending: list[Any] = []
    written = 0
    for index in range(patients):
        for kind, body in patient_record(rng, index, now, ids):
            pending.append(repo.prepare(kind, body["id"], body, 1, now, "create", 0, "PUT"))
        if len(pending) >= BATCH or index == patients - 1:
            async with repo.store.write_session() as session:
                await session.apply(pending)
            written += len(pending)
            pending = []
    return written


async def _timed(client: httpx.AsyncClient, method: str, url: str, body: Any = None) -> tuple[float, Any]:
    """(wall seconds, answer); the process CPU seconds it took are added to CPU[0]."""
    started, cpu = time.perf_counter(), time.process_time()
    if method == "GET":
        response = await client.get(url, timeout=None)
    else:
        response = await client.post(url, content=orjson.dumps(body), timeout=None,
                                     headers={"content-type": "application/fhir+json"})
    took = time.perf_counter() - started
    CPU[0] = time.process_time() - cpu
    response.raise_for_status()
    return took, response.json()


def _spread(times: list[float], cpu: list[float] | None = None) -> str:
    found = f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})"
    return found if cpu is None else found + f", CPU {statistics.median(cpu):.2f} s"


async def measure(patients: int, keep: Path | None = None, reuse: bool = False,
                  only: frozenset[str] | None = None) -> dict[str, Any]:
    persist = {"resourceType": "Parameters", "parameter": [{"name": "persist", "valueBoolean": True}]}
    with tempfile.TemporaryDirectory() as tmp:
        db = (keep or Path(tmp)) / f"cohort-{patients}.db"
        if db.exists() and not reuse:
            raise SystemExit(f"{db} exists: pass --reuse to time the operations on it, or remove it")
        wanted = only or frozenset(FIGURES)
        # no subscription engine or escalation worker: they would work through the load's million change
        # events (and create follow-up Tasks) while the operations are timed
        settings = Settings(auth="off", sqlite_path=str(db), validation_workers=0, audit="off",
                            cohort_recompute_seconds=0, cohort_cache_seconds=0, subscriptions=False,
                            escalation=False)
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            figures: dict[str, Any] = {"patients": patients}
            if reuse and db.exists() and db.stat().st_size > 0 and await _loaded(client):
                figures["reused"] = str(db)
            else:
                started = time.perf_counter()
                figures["resources"] = await load(app.state.services.repository, patients)
                figures["load_s"] = round(time.perf_counter() - started, 1)
            for name, method, url, body in (("tier_all", "GET", "/fhir/Patient/$tier", None),
                                            ("churn_all", "GET", "/fhir/Patient/$churn-risk", None)):
                if name not in wanted:
                    continue
                times, cpu = [], []
                for _ in range(ROUNDS):
                    times.append((await _timed(client, method, url, body))[0])
                    cpu.append(CPU[0])
                figures[name] = _spread(times, cpu)
            for name, url in (("tier_persist", "/fhir/Patient/$tier"), ("churn_persist", "/fhir/Patient/$churn-risk")):
                if name not in wanted:
                    continue
                first, answer = await _timed(client, "POST", url, persist)
                first_cpu = CPU[0]
                written = next(p["valueInteger"] for p in answer["parameter"] if p["name"] == "written")
                again, answer = await _timed(client, "POST", url, persist)
                rewritten = next(p["valueInteger"] for p in answer["parameter"] if p["name"] == "written")
                figures[name] = (f"first {first:.2f} s, CPU {first_cpu:.2f} s ({written} written), "
                                 f"again {again:.2f} s, CPU {CPU[0]:.2f} s ({rewritten} written)")
            stats, stats_cpu, raw = [], [], []
            # side by side: the operation, then the hand-written GROUP BY
            for _ in range(ROUNDS if "cohort_stats" in wanted else 0):
                took, answer = await _timed(client, "GET", "/fhir/$cohort-stats")
                stats.append(took)
                stats_cpu.append(CPU[0])
                started = time.perf_counter()
                conn = sqlite3.connect(db)
                conn.execute(RAW_TIER).fetchall()
                conn.close()
                raw.append(time.perf_counter() - started)
            if stats:
                total = next(p["valueInteger"] for p in answer["parameter"] if p["name"] == "total")
                figures["cohort_stats"] = _spread(stats, stats_cpu) + f", total {total}"
                figures["cohort_stats_raw_tier_group_by"] = _spread(raw)
    return figures


async def _loaded(client: httpx.AsyncClient) -> bool:
    """Whether the database holds a population already (a load interrupted before its first batch does not)."""
    answer = (await client.get("/fhir/Patient", params={"_summary": "count"})).json()
    return bool(answer.get("total"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, action="append")
    parser.add_argument("--db", type=Path, help="keep the database in this directory (cohort-<N>.db)")
    parser.add_argument("--reuse", action="store_true", help="time the operations on the database kept in --db")
    parser.add_argument("--only", help=f"comma-separated figures to time, of {', '.join(FIGURES)}")
    args = parser.parse_args()
    if args.reuse and args.db is None:
        parser.error("--reuse needs --db")
    only = None if args.only is None else frozenset(args.only.split(","))
    if only is not None and not only <= set(FIGURES):
        parser.error(f"--only: unknown figure(s) {', '.join(sorted(only - set(FIGURES)))}")
    if args.db is not None:
        args.db.mkdir(parents=True, exist_ok=True)
    for patients in args.patients or [10_000]:
        figures = asyncio.run(measure(patients, args.db, args.reuse, only))
        record(f"cohort_{patients}", figures)
        sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
