"""Transaction-bundle ingest with full validation: over HTTP, in process, and the raw store insert.

All three load the same Synthea transaction bundles into fresh SQLite files:

- over HTTP, the server validates every entry (JSON schema, R4B model, required bindings, device rules),
  indexes and stores it; it may use both cores (one uvicorn worker plus one validation process);
- in process, the same services (`server.app.build_services`) run the same transaction processor on the same
  bundles, without HTTP, with the same validation process (PERFORMANCE.md a1);
- raw, the resources the in-process run stored are written again into a fresh file through the store alone,
  with their index entries computed beforehand: no parsing, validation or indexing (a2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bench.common import PYTHON, ROOT, free_port, record, start, stop
from resources.bundle_entries import parse_bundle
from resources.store.protocol import Write
from resources.store.sqlite.bodies import decode
from resources.transaction import TransactionProcessor
from server.app import build_services, open_services
from server.context import Services
from server.settings import Settings

SYNTHEA = sorted((ROOT / "tests" / "data" / "synthea").glob("*.json"))
# Seconds both sides rest once the validation worker has answered its first check, before the clock starts:
# the worker's import burst and the start-up work end at the same point on both, however fast the machine.
SETTLE_S = float(os.environ.get("BENCH_SETTLE", "2"))


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


async def _warm_http(base: str) -> None:
    """Wait until the server's validation worker has its models: one Patient create goes through it."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        response = await client.post("/Patient", content=b'{"resourceType":"Patient"}',
                                     headers={"content-type": "application/fhir+json", "prefer": "return=minimal"})
        response.raise_for_status()
    await asyncio.sleep(SETTLE_S)


async def _services(path: str) -> Services:
    return await open_services(build_services(Settings(auth="off", sqlite_path=path, validation_workers=1)))


async def _in_process(path: str, bundles: list[bytes]) -> float:
    svc = await _services(path)
    await svc.repository.models.issues_many([("Patient", {"resourceType": "Patient"})] * 64)  # workers warm
    await asyncio.sleep(SETTLE_S)

    async def no_reads(url: str, source: object) -> object:
        raise AssertionError(url)

    try:
        started = time.perf_counter()
        for raw in bundles:
            _, entries = parse_bundle(orjson.loads(raw), 100_000, "http://bench/fhir")
            await TransactionProcessor(svc.repository, "http://bench/fhir").run(entries, no_reads)  # type: ignore[arg-type]
        return time.perf_counter() - started
    finally:
        await svc.repository.store.close()
        svc.repository.models.close()


async def _raw_insert(source: str, path: str, chunk: int) -> tuple[float, int]:
    """Write the resources stored in `source` into a fresh file through the store only, in bundle-sized chunks."""
    svc = await _services(path)
    store, indexer = svc.repository.store, svc.repository.indexer
    svc.repository.models.close()
    conn = sqlite3.connect(source)
    first = conn.execute("SELECT min(rid) FROM resource WHERE type = 'Patient'").fetchone()[0]
    stored = [(t, i, decode(b)) for t, i, b in conn.execute(
        "SELECT type, id, body FROM resource WHERE rid >= ? ORDER BY rid", (first,))]
    conn.close()
    writes = [Write(t, i, 1, 0, "create", body, indexer.extract(t, orjson.loads(body or b"{}")), expected_vid=0,
                    method="POST") for t, i, body in stored]
    try:
        started = time.perf_counter()
        for at in range(0, len(writes), chunk):
            async with store.write_session() as session:
                await session.apply(writes[at:at + chunk])
        return time.perf_counter() - started, len(writes)
    finally:
        await store.close()


def main() -> None:
    """Run both and print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passes", type=int, default=3, help="times the 16 Synthea bundles are loaded")
    parser.add_argument("--concurrency", type=int, default=2, help="bundles in flight over HTTP (bulk loaders)")
    parser.add_argument("--no-raw", action="store_true", help="leave out the raw store insert (a2)")
    args = parser.parse_args()
    bundles = _bundles(args.passes)
    resources = _count(bundles)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", str(Path(tmp) / "http.db")],
                       f"http://127.0.0.1:{port}/fhir/metadata", env={"CARELOOP_LOG_LEVEL": "warning"})
        try:
            base = f"http://127.0.0.1:{port}/fhir"
            asyncio.run(_warm_http(base))  # the validation worker imports the models in the background
            http_seconds = asyncio.run(_over_http(base, bundles, args.concurrency))
        finally:
            stop(server)
        local_seconds = asyncio.run(_in_process(str(Path(tmp) / "local.db"), bundles))
        figures: dict[str, object] = {
            "resources": resources, "bundles": len(bundles), "http_concurrency": args.concurrency,
            "http_resources_per_s": round(resources / http_seconds),
            "in_process_resources_per_s": round(resources / local_seconds),
            "ratio": round(local_seconds / http_seconds, 3)}
        if not args.no_raw:
            raw_seconds, raw_count = asyncio.run(_raw_insert(str(Path(tmp) / "local.db"), str(Path(tmp) / "raw.db"),
                                                             resources // len(bundles)))
            assert raw_count == resources, (raw_count, resources)
            figures["raw_insert_resources_per_s"] = round(resources / raw_seconds)
            figures["raw_ratio"] = round(raw_seconds / http_seconds, 3)
    record("ingest", figures)
    print(json.dumps(figures, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
