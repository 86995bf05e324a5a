"""One population tier (10k, 100k or 1M resources): ingest, searches, reads, $everything, memory and disk.

Loads the generated clinic population over HTTP (transaction bundles, two in flight) into a fresh SQLite file,
then measures at one client, each against a baseline taken in the same run on the same file:

- `Observation?patient&code&date=ge`, `Patient?name=` prefixes and `Patient/$everything` against hand-written
  SQL for the same question plus the latency of a trivial FastAPI endpoint (what any HTTP answer costs);
- `_include=Observation:patient` against the same search without it;
- the default search (no total) against `_total=accurate` on a broad query;
- read by id against a primary-key `select` of the stored body;
- resident memory idle (against the trivial FastAPI app) and after the load and a search mix (against idle);
- bytes on disk per resource against the JSON of the same resources;
- the ingest rate over the whole tier against the rate over its first 10,000 resources.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import PYTHON, children_rss_mb, free_port, loadgen, median, pinned, record, rss_mb, start, stop
from bench.generate import FAMILIES, population
from resources.store.sqlite.bodies import decode

HEADERS = {"content-type": "application/fhir+json", "prefer": "return=minimal"}
# The hand-written queries take the fastest plan we know for each question, the one the store now compiles
# too: the patient's reference entries in row-id order, code and date tested on each before its resource row
# is read. (Until 25 November it was the store's older plan, which read every candidate's row first.)
RAW_OBSERVATIONS = """
SELECT r.body FROM idx_ref d JOIN resource r ON r.rid = d.rid
WHERE d.pid = ? AND d.target_id = ? AND d.target_type = 'Patient' AND r.type = 'Observation' AND r.deleted = 0
  AND EXISTS (SELECT 1 FROM idx_token WHERE pid = ? AND code = ? AND rid = d.rid)
  AND EXISTS (SELECT 1 FROM idx_date WHERE rid = d.rid AND +pid = ? AND high >= ?)
ORDER BY d.rid LIMIT 51"""
RAW_NAMES = """
SELECT r.body FROM resource r WHERE r.type = 'Patient' AND r.deleted = 0
  AND r.rid IN (SELECT rid FROM idx_string WHERE pid = ? AND norm >= ? AND norm < ?) ORDER BY r.rid LIMIT 51"""
RAW_READ = "SELECT body FROM resource WHERE type = ? AND id = ?"
RAW_COMPARTMENT = """
SELECT r.body FROM compartment d JOIN resource r ON r.rid = d.rid
WHERE d.patient = ? AND r.type = ? AND r.deleted = 0"""
# the cohort baselines: the same sums and counts straight from the index tables (no bodies, no scopes)
RAW_SPEND = """
SELECT r.target_id, sum(q.value) FROM idx_date d JOIN idx_quantity q ON q.rid = d.rid AND q.pid = ?
  JOIN idx_ref r ON r.rid = d.rid AND r.pid = ? WHERE d.pid = ? AND d.high >= ? GROUP BY r.target_id"""
RAW_CHARGES = RAW_SPEND  # the same question of ChargeItems: their priceOverride by occurrence
RAW_VISITS = """
SELECT r.target_id, count(*) FROM idx_date d JOIN idx_token t ON t.rid = d.rid AND t.pid = ? AND t.code = 'finished'
  JOIN idx_ref r ON r.rid = d.rid AND r.pid = ? WHERE d.pid = ? AND d.high >= ? GROUP BY r.target_id"""
WRITER_SETTLES_S = 8  # the writer's idle timeout (5 s) and the heap trim after it, with room to spare
FIRST = 10_000  # the a3 ratio compares the whole tier's rate with the rate over this many first resources
# Each figure's requests warm the caches again after the figure before it (other queries): half a second is
# hundreds to thousands of requests at one client, and every path was already requested in the search mix.
WARMUP_S = 0.5



async def _load(base: str, resources: int) -> tuple[float, float, list[int]]:
    """Post the tier two bundles at a time: the rate over the whole tier, over its first resources and per tenth."""
    bundles = [orjson.dumps(b) for b in population(resources)]
    queue = list(reversed(bundles))
    done = [0]
    first_at: list[float] = []
    tenth = max(resources // 10, 1)
    marks: list[float] = []  # when each tenth of the tier was in

    async def poster(client: httpx.AsyncClient) -> None:
        while queue:
            (await client.post("/", content=queue.pop(), headers=HEADERS)).raise_for_status()
            done[0] += 100
            if done[0] >= min(FIRST, resources) and not first_at:
                first_at.append(time.perf_counter())
            if done[0] >= tenth * (len(marks) + 1):  # bundles hold 100: a tenth need not be a multiple of it
                marks.append(time.perf_counter())

    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(poster(client), poster(client))
        elapsed = time.perf_counter() - started
    tenths = [round(tenth / (end - begin)) for begin, end in zip([started, *marks], marks, strict=False)]
    return resources / elapsed, min(FIRST, resources) / (first_at[0] - started), tenths


def _fresh_first(db: Path, port: int) -> float:
    """The rate of loading the tier's first resources into an empty file, on a server of their own."""
    server = _serve(str(db), port)
    try:
        time.sleep(6)  # start-up work settles, as before the tier's own load
        _, first_rate, _ = asyncio.run(_load(f"http://127.0.0.1:{port}/fhir", FIRST))
    finally:
        stop(server)
    return first_rate


