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


def _search_rows(found: dict[str, object]) -> list[str]:
    size = f"{found['resources']:,}"
    return [
        f"| `Observation?patient&code&date=ge` p50 / p99 at {size} | {found['observation_p50_ms']} / "
        f"{found['observation_p99_ms']} ms | raw SQL {found['observation_raw_p50_ms']} ms + trivial endpoint "
        f"{found['trivial_p50_ms']} ms | {found['observation_ratio']} | <= 2 |",
        f"| same with `_include=Observation:patient` at {size} | {found['include_p50_ms']} ms | without include | "
        f"{found['include_overhead']} | <= 1.3 |",
        f"| `Patient?name=` prefix p50 / p99 at {size} | {found['name_p50_ms']} / {found['name_p99_ms']} ms | "
        f"raw SQL {found['name_raw_p50_ms']} ms + trivial endpoint | {found['name_ratio']} | p99 <= 20 ms |",
        f"| generated-population ingest at {size}, 2 bundles in flight | {found['ingest_resources_per_s']} res/s "
        f"| | | |",
    ]


def main() -> None:
    """Run every benchmark of the chosen tier and rewrite the figures section of the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke check)")
    parser.add_argument("--search-tiers", default="10000",
                        help="population sizes for the search benchmark, comma separated (10000,100000,1000000)")
    args = parser.parse_args()
    seconds, rounds, passes = ("3", "2", "1") if args.quick else ("6", "5", "3")
    read = _run("bench.read_by_id", "--seconds", seconds, "--rounds", rounds)
    ingest = _run("bench.ingest", "--passes", passes, "--concurrency", "2")
    ingest_single = _run("bench.ingest", "--passes", passes, "--concurrency", "1")
    searches = []
    for tier in (t.strip() for t in args.search_tiers.split(",") if t.strip()):
        subprocess.run([PYTHON, "-m", "bench.search", "--resources", tier, "--seconds", seconds], cwd=ROOT,
                       check=True, stdout=sys.stderr)
        searches.append(json.loads((ROOT / "bench" / "out" / f"search_{tier}.json").read_text()))
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
        *(row for found in searches for row in _search_rows(found)),
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
