"""Transaction-bundle ingest with full validation: over HTTP against in-process validate-and-store.

Both load the same Synthea transaction bundles (every entry validated against the JSON schema and the R4B
model, indexed and stored) into fresh SQLite files; the server may use both cores (one uvicorn worker plus one
validation process), as the in-process baseline may.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bench.common import PYTHON, ROOT, free_port, record, start, stop
from resources.bundle_entries import parse_bundle
from resources.model_pool import ModelValidator
from resources.models import resource_types, warm_up
from resources.repository import Repository
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.sqlite.store import SqliteStore
from resources.transaction import TransactionProcessor
from resources.validation import schema_validator

SYNTHEA = sorted((ROOT / "tests" / "data" / "synthea").glob("*.json"))


def _bundles(passes: int) -> list[bytes]:
    return [path.read_bytes() for _ in range(passes) for path in SYNTHEA]


def _count(bundles: list[bytes]) -> int:
    return sum(len(orjson.loads(b)["entry"]) for b in bundles)


async def _over_http(base: str, bundles: list[bytes], concurrency: int) -> float:
    headers = {"content-type": "application/fhir+json", "prefer": "return=minimal"}
    queue = list(reversed(bundles))

    async def poster(client: httpx.AsyncClient) -> None:
        while queue:
            response = await client.post("/", content=queue.pop(), headers=headers)
            response.raise_for_status()

    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        started = time.perf_counter()
        await asyncio.gather(*(poster(client) for _ in range(concurrency)))
        return time.perf_counter() - started


async def _in_process(path: str, bundles: list[bytes]) -> float:
    registry = default_registry(resource_types())
    store = SqliteStore(path)
    models = ModelValidator(1)
    models.start()
    warm_up()
    schema_validator()
    await store.open()
    repo = Repository(store, registry, Indexer(registry, load_patient_compartment()), models=models)
    await models.issues_many([("Patient", {"resourceType": "Patient"})] * 64)  # workers warm
    await asyncio.sleep(float(os.environ.get("BENCH_SETTLE", "8")))
    try:
        started = time.perf_counter()
        for raw in bundles:
            _, entries = parse_bundle(orjson.loads(raw), 100_000, "http://bench/fhir")

            async def no_reads(url: str, source: object) -> object:
                raise AssertionError(url)

            await TransactionProcessor(repo, "http://bench/fhir").run(entries, no_reads)  # type: ignore[arg-type]
        return time.perf_counter() - started
    finally:
        await store.close()
        models.close()


def main() -> None:
    """Run both and print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passes", type=int, default=3, help="times the 16 Synthea bundles are loaded")
    parser.add_argument("--concurrency", type=int, default=2, help="bundles in flight over HTTP (bulk loaders)")
    args = parser.parse_args()
    bundles = _bundles(args.passes)
    resources = _count(bundles)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", str(Path(tmp) / "http.db")],
                       f"http://127.0.0.1:{port}/fhir/metadata", env={"CARELOOP_LOG_LEVEL": "warning"})
        try:
            time.sleep(8)  # the validation worker imports the models in the background
            http_seconds = asyncio.run(_over_http(f"http://127.0.0.1:{port}/fhir", bundles, args.concurrency))
        finally:
            stop(server)
        local_seconds = asyncio.run(_in_process(str(Path(tmp) / "local.db"), bundles))
    figures = {"resources": resources, "bundles": len(bundles), "http_concurrency": args.concurrency,
               "http_resources_per_s": round(resources / http_seconds),
               "in_process_resources_per_s": round(resources / local_seconds),
               "ratio": round(local_seconds / http_seconds, 3)}
    record("ingest", figures)
    print(json.dumps(figures, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
