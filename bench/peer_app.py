"""The b2 peer: a fhirstarter 4.2.0 server whose read by id answers from CareLoop's own SQLite rows.

It runs in its own virtual environment (bench/read_peer.py makes it: fhirstarter pins an older FastAPI),
opens the file CareLoop serves read-only, restores a row's body with CareLoop's dictionary and returns it
the fhirstarter way, as an R4B model that the framework serialises. https://github.com/canvas-medical/fhirstarter
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
from pathlib import Path

os.environ.setdefault("FHIR_SEQUENCE", "R4B")  # read by fhirstarter at import

import uvicorn
from fhir.resources.R4B.patient import Patient
from fhirstarter import FHIRProvider, FHIRStarter, InteractionContext
from fhirstarter.exceptions import FHIRResourceNotFoundError

_BODIES = Path(__file__).resolve().parent.parent / "resources" / "store" / "sqlite" / "bodies.py"


def _bodies() -> object:
    # the module alone (it needs only zstandard), not the package, whose other modules need CareLoop's own
    # dependencies
    spec = importlib.util.spec_from_file_location("careloop_bodies", _BODIES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def create(db: str) -> FHIRStarter:
    """The peer app over one CareLoop file."""
    decode = _bodies().decode  # type: ignore[attr-defined]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
    provider = FHIRProvider()

    @provider.read(Patient)
    async def patient_read(context: InteractionContext, id_: str) -> Patient:
        row = conn.execute("SELECT body FROM resource WHERE type = 'Patient' AND id = ? AND deleted = 0",
                           (id_,)).fetchone()
        if row is None:
            raise FHIRResourceNotFoundError
        return Patient.model_validate_json(decode(row[0]))

    app = FHIRStarter(title="fhirstarter peer")
    app.add_providers(provider)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    uvicorn.run(create(args.db), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
