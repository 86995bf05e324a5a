"""Run the benchmarks and write their figures into docs/performance.md (date, machine, commit)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench.common import PYTHON, ROOT

REPORT = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _run(module: str, *args: str) -> dict[str, object]:
    subprocess.run([PYTHON, "-m", module, *args], cwd=ROOT, check=True, stdout=sys.stderr)
    name = module.rsplit(".", 1)[1]
    figures: dict[str, object] = json.loads((ROOT / "bench" / "out" / f"{name}.json").read_text())
    return figures


def main() -> None:
    """Run every benchmark of the chosen tier and rewrite the figures section of the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke check)")
    args = parser.parse_args()
    seconds, rounds, passes = ("3", "2", "1") if args.quick else ("6", "5", "3")
    read = _run("bench.read_by_id", "--seconds", seconds, "--rounds", rounds)
    ingest = _run("bench.ingest", "--passes", passes, "--concurrency", "2")
    ingest_single = _run("bench.ingest", "--passes", passes, "--concurrency", "1")
    stamp = datetime.date.today().isoformat()
    machine = f"{os.cpu_count()} cores, {_cpu()}, Python {platform.python_version()}"
    lines = [
        BEGIN,
        f"Measured {stamp} on commit `{_commit()}` ({machine}).",
        "",
        "| figure | CareLoop | baseline in the same run | ratio | target |",
        "|---|---|---|---|---|",
        f"| read by id, req/s (c=32, server on 1 core) | {read['careloop_rps']} | trivial FastAPI endpoint "
        f"{read['trivial_fastapi_rps']} | {read['ratio']} | >= 0.75 |",
        f"| read by id, req per server CPU-second | {read['careloop_req_per_cpu_s']} | "
        f"{read['trivial_req_per_cpu_s']} | {read['cpu_ratio']} | |",
        f"| read by id latency p50 / p99 (c=32) | {read['careloop_p50_ms']} / {read['careloop_p99_ms']} ms | | | |",
        f"| transaction ingest, res/s, 2 bundles in flight | {ingest['http_resources_per_s']} | in-process "
        f"validate+store {ingest['in_process_resources_per_s']} | {ingest['ratio']} | >= 1,500 res/s |",
        f"| transaction ingest, res/s, 1 bundle at a time | {ingest_single['http_resources_per_s']} | in-process "
        f"{ingest_single['in_process_resources_per_s']} | {ingest_single['ratio']} | |",
        "",
        f"Read: {read['patients']} patients, {read['errors']} error answers. Ingest: {ingest['resources']} "
        f"Synthea resources in {ingest['bundles']} transaction bundles, full validation.",
        END,
    ]
    text = REPORT.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    REPORT.write_text(text[:start] + "\n".join(lines) + text[end:])
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
