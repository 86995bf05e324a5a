"""The baseline: a trivial FastAPI endpoint answering fixed FHIR JSON bytes, served like CareLoop is."""

from __future__ import annotations

import argparse
import os

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response

BODY = (b'{"resourceType":"Patient","id":"x","meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00.000Z"},'
        b'"name":[{"family":"Smith","given":["Ann"]}],"gender":"female","birthDate":"1970-04-01"}')


def create() -> FastAPI:
    """The baseline app."""
    app = FastAPI()

    @app.get("/fhir/Patient/{id}")
    async def read(id: str) -> Response:
        return Response(BODY, media_type="application/fhir+json")

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    uvicorn.run(create(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
