"""Read by id: CareLoop's GET /fhir/Patient/{id} against a trivial FastAPI endpoint, side by side.

Both run as one uvicorn worker pinned to core 0; the load generator runs on core 1 (c=32, closed loop).
CareLoop runs as in production, with authorization on: every read carries a Bearer token and is checked
(`--no-auth` measures without).
Each server is first measured alone, in turns (ABBA), for its req/s and latency; the ratio is then taken
with both loaded at once, sharing the core, over several runs (the median of each run's ratio): on a machine
whose speed swings within seconds, runs at once see the same machine and runs in turn do not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from bench.common import PYTHON, backend_token, free_port, loadgen, median, pinned, record, start, stop

FHIR = {"content-type": "application/fhir+json", "prefer": "return=minimal"}


async def _load(base: str, patients: int, token: str | None) -> list[str]:
    ids: list[str] = []
    headers = {**FHIR, **({"authorization": f"Bearer {token}"} if token else {})}
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for start_at in range(0, patients, 500):
            entries = [{"resource": {"resourceType": "Patient", "name": [{"family": f"Family{n}", "given": ["Ann"]}],
                                     "gender": "female", "birthDate": "1970-04-01",
                                     "identifier": [{"system": "urn:bench", "value": str(n)}]},
                        "request": {"method": "POST", "url": "Patient"}}
                       for n in range(start_at, min(patients, start_at + 500))]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            response = await client.post("/", content=orjson.dumps(bundle), headers=headers)
            response.raise_for_status()
            ids.extend(e["response"]["location"].split("/")[1] for e in response.json()["entry"])
    return ids


Server = tuple[int, int, str | None]  # port, pid, token


def _alone(args: argparse.Namespace, paths: list[str], baseline: Server,
           ours: Server) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Each server alone on its core, in turns; the order within a round alternates (ABBA)."""
    for port, _, token in (baseline, ours):
        loadgen(port, paths, args.connections, 1, 1, 1, None, token)  # first requests, caches, allocator
    found: tuple[list[dict[str, float]], list[dict[str, float]]] = ([], [])
    for n in range(args.rounds):
        pair = [(found[1], baseline), (found[0], ours)]
        for runs, (port, pid, token) in pair if n % 2 == 0 else pair[::-1]:
            runs.append(loadgen(port, paths, args.connections, args.seconds, 1, 1, pid, token))
    return found


def _together(args: argparse.Namespace, paths: list[str], baseline: Server,
              ours: Server) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Both servers loaded at once, sharing their core (and both load generators the other one).

    The machine's speed swings by up to 2x within seconds (docs/performance.md, Method), so two runs in
    turn can see different machines; two runs at once see the same one. The scheduler gives each busy
    server half the core, so the ratio of their rates is the inverse ratio of their cost a request.
    """
    def run(server: Server) -> dict[str, float]:
        port, pid, token = server
        return loadgen(port, paths, args.connections, args.seconds, 1, 1, pid, token)

    found: tuple[list[dict[str, float]], list[dict[str, float]]] = ([], [])
    with ThreadPoolExecutor(2) as pool:
        for _ in range(args.pairs):
            mine, theirs = pool.map(run, (ours, baseline))
            found[0].append(mine)
            found[1].append(theirs)
    return found


def _paired(ours: list[dict[str, float]], theirs: list[dict[str, float]], key: str) -> float:
    """The median of each pair's ratio (steadier than a ratio of medians when the machine drifts)."""
    return round(median([o[key] / t[key] for o, t in zip(ours, theirs, strict=True)]), 3)


def main() -> None:
    """Run the comparison and print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="turns of each server alone (absolute figures)")
    parser.add_argument("--pairs", type=int, default=6, help="runs of both at once (the ratio)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-auth", action="store_true", help="run the server with CARELOOP_AUTH=off, no token")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port, base_port = free_port(), free_port()
        db = str(Path(tmp) / "read.db")
        auth = "off" if args.no_auth else "on"  # on: every read carries a token and is checked, as in production
        server = start(pinned([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db], 0),
                       f"http://127.0.0.1:{port}/fhir/metadata",
                       env={"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_AUTH": auth})
        baseline = start(pinned([PYTHON, "-m", "bench.trivial_app", "--port", str(base_port)], 0),
                         f"http://127.0.0.1:{base_port}/fhir/Patient/x")
        try:
            token = None if args.no_auth else backend_token(f"http://127.0.0.1:{port}/fhir", db)
            ids = asyncio.run(_load(f"http://127.0.0.1:{port}/fhir", args.patients, token))
            paths = [f"/fhir/Patient/{i}" for i in ids[:: max(1, len(ids) // 2000)]]
            servers = ((base_port, baseline.pid, None), (port, server.pid, token))
            ours, theirs = _alone(args, paths, *servers)
            ours_both, theirs_both = _together(args, paths, *servers)
        finally:
            stop(server)
            stop(baseline)
    figures = {"patients": args.patients, "connections": args.connections, "auth": not args.no_auth,
               "careloop_rps": round(median([r["rps"] for r in ours])),
               "trivial_fastapi_rps": round(median([r["rps"] for r in theirs])),
               "alone_ratio": _paired(ours, theirs, "rps"),
               "ratio": _paired(ours_both, theirs_both, "rps"),
               "ratio_spread": [round(o["rps"] / t["rps"], 3) for o, t in zip(ours_both, theirs_both, strict=True)],
               "careloop_req_per_cpu_s": round(median([r["req_per_cpu_s"] for r in ours])),
               "trivial_req_per_cpu_s": round(median([r["req_per_cpu_s"] for r in theirs])),
               "cpu_ratio": _paired(ours_both, theirs_both, "req_per_cpu_s"),
               "careloop_p50_ms": round(median([r["p50_ms"] for r in ours]), 2),
               "careloop_p99_ms": round(median([r["p99_ms"] for r in ours]), 2),
               "errors": sum(r["errors"] for r in ours + theirs + ours_both + theirs_both),
               "rounds": {"careloop": ours, "trivial": theirs, "careloop_together": ours_both,
                          "trivial_together": theirs_both}}
    record("read_by_id", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "rounds"}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
