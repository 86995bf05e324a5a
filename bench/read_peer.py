"""b2: CareLoop's read by id against fhirstarter 4.2.0 answering from the same SQLite rows, side by side.

CareLoop serves a file of 2,000 patients loaded through transaction bundles, with authorization on (every
read carries a Bearer token and is checked); the peer (bench/peer_app.py) opens the same file read-only and
answers GET /Patient/{id} from the same rows, as the framework's own examples do: an R4B model validated
from the stored JSON and serialised by fhirstarter. Both are one uvicorn worker pinned to core 0 and are
measured as b1 is (bench/sidebyside.py): alone in turns for their rates, at once for the ratio.
The peer needs its own virtual environment (fhirstarter pins FastAPI below 0.137); the first run makes it
in bench/out/peer-venv from the package index. https://pypi.org/project/fhirstarter/4.2.0/
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

from bench.common import PYTHON, ROOT, backend_token, free_port, pinned, record, start, stop
from bench.read_by_id import _load
from bench.sidebyside import Target, add_arguments, alone, summary, together

PEER_VENV = ROOT / "bench" / "out" / "peer-venv"
PEER_PACKAGES = ["fhirstarter==4.2.0", "uvicorn[standard]>=0.30", "zstandard>=0.22"]


def peer_python() -> Path:
    """The peer's interpreter, its environment made on first use."""
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != json.dumps(PEER_PACKAGES):
        venv.EnvBuilder(with_pip=True, clear=True).create(PEER_VENV)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True,
                       stdout=sys.stderr)
        stamp.write_text(json.dumps(PEER_PACKAGES))
    return python


def main() -> None:
    """Run the comparison and print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser, 2_000, 3, 2, 4)
    args = parser.parse_args()
    python = peer_python()
    with tempfile.TemporaryDirectory() as tmp:
        port, peer_port = free_port(), free_port()
        db = str(Path(tmp) / "read.db")
        server = start(pinned([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db], 0),
                       f"http://127.0.0.1:{port}/fhir/metadata",
                       env={"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_AUTH": "on"})
        peer = None
        try:
            token = backend_token(f"http://127.0.0.1:{port}/fhir", db)
            ids = asyncio.run(_load(f"http://127.0.0.1:{port}/fhir", args.patients, token))[:2000]
            peer = start(pinned([str(python), "-m", "bench.peer_app", "--port", str(peer_port), "--db", db], 0),
                         f"http://127.0.0.1:{peer_port}/Patient/{ids[0]}")
            ours = Target(port, server.pid, token, [f"/fhir/Patient/{i}" for i in ids])
            theirs = Target(peer_port, peer.pid, token, [f"/Patient/{i}" for i in ids])  # the same bytes sent
            ours_alone, theirs_alone = alone(ours, theirs, args.rounds, args.connections, args.seconds)
            ours_both, theirs_both = together(ours, theirs, args.pairs, args.connections, args.seconds)
        finally:
            stop(server)
            if peer is not None:
                stop(peer)
    figures = {"patients": args.patients, "connections": args.connections,
               **summary((ours_alone, ours_both), (theirs_alone, theirs_both), "peer")}
    record("read_peer", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "rounds"}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
