"""h1: Bulk Data $export rate and memory over a population tier; $import rate against transaction ingest.

Loads the generated clinic population (bench/generate.py) over HTTP into a fresh SQLite file, then runs a
system-level $export on a live server, timing kick-off to manifest and sampling the server's RSS every 0.2 s.
Then, side by side in one run and in alternating order, the same resources are loaded into fresh servers twice:
as the generator's transaction bundles (bench/ingest.py's shape, two in flight) and as the NDJSON the export
wrote, through $import (one upload). Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import PYTHON, free_port, median, record, rss_mb, start, stop
from bench.generate import population

HEADERS = {"content-type": "application/fhir+json", "prefer": "return=minimal"}


def _serve(db: str, port: int) -> Any:
    return start([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db],
                 f"http://127.0.0.1:{port}/fhir/metadata", env={"CARELOOP_LOG_LEVEL": "warning"})


async def _ingest(base: str, bundles: list[bytes]) -> float:
    """Seconds to post the bundles, two in flight."""
    queue = list(reversed(bundles))

    async def poster(client: httpx.AsyncClient) -> None:
        while queue:
            (await client.post("/", content=queue.pop(), headers=HEADERS)).raise_for_status()

    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(poster(client), poster(client))
        return time.perf_counter() - started


async def _job(client: httpx.AsyncClient, kick: httpx.Response) -> dict[str, Any]:
    assert kick.status_code == 202, kick.text
    url = kick.headers["content-location"]
    while True:
        status = await client.get(url)
        if status.status_code != 202:
            status.raise_for_status()
            found: dict[str, Any] = status.json()
            return found
        await asyncio.sleep(0.05)


async def _export(base: str, types: list[str]) -> tuple[float, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        started = time.perf_counter()
        manifest = await _job(client, await client.get("/$export", params={"_type": ",".join(types)},
                                                       headers={"prefer": "respond-async"}))
        return time.perf_counter() - started, manifest


async def _download(base: str, manifest: dict[str, Any]) -> bytes:
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        return b"".join([(await client.get(item["url"])).content for item in manifest["output"]])


async def _import(base: str, body: bytes) -> tuple[float, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        started = time.perf_counter()
        manifest = await _job(client, await client.post("/$import", content=body, headers={
            "prefer": "respond-async", "content-type": "application/fhir+ndjson"}))
        return time.perf_counter() - started, manifest


def _sample(pid: int, samples: list[tuple[float, float]], stop_flag: threading.Event) -> None:
    started = time.perf_counter()
    while not stop_flag.is_set():
        samples.append((time.perf_counter() - started, rss_mb(pid)))
        time.sleep(0.2)


def _export_figures(db: str, resources: int) -> tuple[dict[str, Any], bytes]:
    port = free_port()
    server = _serve(db, port)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        asyncio.run(_ingest(base, [orjson.dumps(b) for b in population(resources)]))
        time.sleep(6)  # the writer goes idle and trims its memory: the export starts from a settled process
        samples: list[tuple[float, float]] = []
        flag = threading.Event()
        sampler = threading.Thread(target=_sample, args=(server.pid, samples, flag))
        sampler.start()
        # the population's types: a system export without _type would add the AuditEvents the load recorded
        generated = sorted({e["resource"]["resourceType"] for b in population(min(resources, 1000))
                            for e in b["entry"]})
        try:
            elapsed, manifest = asyncio.run(_export(base, generated))
        finally:
            flag.set()
            sampler.join()
        exported = sum(item["count"] for item in manifest["output"])
        body = asyncio.run(_download(base, manifest))
    finally:
        stop(server)
    rss = [mb for _, mb in samples]
    quarter = max(len(rss) // 4, 1)
    figures = {"resources": resources, "exported": exported, "export_s": round(elapsed, 2),
               "export_per_s": round(exported / elapsed), "rss_start_mb": round(rss[0], 1),
               "rss_max_mb": round(max(rss), 1), "rss_samples": len(rss),
               "rss_max_per_quarter_mb": [round(max(rss[i * quarter:(i + 1) * quarter] or rss[-1:]), 1)
                                          for i in range(4)]}
    return figures, body


def _pair(tmp: str, resources: int, body: bytes, rounds: int) -> dict[str, Any]:
    bundles = [orjson.dumps(b) for b in population(resources)]
    lines = body.count(b"\n")
    ingest, imported = [], []
    for index in range(rounds * 2):
        db = str(Path(tmp) / f"pair-{index}.db")
        port = free_port()
        server = _serve(db, port)
        base = f"http://127.0.0.1:{port}/fhir"
        try:
            time.sleep(3)
            if (index % 2 == 0) == (index // 2 % 2 == 0):  # ingest first, then import first, alternately
                ingest.append(resources / asyncio.run(_ingest(base, bundles)))
            else:
                seconds, manifest = asyncio.run(_import(base, body))
                assert manifest["error"] == [], manifest["error"]
                imported.append(sum(o["count"] for o in manifest["output"]) / seconds)
        finally:
            stop(server)
    return {"pair_resources": resources, "import_lines": lines, "transaction_ingest_per_s": round(median(ingest)),
            "import_per_s": round(median(imported)), "import_vs_ingest": round(median(imported) / median(ingest), 2),
            "ingest_rounds": [round(x) for x in ingest], "import_rounds": [round(x) for x in imported]}


def main() -> None:
    """Measure, print and record."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=100_000, help="the tier exported")
    parser.add_argument("--pair", type=int, default=20_000, help="resources of the import/ingest pair")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side of the pair (median kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures, _ = _export_figures(str(Path(tmp) / "tier.db"), args.resources)
        _, body = _export_figures(str(Path(tmp) / "pair-source.db"), args.pair)
        figures.update(_pair(tmp, args.pair, body, args.rounds))
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())  # noqa: T201
    record("export", figures)


if __name__ == "__main__":
    main()