def _timed(db: str, run: Callable[[sqlite3.Connection, Any], object], args_list: list[Any]) -> tuple[float, float]:
    """p50 and p99 in ms of a raw query over many argument sets, three passes."""
    conn = sqlite3.connect(db)
    times = []
    for _ in range(3):
        for args in args_list:
            started = time.perf_counter()
            run(conn, args)
            times.append(time.perf_counter() - started)
    conn.close()
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000


def _raw(sql: str) -> Callable[[sqlite3.Connection, Any], object]:
    return lambda conn, args: conn.execute(sql, args).fetchall()


def _raw_everything(types: list[str]) -> Callable[[sqlite3.Connection, Any], object]:
    def run(conn: sqlite3.Connection, patient: str) -> object:
        found = conn.execute(RAW_READ, ("Patient", patient)).fetchall()
        for type_ in types:  # the sum of one query per type that has data
            found += conn.execute(RAW_COMPARTMENT, (patient, type_)).fetchall()
        return found
    return run


def _disk(db: str) -> int:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = int(pages * conn.execute("PRAGMA page_size").fetchone()[0])
    conn.close()
    return size


def _serve(db: str, port: int, cpu: int | None = None) -> Any:
    return start(pinned([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db], cpu),
                 f"http://127.0.0.1:{port}/fhir/metadata", env={"CARELOOP_LOG_LEVEL": "warning"})


