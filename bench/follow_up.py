"""Follow-up work at scale (issue 30): the escalation worker over 100k open Tasks, `$follow-up-metrics` over a month.

- **Escalation** (`--part escalation`): 100,000 open Tasks whose deadlines lie ahead (the steady state: a few
  fall due per round) and 50,000 completed ones of the past year are loaded into a fresh SQLite file; then
  rounds of the worker (`run_once`, the search
  `Task?deadline=lt<now>&status=<open>&_sort=deadline&_count=100` and the escalations it finds) alternate in
  one process with the same question asked as hand-written SQL driven by the deadline index. Reported: CPU
  seconds per round (process time), the share of one core at the default 30 s interval, and SQLite's plan.
- **Metrics** (`--part metrics`): a month of 100,000 Tasks (85% completed, some late, some escalated) with
  satisfaction and NPS Observations and complaint Communications; `$follow-up-metrics` for that month over
  HTTP through the ASGI app, p50 of rounds (wall and process CPU time, the reader threads' included), against a
  Task count of the month (`_summary=count`) in the same rounds.

Data is loaded in-process through the Repository in transactions of 1,000 (validated, indexed, versioned).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import record
from resources.bundle_entries import parse_bundle
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import format_instant
from resources.search.parse import parse_search
from resources.store.protocol import ReadSource
from resources.store.sqlite.compile import compile_search
from resources.transaction import EntryResult, TransactionProcessor
from server.app import create_app
from server.settings import Settings
from subscriptions.escalation import OPEN_STATUSES, EscalationConfig, EscalationWorker, overdue_search

MIN = 60_000
DAY = 1440 * MIN
BASE = "http://bench/fhir"
SATISFACTION = "http://careloop.health/fhir/CodeSystem/churn-signal"
MEASURE = "http://careloop.health/fhir/CodeSystem/follow-up-measure"
COMPLAINT = "http://careloop.health/fhir/CodeSystem/follow-up-task"
# the same question driven by the deadline index instead of the status index: it reads every past deadline,
# the completed history's too, where the store's plan reads the open Tasks' entries only
RAW_OVERDUE = f"""
SELECT r.rid FROM idx_date d JOIN resource r ON r.rid = d.rid
WHERE d.pid = ? AND d.low < ? AND r.type = 'Task' AND r.deleted = 0
  AND EXISTS (SELECT 1 FROM idx_token t WHERE t.rid = d.rid AND +t.pid = ? AND t.code IN ({",".join("?" * 5)}))
