"""g1 and g2: the cost of the audit trail, the same server with audit on against audit off, side by side.

g1: read by id; g2: a search returning 20 patients (one Query event per patient: 20 AuditEvents per request).
Both servers run as in production (authorization on, every request with a token), one uvicorn worker each pinned
to core 0; the load generator runs on core 1 (c=32). Each is measured alone in turns (ABBA), then both at once,
where the ratio is taken (bench/sidebyside.py). Issue 29 asks g1 >= 0.7x and g2 >= 0.8x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.common import PYTHON, backend_token, free_port, pinned, record, start, stop
from bench.read_by_id import _load
from bench.sidebyside import Target, add_arguments, alone, summary, together


def _server(tmp: str, audit: str) -> tuple[int, str, Any]:
    port = free_port()
    db = str(Path(tmp) / f"audit-{audit}.db")
    process = start(pinned([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db], 0),
                    f"http://127.0.0.1:{port}/fhir/metadata",
                    env={"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_AUTH": "on", "CARELOOP_AUDIT": audit})
    return port, db, process


def main() -> None:
    """Run g1 and g2 and record their figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser, 2000, 4, 2, 4)
    args = parser.parse_args()
    figures: dict[str, Any] = {"patients": args.patients, "connections": args.connections}
    with tempfile.TemporaryDirectory() as tmp:
        servers = [_server(tmp, "on"), _server(tmp, "off")]
        try:
            targets: dict[str, list[Target]] = {"g1": [], "g2": []}
            for port, db, process in servers:
                token = backend_token(f"http://127.0.0.1:{port}/fhir", db)
                ids = asyncio.run(_load(f"http://127.0.0.1:{port}/fhir", args.patients, token))
                reads = [f"/fhir/Patient/{i}" for i in ids[:: max(1, len(ids) // 2000)]]
                searches = [f"/fhir/Patient?_count=20&_id={','.join(ids[k:k + 20])}"
                            for k in range(0, len(ids) - 20, 20)]
                targets["g1"].append(Target(port, process.pid, token, reads))
                targets["g2"].append(Target(port, process.pid, token, searches))
            for name, (on, off) in targets.items():
                on_alone, off_alone = alone(on, off, args.rounds, args.connections, args.seconds)
                on_both, off_both = together(on, off, args.pairs, args.connections, args.seconds)
                figures[name] = summary((on_alone, on_both), (off_alone, off_both), "audit_off")
        finally:
            for _, _, process in servers:
                stop(process)
    record("audit", figures)
    print(json.dumps({k: ({n: v for n, v in f.items() if n != "rounds"} if isinstance(f, dict) else f)  # noqa: T201
                      for k, f in figures.items()}, indent=2))


if __name__ == "__main__":
    main()