def main() -> None:
    """Load, measure, print and record."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each figure (the median is kept)")
    args = parser.parse_args()
    rng = random.Random(7)
    figures: dict[str, Any] = {"resources": args.resources}
    with tempfile.TemporaryDirectory() as tmp:
        db, empty = str(Path(tmp) / "tier.db"), str(Path(tmp) / "empty.db")
        port, base_port = free_port(), free_port()
        server = _serve(empty, port)
        stop(server)
        empty_bytes = _disk(empty)
        baseline = start([PYTHON, "-m", "bench.trivial_app", "--port", str(base_port)],
                         f"http://127.0.0.1:{base_port}/fhir/Patient/x")
        time.sleep(3)
        figures["trivial_idle_rss_mb"] = round(rss_mb(baseline.pid), 1)
        stop(baseline)

        # a3's denominator, the first 10,000 resources, takes seconds, and this machine's speed swings
        # within seconds: the same first 10,000 are also loaded into a fresh file just before and just
        # after the tier, and the median of the three rates is the one a3 divides by
        fresh = [_fresh_first(Path(tmp) / "before.db", port)] if args.resources > FIRST else []
        server = _serve(db, port)
        try:
            time.sleep(6)  # start-up work (terminology seed, warm-up) settles
            figures["idle_rss_mb"] = round(rss_mb(server.pid), 1)
            figures["idle_workers_rss_mb"] = round(children_rss_mb(server.pid), 1)
            rate, first_rate, tenths = asyncio.run(_load(f"http://127.0.0.1:{port}/fhir", args.resources))
            # the rate of each tenth of the load: whether it slows as the file grows, or the machine drifts
            figures["ingest_tenths_resources_per_s"] = tenths
            figures["ingested_rss_mb"] = round(rss_mb(server.pid), 1)  # e2 apart: the load alone, before the mix
            figures["ingest_resources_per_s"] = round(rate)
            figures["ingest_first_resources_per_s"] = round(first_rate)
            figures["ingest_scaling_in_run"] = round(rate / first_rate, 3)
            paths = _paths(db, rng)
            # a search mix after the load, then memory: what a server holds once it has served the tier
            mix = [p for key in ("observation", "include", "name", "read", "everything") for p in paths[key]]
            rng.shuffle(mix)
            loadgen(port, mix, 4, max(args.seconds, 5), 1, None)
            figures["loaded_rss_mb"] = round(rss_mb(server.pid), 1)
            figures["server_idle_rss_mb"] = round(figures["idle_rss_mb"] + figures["idle_workers_rss_mb"], 1)
            figures["server_loaded_rss_mb"] = round(figures["loaded_rss_mb"] + children_rss_mb(server.pid), 1)
            figures["server_memory_growth"] = round(figures["server_loaded_rss_mb"] / figures["server_idle_rss_mb"], 3)
            figures["memory_growth"] = round(figures["loaded_rss_mb"] / figures["idle_rss_mb"], 3)
            # The writer hands its page cache back 5 s after writes pause (CARELOOP_SQLITE_WRITER_IDLE_SECONDS)
            # and the mix also lasts 5 s, so the reading above may or may not still hold that cache: a race.
            # This one is taken once the server has settled.
            time.sleep(WRITER_SETTLES_S)
            figures["settled_rss_mb"] = round(rss_mb(server.pid), 1)
            figures["settled_after_s"] = WRITER_SETTLES_S
            figures["settled_memory_growth"] = round(figures["settled_rss_mb"] / figures["idle_rss_mb"], 3)
        finally:
            stop(server)
        if fresh:
            fresh.append(_fresh_first(Path(tmp) / "after.db", port))
        figures["ingest_first_fresh_resources_per_s"] = [round(r) for r in fresh]
        figures["ingest_first_median_resources_per_s"] = round(median([first_rate, *fresh]))
        figures["ingest_scaling"] = round(rate / median([first_rate, *fresh]), 3)
        _disk_figures(db, empty_bytes, args.resources, figures)
        queries = _raw_queries(db, paths)

        # One server process is not a sample: two processes of one build on one file have differed by 30 to
        # 40% ("What we found" in docs/performance.md). Each round measures a process of its own, all started
        # now on the same file and core, and each trivial baseline likewise, so a median is across processes.
        processes = max(1, min(args.rounds, PROCESSES))
        ports, base_ports = [free_port() for _ in range(processes)], [free_port() for _ in range(processes)]
        servers: list[Any] = []
        try:
            for server_port, trivial_port in zip(ports, base_ports, strict=True):
                servers.append(_serve(db, server_port, 0))
                servers.append(start(pinned([PYTHON, "-m", "bench.trivial_app", "--port", str(trivial_port)], 0),
                                     f"http://127.0.0.1:{trivial_port}/fhir/Patient/x"))
            for server_port in ports:  # each process serves the search mix before it is measured, as the first did
                loadgen(server_port, mix, 2, 2, 0, 1)
            # rounds interleave every measurement, so a slow spell of the shared machine hits them alike;
            # each figure is the median over the rounds (PERFORMANCE protocol: 3 repetitions, the median).
            # A raw baseline runs right after the server's figure it divides (the server idle meanwhile).
            runs: dict[str, list[dict[str, Any]]] = {key: [] for key in paths}
            raw: dict[str, list[tuple[float, float]]] = {key: [] for key in queries}
            for round_ in range(args.rounds):
                port, base_port = ports[round_ % processes], base_ports[round_ % processes]
                for key in paths:
                    if key in POPULATION:
                        runs[key].append(_one_by_one(port, paths[key]))
                    else:  # the trivial endpoint is requested in turn with the figure: over the same moments
                        runs[key].append(loadgen(port, paths[key], 1, args.seconds, WARMUP_S, 1,
                                                 pair=(base_port, ["/fhir/Patient/x"]) if key in PAIRED else None))
                    if key in queries:
                        raw[key].append(_timed(db, *queries[key]))
            runs["trivial"] = [r["pair"] for key in PAIRED for r in runs[key]]
            measured = {key: {"p50_ms": median([r["p50_ms"] for r in found]),
                              "p99_ms": median([r["p99_ms"] for r in found]),
                              "errors": sum(r["errors"] for r in found)} for key, found in runs.items()}
        finally:
            for process in servers:
                stop(process)
    figures["measuring_processes"] = processes
    figures["rounds"] = args.rounds
    _ratios(figures, measured, runs, raw)
    record(f"tier_{args.resources}", figures)
    print(json.dumps(figures, indent=2))  # noqa: T201


PROCESSES = 3  # server processes (and trivial apps) the rounds are spread over
# The figures whose ratio adds the trivial endpoint's latency (what any HTTP answer costs) to a raw query.
# Until 5 December the endpoint was measured once a round, up to a minute away from the figures; this
# machine's speed swings within seconds, and the floor with it (0.18 to 0.24 ms within one minute).
PAIRED = ("observation", "name", "everything")
POPULATION = ("tier_all", "churn_all")  # one answer may take longer than a measuring window: timed one by one


def _one_by_one(port: int, paths: list[str]) -> dict[str, float]:
    """Latency of each path requested once (a loadgen-shaped summary), for answers that take seconds."""
    times, errors = [], 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
        for path in paths:
            started = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            errors += response.status_code >= 400
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p99_ms": times[-1], "errors": errors}


def _paths(db: str, rng: random.Random) -> dict[str, list[str]]:
    conn = sqlite3.connect(db)
    patients = [i for (i,) in conn.execute("SELECT id FROM resource WHERE type = 'Patient' AND rid > "
                                           "(SELECT max(rid) FROM resource WHERE type = 'ValueSet')")]
    observations = [i for (i,) in conn.execute("SELECT id FROM resource WHERE type = 'Observation' "
                                               "ORDER BY rid DESC LIMIT 20000")]
    conn.close()
    sample = rng.sample(patients, min(200, len(patients)))
    obs = [f"/fhir/Observation?patient={p}&code=2339-0&date=ge2020-01-01" for p in sample]
    return {
        "observation": obs,
        "include": [f"{p}&_include=Observation:patient" for p in obs],
        "name": [f"/fhir/Patient?name={f.lower()[: rng.randint(2, 4)]}" for f in FAMILIES],
        "read": [f"/fhir/Observation/{i}" for i in rng.sample(observations, min(2000, len(observations)))],
        "everything": [f"/fhir/Patient/{p}/$everything" for p in sample[:50]],
        "tier_one": [f"/fhir/Patient/{p}/$tier" for p in sample[:20]],
        "churn_one": [f"/fhir/Patient/{p}/$churn-risk" for p in sample[:20]],
        "tier_all": ["/fhir/Patient/$tier"],
        "churn_all": ["/fhir/Patient/$churn-risk"],
        "broad": ["/fhir/Observation?code=2339-0"],
        "broad_total": ["/fhir/Observation?code=2339-0&_total=accurate"],
    }


Query = tuple[Callable[[sqlite3.Connection, Any], object], list[Any]]


def _raw_queries(db: str, paths: dict[str, list[str]]) -> dict[str, Query]:
    """The hand-written baseline of each figure that has one, with its arguments, keyed like the paths."""
    conn = sqlite3.connect(db)
    pids = {(t, c): p for p, t, c in conn.execute("SELECT pid, type, code FROM sp")}
    types = [t for (t,) in conn.execute("SELECT DISTINCT r.type FROM compartment c JOIN resource r ON r.rid = "
                                        "c.rid WHERE r.type != 'Patient'")]
    conn.close()
    sample = [p.split("patient=")[1].split("&")[0] for p in paths["observation"]]
    prefixes = [p.split("name=")[1] for p in paths["name"]]
    return {
        "observation": (_raw(RAW_OBSERVATIONS), [
            (pids[("Observation", "patient")], p, pids[("Observation", "code")], "2339-0",
             pids[("Observation", "date")], 1577836800000) for p in sample]),
        "name": (_raw(RAW_NAMES), [(pids[("Patient", "name")], p, p + "\U0010ffff") for p in prefixes]),
        "read": (_raw(RAW_READ), [("Observation", p.rsplit("/", 1)[1]) for p in paths["read"]]),
        "everything": (_raw_everything(types), [p.split("/")[3] for p in paths["everything"]]),
        "tier_all": (_raw_cohort(pids), [None] * 3),
    }


def _raw_cohort(pids: dict[tuple[str, str], int]) -> Callable[[sqlite3.Connection, Any], object]:
    def run(conn: sqlite3.Connection, _: object) -> object:
        window = int(time.time() * 1000) - 365 * 86_400_000  # the operation's default look-back
        spend = conn.execute(RAW_SPEND, (pids[("Invoice", "totalgross")], pids[("Invoice", "subject")],
                                         pids[("Invoice", "date")], window)).fetchall()
        charges = conn.execute(RAW_CHARGES, (pids.get(("ChargeItem", "price-override"), -1),
                                             pids.get(("ChargeItem", "subject"), -1),
                                             pids.get(("ChargeItem", "occurrence"), -1), window)).fetchall()
        visits = conn.execute(RAW_VISITS, (pids[("Encounter", "status")], pids[("Encounter", "subject")],
                                           pids[("Encounter", "date")], window)).fetchall()
        return spend, charges, visits
    return run


def _disk_figures(db: str, empty_bytes: int, resources: int, figures: dict[str, Any]) -> None:
    """Bytes the tier added to the file per resource, against the JSON of those resources."""
    used = _disk(db) - empty_bytes
    conn = sqlite3.connect(db)
    # the terminology every file starts with is in both files; the tier's resources come after it
    first = conn.execute("SELECT min(rid) FROM resource WHERE type = 'Patient'").fetchone()[0]
    json_bytes = sum(len(decode(body) or b"") for (body,) in
                     conn.execute("SELECT body FROM resource WHERE rid >= ?", (first,)))
    conn.close()
    figures["disk_bytes_per_resource"] = round(used / resources)
    figures["json_bytes_per_resource"] = round(json_bytes / resources)
    figures["disk_ratio"] = round(used / json_bytes, 3)


def _ratios(figures: dict[str, Any], measured: dict[str, dict[str, float]],
            runs: dict[str, list[dict[str, Any]]], raw: dict[str, list[tuple[float, float]]]) -> None:
    """Figures and ratios; a ratio is the median of its rounds' ratios, each round's parts measured together."""
    floor = measured["trivial"]["p50_ms"]
    figures["trivial_p50_ms"] = round(floor, 3)
    figures["errors"] = sum(int(m["errors"]) for m in measured.values())
    for key in ("observation", "include", "name", "read", "everything", "broad", "broad_total", "tier_one",
                "churn_one", "tier_all", "churn_all"):
        figures[f"{key}_p50_ms"] = round(measured[key]["p50_ms"], 3)
        figures[f"{key}_p99_ms"] = round(measured[key]["p99_ms"], 3)
    for key in PAIRED:  # each round's ratio divides by the floor measured in turn with it
        figures[f"{key}_raw_p50_ms"] = round(median([r[0] for r in raw[key]]), 3)
        figures[f"{key}_trivial_p50_ms"] = round(median([run["pair"]["p50_ms"] for run in runs[key]]), 3)
        _keep(figures, f"{key}_ratio", [run["p50_ms"] / (base[0] + run["pair"]["p50_ms"]) for run, base
                                        in zip(runs[key], raw[key], strict=True)])
    figures["tier_all_raw_p50_ms"] = round(median([r[0] for r in raw["tier_all"]]), 3)
    figures["tier_all_ratio"] = round(median([run["p50_ms"] / base[0] for run, base
                                              in zip(runs["tier_all"], raw["tier_all"], strict=True)]), 3)
    figures["read_raw_p50_ms"] = round(median([r[0] for r in raw["read"]]), 4)
    figures["read_raw_p99_ms"] = round(median([r[1] for r in raw["read"]]), 4)
    _keep(figures, "include_overhead", [a["p50_ms"] / b["p50_ms"] for a, b
                                        in zip(runs["include"], runs["observation"], strict=True)])
    figures["total_cost"] = round(median([a["p50_ms"] / b["p50_ms"] for a, b
                                          in zip(runs["broad_total"], runs["broad"], strict=True)]), 3)



def _keep(figures: dict[str, Any], name: str, by_round: list[float]) -> None:
    """A ratio's median and, beside it, each round's value: the spread is part of the figure."""
    figures[name] = round(median(by_round), 3)
    figures[f"{name}_rounds"] = [round(r, 3) for r in by_round]


if __name__ == "__main__":
    main()
