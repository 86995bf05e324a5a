"""Read by id with consent on against off, over HTTP, side by side (issue 28's read figure).

Two servers hold the same patients and Observations (authorization on, a backend client for treatment); on
the first every patient also has the three Consents with nested provisions of bench/consent.py, so each read
is decided by the consent engine; the second has none (nothing to decide: consent off in effect). Each is
pinned to core 0, the load generator to core 1 (c=32); the ratio is taken with both loaded at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
from pathlib import Path

import httpx
import orjson

from bench.common import PYTHON, ROOT, fetch_token, free_port, pinned, record, start, stop
from bench.consent import _consents, _observation
from bench.sidebyside import Target, add_arguments, alone, summary, together

FHIR = {"content-type": "application/fhir+json", "prefer": "return=minimal"}


async def _load(base: str, patients: int, token: str, consents: bool) -> list[str]:
    """Patients with three Observations each (and their Consents); the ids of the readings that stay visible."""
    readable: list[str] = []
    headers = {**FHIR, "authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for start_at in range(0, patients, 100):
            entries = []
            for n in range(start_at, min(patients, start_at + 100)):
                patient = f"urn:uuid:00000000-0000-0000-0000-{n:012d}"
                entries.append({"fullUrl": patient, "resource": {"resourceType": "Patient"},
                                "request": {"method": "POST", "url": "Patient"}})
                entries.extend({"resource": {**_observation("x", k), "subject": {"reference": patient}},
                                "request": {"method": "POST", "url": "Observation"}} for k in (1, 2, 4))
                if consents:
                    entries.extend({"resource": {**c, "patient": {"reference": patient}},
                                    "request": {"method": "POST", "url": "Consent"}}
                                   for c in _consents("x", "Practitioner/gp"))
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            response = await client.post("/", content=orjson.dumps(bundle), headers=headers)
            response.raise_for_status()
            readable.extend(e["response"]["location"].split("/")[1] for e in response.json()["entry"]
                            if e["response"]["location"].startswith("Observation/"))
    return readable


def _ehr_client(db: str) -> tuple[str, str]:
    # the clinic's EHR: it records care for treatment without a collection consent (docs/consent.md)
    added = subprocess.run([PYTHON, "-m", "server", "clients", "add", "--name", "ehr", "--type",
                            "confidential-symmetric", "--scope", "system/*.cruds", "--ehr", "--json", "--db", db],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    client = json.loads(added.stdout)
    return client["client_id"], client["client_secret"]


def main() -> None:
    """Run the comparison and print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser, 2000, 4, 3, 6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        servers, targets = [], []
        try:
            for name, consents in (("on", True), ("off", False)):
                port = free_port()
                db = str(Path(tmp) / f"{name}.db")
                env = {"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_AUTH": "on", "CARELOOP_AUDIT": "off"}
                server = start(pinned([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db], 0),
                               f"http://127.0.0.1:{port}/fhir/metadata", env=env)
                servers.append(server)
                token = fetch_token(f"http://127.0.0.1:{port}/fhir", _ehr_client(db))
                ids = asyncio.run(_load(f"http://127.0.0.1:{port}/fhir", args.patients, token, consents))
                # vitals dated after the Consents' cut-off: visible, so each is decided by the engine
                paths = [f"/fhir/Observation/{i}" for i in ids]
                targets.append(Target(port, server.pid, token, paths))
            on_alone, off_alone = alone(targets[0], targets[1], args.rounds, args.connections, args.seconds)
            on_both, off_both = together(targets[0], targets[1], args.pairs, args.connections, args.seconds)
        finally:
            for server in servers:
                stop(server)
    figures = {"patients": args.patients, "connections": args.connections,
               **summary((on_alone, on_both), (off_alone, off_both), "consent_off")}
    record("consent_read", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "rounds"}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
