"""Loopback load and soak: concurrent clients mixing reads, searches and writes for a set time, with a token.

Passes when there were no error answers, the server's memory stayed within 1.5 times its level after the
warm-up, and every acknowledged write reads back at (at least) the version that was acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import PYTHON, backend_client, children_rss_mb, fetch_token, free_port, record, rss_mb, start, stop

FHIR = {"content-type": "application/fhir+json", "prefer": "return=representation"}
MEMORY_LIMIT = 1.5  # the most either memory figure may reach, as a multiple of its level after the warm-up


def passed(errors: int, lost: int, memory: list[float], whole: list[float]) -> bool:
    """Whether a soak passed: no error answers, no lost writes, and both memory figures within the limit."""
    # the serving process and the whole server (with the validation worker) are judged each on its own: the
    # worker's steady size can hide the serving process's growth in the sum
    return (not errors and not lost and max(memory) <= MEMORY_LIMIT * memory[0]
            and max(whole) <= MEMORY_LIMIT * whole[0])


def _observation(patient: str, n: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": "2026-01-01T08:00:00Z",
            "valueQuantity": {"value": 60 + n % 40, "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}}


class Soak:
    """The shared state of the clients: known ids, acknowledged writes, latencies and failures."""

    def __init__(self, patients: list[str]) -> None:
        self.patients = patients
        self.readable: list[str] = [f"Patient/{p}" for p in patients]
        self.acknowledged: dict[str, int] = {}
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.counts = {"read": 0, "search": 0, "write": 0}

    async def client(self, http: httpx.AsyncClient, until: float, seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while time.monotonic() < until:
            n += 1
            roll = rng.random()
            started = time.perf_counter()
            if roll < 0.6:
                kind, response = "read", await http.get(f"/{rng.choice(self.readable)}")
            elif roll < 0.85:
                kind = "search"
                if rng.random() < 0.5:
                    response = await http.get("/Observation", params={"patient": rng.choice(self.patients),
                                                                      "code": "8867-4", "_count": "20"})
                else:
                    response = await http.get("/Patient", params={"name": f"Family{rng.randrange(100)}"})
            else:
                kind = "write"
                patient = rng.choice(self.patients)
                response = await http.post("/Observation", json=_observation(patient, n), headers=FHIR)
                if response.status_code == 201:
                    body = response.json()
                    key = f"Observation/{body['id']}"
                    self.acknowledged[key] = int(body["meta"]["versionId"])
                    self.readable.append(key)
            self.latencies.append((time.perf_counter() - started) * 1000)
            self.counts[kind] += 1
            if response.status_code >= 400:
                self.errors.append(f"{kind} {response.status_code} {response.text[:200]}")


async def _seed(http: httpx.AsyncClient, patients: int) -> list[str]:
    ids = []
    for start_at in range(0, patients, 200):
        entries = [{"resource": {"resourceType": "Patient", "name": [{"family": f"Family{n}"}]},
                    "request": {"method": "POST", "url": "Patient"}} for n in range(start_at,
                                                                              min(patients, start_at + 200))]
        response = await http.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                                   headers=FHIR)
        response.raise_for_status()
        ids.extend(e["response"]["location"].split("/")[1] for e in response.json()["entry"])
    return ids


async def _run(base: str, client: tuple[str, str], pid: int, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        renewed = 0

        async def renew() -> None:
            # backend tokens live five minutes: a real client fetches a new one before it expires
            nonlocal renewed
            token = await asyncio.to_thread(fetch_token, base, client)
            http.headers["authorization"] = f"Bearer {token}"
            renewed += 1

        await renew()
        soak = Soak(await _seed(http, args.patients))
        warm = Soak(soak.patients)  # a short warm-up, so the baseline memory includes caches and pools
        await asyncio.gather(*(warm.client(http, time.monotonic() + 10, n) for n in range(args.connections)))
        memory = [rss_mb(pid)]
        whole = [memory[0] + children_rss_mb(pid)]  # with the validation worker and the resource tracker
        until = time.monotonic() + args.seconds

        async def sample() -> None:
            last_renewal = time.monotonic()
            while time.monotonic() < until:
                await asyncio.sleep(5)
                memory.append(rss_mb(pid))
                whole.append(memory[-1] + children_rss_mb(pid))
                if time.monotonic() - last_renewal > 200:
                    await renew()
                    last_renewal = time.monotonic()

        started = time.monotonic()
        await asyncio.gather(sample(), *(soak.client(http, until, 1000 + n) for n in range(args.connections)))
        elapsed = time.monotonic() - started
        await renew()
        lost = []
        for key, version in soak.acknowledged.items():
            response = await http.get(f"/{key}")
            if response.status_code != 200 or int(response.json()["meta"]["versionId"]) < version:
                lost.append(key)
    ordered = sorted(soak.latencies)
    total = sum(soak.counts.values())
    return {"seconds": round(elapsed), "connections": args.connections, "requests": total,
            "rps": round(total / elapsed), **soak.counts, "errors": len(soak.errors),
            "first_errors": soak.errors[:5], "p50_ms": round(ordered[len(ordered) // 2], 2),
            "p99_ms": round(ordered[int(len(ordered) * 0.99)], 2), "rss_start_mb": round(memory[0], 1),
            "rss_max_mb": round(max(memory), 1), "rss_end_mb": round(memory[-1], 1),
            "rss_ratio": round(max(memory) / memory[0], 3),
            # one sample a minute: whether memory levels off (caches filling) or keeps climbing (a leak)
            "rss_by_minute_mb": [round(m, 1) for m in memory[::12]], "server_rss_start_mb": round(whole[0], 1),
            "server_rss_max_mb": round(max(whole), 1), "server_rss_ratio": round(max(whole) / whole[0], 3),
            "acknowledged_writes": len(soak.acknowledged), "lost_writes": len(lost), "tokens_fetched": renewed,
            "passed": passed(len(soak.errors), len(lost), memory, whole)}


def main() -> None:
    """Run the soak and print and record its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--patients", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        db = str(Path(tmp) / "soak.db")
        server = start([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db],
                       f"http://127.0.0.1:{port}/fhir/metadata",
                       env={"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_AUTH": "on"})
        try:
            base = f"http://127.0.0.1:{port}/fhir"
            figures = asyncio.run(_run(base, backend_client(db), server.pid, args))
        finally:
            stop(server)
    record("soak", figures)
    print(json.dumps(figures, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
