"""Search latency at a given population size, against the raw SQLite query measured in the same run.

Loads the generated clinic population over HTTP (transaction bundles, two in flight), then measures at c=1:
`Observation?patient=X&code=Y&date=ge...`, the same with `_include=Observation:patient`, and `Patient?name=`
prefix searches, each over many different values; the raw baseline is a hand-written SQL query on the same file
plus the latency of the trivial FastAPI endpoint (what any HTTP answer costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bench.common import PYTHON, free_port, loadgen, pinned, record, start, stop
from bench.generate import FAMILIES, population

HEADERS = {"content-type": "application/fhir+json", "prefer": "return=minimal"}
RAW_OBSERVATIONS = """
SELECT r.body FROM resource r WHERE +r.type = 'Observation' AND r.deleted = 0
  AND r.rid IN (SELECT rid FROM idx_ref WHERE pid = ? AND target_id = ? AND target_type = 'Patient')
  AND EXISTS (SELECT 1 FROM idx_token WHERE rid = r.rid AND +pid = ? AND code = ?)
  AND EXISTS (SELECT 1 FROM idx_date WHERE rid = r.rid AND +pid = ? AND high >= ?)
ORDER BY r.rid LIMIT 51"""
RAW_NAMES = """
SELECT r.body FROM resource r WHERE r.type = 'Patient' AND r.deleted = 0
  AND r.rid IN (SELECT rid FROM idx_string WHERE pid = ? AND norm >= ? AND norm < ?) ORDER BY r.rid LIMIT 51"""


async def _load(base: str, resources: int) -> float:
    bundles = [orjson.dumps(b) for b in population(resources)]
    queue = list(reversed(bundles))

    async def poster(client: httpx.AsyncClient) -> None:
        while queue:
            (await client.post("/", content=queue.pop(), headers=HEADERS)).raise_for_status()

    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(poster(client), poster(client))
        return resources / (time.perf_counter() - started)


def _raw_latency(db: str, sql: str, args_list: list[tuple[object, ...]]) -> tuple[float, float]:
    conn = sqlite3.connect(db)
    times = []
    for _ in range(3):
        for args in args_list:
            started = time.perf_counter()
            conn.execute(sql, args).fetchall()
            times.append(time.perf_counter() - started)
    conn.close()
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000


def main() -> None:
    """Load, measure, print and record."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "search.db")
        port, base_port = free_port(), free_port()
        server = start([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db],
                       f"http://127.0.0.1:{port}/fhir/metadata", env={"CARELOOP_LOG_LEVEL": "warning"})
        try:
            time.sleep(6)
            ingest_rate = asyncio.run(_load(f"http://127.0.0.1:{port}/fhir", args.resources))
        finally:
            stop(server)
        conn = sqlite3.connect(db)
        pids = {(t, c): p for p, t, c in conn.execute("SELECT pid, type, code FROM sp")}
        patients = [i for (i,) in conn.execute("SELECT id FROM resource WHERE type = 'Patient'")]
        conn.close()
        sample = rng.sample(patients, min(200, len(patients)))
        obs_paths = [f"/fhir/Observation?patient={p}&code=2339-0&date=ge2020-01-01" for p in sample]
        include_paths = [f"{p}&_include=Observation:patient" for p in obs_paths]
        prefixes = [f.lower()[: rng.randint(2, 4)] for f in FAMILIES]
        name_paths = [f"/fhir/Patient?name={p}" for p in prefixes]
        raw_obs = _raw_latency(db, RAW_OBSERVATIONS, [
            (pids[("Observation", "patient")], p, pids[("Observation", "code")], "2339-0",
             pids[("Observation", "date")], 1577836800000) for p in sample])
        raw_names = _raw_latency(db, RAW_NAMES, [(pids[("Patient", "name")], p, p + "\U0010ffff")
                                                 for p in prefixes])
        server = start(pinned([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db], 0),
                       f"http://127.0.0.1:{port}/fhir/metadata", env={"CARELOOP_LOG_LEVEL": "warning"})
        baseline = start(pinned([PYTHON, "-m", "bench.trivial_app", "--port", str(base_port)], 0),
                         f"http://127.0.0.1:{base_port}/fhir/Patient/x")
        try:
            trivial = loadgen(base_port, ["/fhir/Patient/x"], 1, args.seconds, 1, 1)
            obs = loadgen(port, obs_paths, 1, args.seconds, 1, 1)
            inc = loadgen(port, include_paths, 1, args.seconds, 1, 1)
            names = loadgen(port, name_paths, 1, args.seconds, 1, 1)
        finally:
            stop(server)
            stop(baseline)
    floor = trivial["p50_ms"]
    figures = {
        "resources": args.resources, "ingest_resources_per_s": round(ingest_rate),
        "trivial_p50_ms": round(floor, 3),
        "observation_p50_ms": round(obs["p50_ms"], 3), "observation_p99_ms": round(obs["p99_ms"], 3),
        "observation_raw_p50_ms": round(raw_obs[0], 3),
        "observation_ratio": round(obs["p50_ms"] / (raw_obs[0] + floor), 3),
        "include_p50_ms": round(inc["p50_ms"], 3), "include_overhead": round(inc["p50_ms"] / obs["p50_ms"], 3),
        "name_p50_ms": round(names["p50_ms"], 3), "name_p99_ms": round(names["p99_ms"], 3),
        "name_raw_p50_ms": round(raw_names[0], 3),
        "name_ratio": round(names["p50_ms"] / (raw_names[0] + floor), 3),
        "errors": obs["errors"] + inc["errors"] + names["errors"],
    }
    record(f"search_{args.resources}", figures)
    print(json.dumps(figures, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
