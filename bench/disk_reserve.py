"""The disk reserve's cost on the write path: write transactions on two SQLite stores side by side in one process,
one with the reserve (a free-space probe before each transaction) and one without, in alternating rounds.

Run: `.venv/bin/python -m bench.disk_reserve` (about a minute). https://www.sqlite.org/rescode.html#full
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from resources.ids import now_ms
from resources.store.protocol import Write
from resources.store.sqlite.reserve import DiskReserve
from resources.store.sqlite.store import SqliteStore


async def _writes(store: SqliteStore, prefix: str, count: int) -> float:
    """Microseconds per write transaction of one small resource."""
    body = orjson.dumps({"resourceType": "Basic", "code": {"text": "bench"}})
    started = time.perf_counter()
    for n in range(count):
        async with store.write_session() as session:
            await session.apply([Write("Basic", f"{prefix}-{n}", 1, now_ms(), "create", body, None, 0, "POST")])
    return (time.perf_counter() - started) / count * 1e6


async def main(rounds: int, count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / "with").mkdir()
        (base / "without").mkdir()
        reserve = DiskReserve(base / "with", 8)
        stores = {"with reserve": SqliteStore(str(base / "with" / "a.db"), reserve=reserve, writer_idle_s=0),
                  "without": SqliteStore(str(base / "without" / "a.db"), writer_idle_s=0)}
        for store in stores.values():
            await store.open()
            await _writes(store, "warm", 200)
        found: dict[str, list[float]] = {name: [] for name in stores}
        for r in range(rounds):
            order = list(stores.items())
            for name, store in order if r % 2 == 0 else order[::-1]:  # ABBA
                found[name].append(await _writes(store, f"r{r}", count))
        probe = time.perf_counter()
        for _ in range(10_000):
            reserve.before_write(essential=False)
        probe_us = (time.perf_counter() - probe) / 10_000 * 1e6
        for store in stores.values():
            await store.close()
    ratio = statistics.median(found["with reserve"]) / statistics.median(found["without"])
    figures = {"load_average": [round(x, 2) for x in os.getloadavg()], "transactions_per_round": count,
               "us_per_write": {name: {"median": round(statistics.median(runs), 1), "rounds": [round(x) for x in runs]}
                                for name, runs in found.items()},
               "ratio_with_to_without": round(ratio, 3), "us_per_free_space_probe": round(probe_us, 2)}
    print(json.dumps(figures, indent=2))  # noqa: T201

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.count))