ORDER BY d.low LIMIT 101"""


async def _no_reads(url: str, source: ReadSource) -> EntryResult:
    raise AssertionError(url)


async def load(repository: Repository, resources: list[dict[str, Any]], batch: int = 1000) -> None:
    """Create resources in transactions of `batch`."""
    for at in range(0, len(resources), batch):
        entries = [{"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
                   for r in resources[at:at + batch]]
        _, parsed = parse_bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries}, len(entries),
                                 BASE)
        await TransactionProcessor(repository, BASE).run(parsed, _no_reads)


def history(rng: random.Random, count: int, now: int) -> list[dict[str, Any]]:
    """Completed Tasks of the past year, their deadlines long past."""
    out = []
    for n in range(count):
        authored = now - rng.randint(1, 365) * DAY
        out.append({"resourceType": "Task", "status": "completed", "intent": "order", "priority": "routine",
                    "for": {"reference": f"Patient/p{n % 5000}"}, "authoredOn": format_instant(authored),
                    "lastModified": format_instant(authored + 60 * MIN),
                    "restriction": {"period": {"end": format_instant(authored + DAY)}}})
    return out


def open_tasks(rng: random.Random, count: int, now: int) -> list[dict[str, Any]]:
    """Open Tasks due from one minute to 30 days ahead, owned by 50 wards."""
    return [{"resourceType": "Task", "status": rng.choice(OPEN_STATUSES), "intent": "order",
             "priority": rng.choice(("routine", "urgent", "stat")), "for": {"reference": f"Patient/p{n % 5000}"},
             "owner": {"reference": f"Organization/ward{n % 50}"}, "authoredOn": format_instant(now),
             "restriction": {"period": {"start": format_instant(now),
                                        "end": format_instant(now + rng.randint(1, 30 * 1440) * MIN)}}}
            for n in range(count)]


def month_of_work(rng: random.Random, count: int, start: int) -> list[dict[str, Any]]:
    """A month of follow-up: Tasks (85% completed, 7% of those late, 3% escalated), survey answers, complaints."""
    out: list[dict[str, Any]] = []
    patients = max(1, count // 10)
    for n in range(count):
        authored = start + rng.randint(0, 29 * DAY)
        due = authored + rng.choice((30 * MIN, 2 * 60 * MIN, DAY, 3 * DAY))
        task: dict[str, Any] = {
            "resourceType": "Task", "intent": "order", "priority": "routine",
            "for": {"reference": f"Patient/p{n % patients}"}, "owner": {"reference": f"Organization/ward{n % 20}"},
            "basedOn": [{"reference": f"PlanDefinition/{rng.choice(('visit-follow-up', 'surgery-follow-up'))}"}],
            "authoredOn": format_instant(authored),
            "restriction": {"period": {"start": format_instant(authored), "end": format_instant(due)}}}
        if rng.random() < 0.85:
            late = rng.random() < 0.07
            done = due + rng.randint(1, 600) * MIN if late else authored + rng.randint(1, max(1, (due - authored)
                                                                                                // MIN)) * MIN
            task.update(status="completed", lastModified=format_instant(done))
        else:
            task["status"] = "requested"
        if rng.random() < 0.03:
            task["businessStatus"] = {"coding": [{"system": "http://careloop.health/fhir/CodeSystem/"
                                                            "task-escalation", "code": "escalated"}]}
        out.append(task)
        if n % 10 == 0:
            when = format_instant(authored + DAY)
            subject = {"reference": f"Patient/p{n % patients}"}
            out.append({"resourceType": "Observation", "status": "final", "subject": subject,
                        "effectiveDateTime": when, "valueInteger": rng.choice((2, 3, 4, 4, 5, 5, 5)),
                        "code": {"coding": [{"system": SATISFACTION, "code": "satisfaction"}]}})
            out.append({"resourceType": "Observation", "status": "final", "subject": subject,
                        "effectiveDateTime": when, "valueInteger": rng.randint(0, 10),
                        "code": {"coding": [{"system": MEASURE, "code": "nps"}]}})
        if n % 100 == 0:
            out.append({"resourceType": "Communication", "status": "completed",
                        "subject": {"reference": f"Patient/p{n % patients}"}, "sent": format_instant(authored),
                        "category": [{"coding": [{"system": COMPLAINT, "code": "complaint"}]}]})
    return out


def _settings(path: Path, **extra: Any) -> Settings:
    return Settings(auth="off", sqlite_path=str(path), validation_workers=0, audit="off", escalation=False,
                    subscriptions=False, **extra)


async def escalation(count: int, done: int, rounds: int, folder: Path) -> dict[str, Any]:
    """CPU per worker round over `count` open Tasks and `done` completed ones, against hand-written SQL."""
    path = folder / "escalation.db"
    rng = random.Random(20261207)
    app = create_app(_settings(path))
    async with app.router.lifespan_context(app):
        repository = app.state.services.repository
        started = time.monotonic()
        overdue = [{**t, "restriction": {"period": {"end": format_instant(now_ms() - MIN)}}}
                   for t in open_tasks(rng, 100, now_ms())]
        await load(repository, history(rng, done, now_ms()) + open_tasks(rng, count - 100, now_ms()) + overdue)
        loaded_s = time.monotonic() - started
        worker = EscalationWorker(repository, EscalationConfig(base_url=BASE))
        store = repository.store
        query = parse_search("Task", overdue_search(now_ms(), 100), repository.registry, strict=True).query
        sql, args, _, _ = compile_search(query, store.param_ids)
        conn = sqlite3.connect(path)
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
        deadline_pid = store.param_id("Task", "deadline")
        status_pid = store.param_id("Task", "status")
        warm = await worker.run_once()  # the 100 Tasks loaded overdue are escalated here: then the steady state
        worker_cpu, raw_cpu, escalated = [], [], 0
        for _ in range(rounds):
            before = time.process_time()
            escalated += await worker.run_once()
            worker_cpu.append(time.process_time() - before)
            before = time.process_time()
            conn.execute(RAW_OVERDUE, [deadline_pid, now_ms(), status_pid, *OPEN_STATUSES]).fetchall()
            raw_cpu.append(time.process_time() - before)
    per_round = statistics.median(worker_cpu)
    return {"open_tasks": count, "completed_tasks": done, "load_s": round(loaded_s, 1), "rounds": rounds,
            "escalated_first_round": warm, "escalated_after": escalated,
            "worker_cpu_ms_p50": round(per_round * 1000, 2), "worker_cpu_ms_max": round(max(worker_cpu) * 1000, 2),
            "raw_sql_cpu_ms_p50": round(statistics.median(raw_cpu) * 1000, 2),
            "core_share_at_30s": f"{per_round / 30 * 100:.3f}%", "plan": plan}


async def metrics(count: int, rounds: int, folder: Path) -> dict[str, Any]:
    """$follow-up-metrics over a month of `count` Tasks, against a count of the month's Tasks."""
    path = folder / "metrics.db"
    rng = random.Random(20261207)
    start = now_ms() - 40 * DAY
    loaded = path.exists()  # a kept folder (--folder) holds the month already: measure it again
    app = create_app(_settings(path))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        started = time.monotonic()
        if not loaded:  # the month starts 40 days before now: a rerun the same day asks for the same days
            await load(app.state.services.repository, month_of_work(rng, count, start))
        loaded_s = time.monotonic() - started
        period = {"start": format_instant(start)[:10], "end": format_instant(start + 29 * DAY)[:10]}
        answer = await client.get("/fhir/$follow-up-metrics", params=period)
        assert answer.status_code == 200, answer.text
        ops, counts, ops_cpu, counts_cpu = [], [], [], []
        for _ in range(rounds):  # side by side in each round: the machine is shared, its load changes by the minute
            before, cpu = time.monotonic(), time.process_time()
            response = await client.get("/fhir/$follow-up-metrics", params=period)
            ops.append(time.monotonic() - before)
            ops_cpu.append(time.process_time() - cpu)
            assert response.status_code == 200
            before, cpu = time.monotonic(), time.process_time()
            response = await client.get("/fhir/Task", params={"authored-on": [f"ge{period['start']}",
                                                                              f"le{period['end']}"],
                                                              "_summary": "count"})
            counts.append(time.monotonic() - before)
            counts_cpu.append(time.process_time() - cpu)
    return {"tasks": count, "load_s": round(loaded_s, 1), "rounds": rounds,
            "metrics_s_p50": round(statistics.median(ops), 3), "metrics_s_max": round(max(ops), 3),
            "count_s_p50": round(statistics.median(counts), 3),
            "metrics_cpu_s_p50": round(statistics.median(ops_cpu), 3),
            "count_cpu_s_p50": round(statistics.median(counts_cpu), 3), "load_average": os.getloadavg()[0],
            "answer": answer.json()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("escalation", "metrics", "both"), default="both")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=50_000, help="completed Tasks beside the open ones")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--folder", help="keep the data here (and measure it again on the next run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or scratch
        figures: dict[str, Any] = {}
        if args.part in ("escalation", "both"):
            figures["escalation"] = asyncio.run(escalation(args.tasks, args.history, args.rounds, Path(folder)))
            print(figures["escalation"])  # noqa: T201
        if args.part in ("metrics", "both"):
            figures["metrics"] = asyncio.run(metrics(args.tasks, args.rounds, Path(folder)))
            print({k: v for k, v in figures["metrics"].items() if k != "answer"})  # noqa: T201
        record("follow_up", figures)


if __name__ == "__main__":
    main()
