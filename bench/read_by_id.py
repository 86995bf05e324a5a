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
from pathlib import Path

import httpx
import orjson

from bench.common import PYTHON, backend_token, free_port, pinned, record, start, stop
from bench.sidebyside import Target, add_arguments, alone, summary, together

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


def main() -> None:
    """Run the comparison and print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser, 10_000, 4, 3, 6)
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
            ours = Target(port, server.pid, token, paths)
            theirs = Target(base_port, baseline.pid, None, paths)
            ours_alone, theirs_alone = alone(ours, theirs, args.rounds, args.connections, args.seconds)
            ours_both, theirs_both = together(ours, theirs, args.pairs, args.connections, args.seconds)
        finally:
            stop(server)
            stop(baseline)
    figures = {"patients": args.patients, "connections": args.connections, "auth": not args.no_auth,
               **summary((ours_alone, ours_both), (theirs_alone, theirs_both), "trivial")}
    record("read_by_id", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "rounds"}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
