"""Run the benchmarks and write their figures into docs/performance.md (date, machine, commit).

The report has one block for the core figures (read by id, Synthea ingest) and one per population tier; a
run rewrites only the blocks it measured, so the 100k and 1M figures stay until those tiers run again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT

REPORT = ROOT / "docs" / "performance.md"
TIERS_HEADING = "### Population tiers"


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    commit = out.stdout.strip() or "unknown"
    # a figure must name the code it measured: changes outside docs/ mean the tree is not that commit
    changed = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!docs"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    return f"`{commit}` with uncommitted changes" if changed else f"`{commit}`"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _run(module: str, *args: str, name: str | None = None) -> dict[str, Any]:
    subprocess.run([PYTHON, "-m", module, *args], cwd=ROOT, check=True, stdout=sys.stderr)
    figures: dict[str, Any] = json.loads((ROOT / "bench" / "out" / f"{name or module.rsplit('.', 1)[1]}.json")
                                         .read_text())
    return figures


def _stamp() -> str:
    machine = f"{os.cpu_count()} cores, {_cpu()}, Python {platform.python_version()}"
    return f"Measured {datetime.date.today().isoformat()} on commit {_commit()} ({machine})."


def _spread(values: list[float]) -> str:
    return f"{min(values)} to {max(values)}"


def core_block(read: dict[str, Any], ingest: dict[str, Any], single: dict[str, Any]) -> list[str]:
    """The read-by-id and Synthea-ingest figures."""
    return [
        _stamp(), "",
        "| figure | CareLoop | baseline in the same run | ratio | target |",
        "|---|---|---|---|---|",
        f"| b1 read by id with a token, both servers loaded at once (c=32 each, sharing core 0) | | trivial "
        f"FastAPI endpoint | {read['ratio']} (runs: {_spread(read['ratio_spread'])}) | >= 0.75 |",
        f"| read by id, req/s, each server alone on core 0 (in turns) | {read['careloop_rps']} | "
        f"{read['trivial_rps']} | {read['alone_ratio']} | |",
        f"| read by id, req per server CPU-second (alone; the ratio at once) | {read['careloop_req_per_cpu_s']} | "
        f"{read['trivial_req_per_cpu_s']} | {read['cpu_ratio']} | |",
        f"| read by id latency p50 / p99 (c=32) | {read['careloop_p50_ms']} / {read['careloop_p99_ms']} ms | | | |",
        f"| a1 Synthea transaction ingest, res/s, 2 bundles in flight | {ingest['http_resources_per_s']} | "
        f"in-process validate+store {ingest['in_process_resources_per_s']} | {ingest['ratio']} | >= 0.7; "
        f">= 1,500 res/s |",
        f"| a2 same, against the raw store insert of the same resources and index entries | "
        f"{ingest['http_resources_per_s']} | raw insert {ingest['raw_insert_resources_per_s']} | "
        f"{ingest['raw_ratio']} | >= 0.08 |",
        f"| Synthea ingest, 1 bundle at a time | {single['http_resources_per_s']} | in-process "
        f"{single['in_process_resources_per_s']} | {single['ratio']} | |",
        "",
        f"Read: {read['patients']} patients, {read['errors']} error answers. Ingest: {ingest['resources']} "
        f"Synthea resources in {ingest['bundles']} transaction bundles, full validation.",
    ]


def _tenths(found: dict[str, Any]) -> str:
    tenths = found.get("ingest_tenths_resources_per_s") or []  # absent from results recorded before it
    return f"{min(tenths)} / {max(tenths)} / {tenths[-1]} res/s" if tenths else "not recorded"


def _firsts(f: dict[str, Any]) -> str:
    """a3's denominator: the tier's own first 10,000 and, on larger tiers, the fresh files' (median kept)."""
    fresh = f.get("ingest_first_fresh_resources_per_s") or []
    if not fresh:
        return str(f["ingest_first_resources_per_s"])
    return (f"{f['ingest_first_median_resources_per_s']} (median of {f['ingest_first_resources_per_s']} in the "
            f"tier, {' and '.join(str(r) for r in fresh)} into fresh files before and after)")


def _with_rounds(f: dict[str, Any], name: str) -> str:
    """A ratio with its rounds' values (each round a server process of its own), where they were kept."""
    rounds = f.get(f"{name}_rounds")
    return f"{f[name]} (rounds: {', '.join(str(r) for r in rounds)})" if rounds else str(f[name])


def _floor(f: dict[str, Any], key: str) -> str:
    """The trivial endpoint's latency a figure was divided by: requested in turn with it, where it was."""
    paired = f.get(f"{key}_trivial_p50_ms")
    if paired is None:
        return f"trivial endpoint {f['trivial_p50_ms']} ms"
    return f"trivial endpoint {paired} ms in turn with it"


def tier_block(found: dict[str, Any]) -> list[str]:
    """The figures of one population tier."""
    size = f"{found['resources']:,}"
    f = found
    return [
        f"#### {size} resources", "", _stamp(), "",
        "| figure | CareLoop | baseline in the same run | ratio | target |",
        "|---|---|---|---|---|",
        f"| a3 generated-population ingest, 2 bundles in flight | {f['ingest_resources_per_s']} res/s | first "
        f"10,000 resources {_firsts(f)} res/s | {f['ingest_scaling']} | >= 0.8 |",
        f"| a3 the same load by tenths: slowest / fastest / last | {_tenths(f)} | | | |",
        f"| b3 read by id p50 / p99 (c=1) | {f['read_p50_ms']} / {f['read_p99_ms']} ms | primary-key select "
        f"{f['read_raw_p50_ms']} / {f['read_raw_p99_ms']} ms | | p50 <= 0.5 ms, p99 <= 2 ms |",
        f"| c1 `Observation?patient&code&date=ge` p50 / p99 | {f['observation_p50_ms']} / "
        f"{f['observation_p99_ms']} ms | raw SQL {f['observation_raw_p50_ms']} ms + {_floor(f, 'observation')} | "
        f"{_with_rounds(f, 'observation_ratio')} | <= 2 |",
        f"| c2 `Patient?name=` prefix p50 / p99 | {f['name_p50_ms']} / {f['name_p99_ms']} ms | raw SQL "
        f"{f['name_raw_p50_ms']} ms + {_floor(f, 'name')} | {_with_rounds(f, 'name_ratio')} | <= 2; p99 <= 20 ms |",
        f"| c3 same as c1 with `_include=Observation:patient` | {f['include_p50_ms']} ms | without the include | "
        f"{_with_rounds(f, 'include_overhead')} | <= 1.3 |",
        f"| c4 `Observation?code=2339-0` p50, default (no total) | {f['broad_p50_ms']} ms | with `_total=accurate` "
        f"{f['broad_total_p50_ms']} ms | {f['total_cost']} | the default never counts |",
        f"| c5 `Patient/$everything` (about 100 resources) p50 / p99 | {f['everything_p50_ms']} / "
        f"{f['everything_p99_ms']} ms | one raw query per type with data {f['everything_raw_p50_ms']} ms + "
        f"{_floor(f, 'everything')} | {_with_rounds(f, 'everything_ratio')} | <= 1.5; p50 <= 30 ms |",
        f"| f1 `Patient/$tier` of the whole population p50 | {f['tier_all_p50_ms']} ms | spend and visit sums "
        f"from the index tables {f['tier_all_raw_p50_ms']} ms | {f['tier_all_ratio']} | |",
        f"| f2 `Patient/{{id}}/$tier` p50 / p99 (population spend lines kept up to 300 s) | "
        f"{f['tier_one_p50_ms']} / {f['tier_one_p99_ms']} ms | | | |",
        f"| f3 `Patient/{{id}}/$churn-risk` p50 / p99 | {f['churn_one_p50_ms']} / {f['churn_one_p99_ms']} ms "
        f"| | | |",
        f"| f4 `Patient/$churn-risk` of the whole population p50 | {f.get('churn_all_p50_ms', 'not measured')} ms "
        f"| | | |",
        f"| e1 idle memory (RSS) of the serving process | {f['idle_rss_mb']} MiB | trivial FastAPI app "
        f"{f['trivial_idle_rss_mb']} MiB | {round(f['idle_rss_mb'] / f['trivial_idle_rss_mb'], 2)} | <= 150 MiB |",
        f"| idle memory of the validation worker (it alone holds the R4B models) and the resource tracker | "
        f"{f.get('idle_workers_rss_mb', 'not measured')} MiB | | | |",
        f"| the whole server idle (all its processes) | "
        f"{round(f['idle_rss_mb'] + f.get('idle_workers_rss_mb', 0), 1)} MiB | | | |",
        f"| e2 memory after the load and a search mix | {f['loaded_rss_mb']} MiB | idle {f['idle_rss_mb']} MiB | "
        f"{f['memory_growth']} | <= 1.5 |",
        *([f"| e2 the same, {f['settled_after_s']} s later (once writes pause the writer hands its cache back) | "
           f"{f['settled_rss_mb']} MiB | idle {f['idle_rss_mb']} MiB | {f['settled_memory_growth']} | |"]
          if "settled_rss_mb" in f else []),
        *([f"| e2 after the load alone, before the mix | {f['ingested_rss_mb']} MiB | idle {f['idle_rss_mb']} MiB | "
           f"{round(f['ingested_rss_mb'] / f['idle_rss_mb'], 3)} | |"] if "ingested_rss_mb" in f else []),
        *([f"| e2 for the whole server (all its processes) | {f['server_loaded_rss_mb']} MiB | idle "
           f"{f['server_idle_rss_mb']} MiB | {f['server_memory_growth']} | |"] if "server_loaded_rss_mb" in f else []),
        f"| e3 disk bytes per resource | {f['disk_bytes_per_resource']} | JSON of the same resources "
        f"{f['json_bytes_per_resource']} | {f['disk_ratio']} | <= 2 |",
        "",
        f"{f['errors']} error answers.{_processes(f)}",
    ]


def _processes(f: dict[str, Any]) -> str:
    count = f.get("measuring_processes")
    if not count or count <= 1:
        return ""
    rounds = f.get("rounds", count)
    if rounds == count:
        return (f" The latencies are medians of {count} rounds, each on a server process (and a trivial app) of "
                f"its own started on the same file.")
    return (f" The latencies are medians of {rounds} rounds, taken in turn on {count} server processes (and "
            f"trivial apps) started on the same file.")


def peer_block(found: dict[str, Any]) -> list[str]:
    """CareLoop's read by id against fhirstarter answering from the same rows (b2)."""
    return [
        _stamp(), "",
        "| figure | CareLoop | baseline in the same run | ratio | target |",
        "|---|---|---|---|---|",
        f"| b2 read by id with a token, both servers loaded at once (c=32 each, sharing core 0) | | fhirstarter "
        f"4.2.0 on the same rows | {found['ratio']} (runs: {_spread(found['ratio_spread'])}) | >= 5 |",
        f"| read by id, req/s, each server alone on core 0 (in turns) | {found['careloop_rps']} | "
        f"{found['peer_rps']} | {found['alone_ratio']} | |",
        "",
        f"{found['patients']} patients, {found['errors']} error answers.",
    ]


def subscriptions_block(found: dict[str, Any]) -> list[str]:
    """The subscription latency (d1) and ingest-with-subscriptions (d2) figures."""
    return [
        _stamp(), "",
        "| figure | CareLoop | baseline in the same run | ratio | target |",
        "|---|---|---|---|---|",
        f"| d1 commit to rest-hook received, p50 / p99 (c=1, {found['writes']} writes) | "
        f"{found['rest_hook_p50_ms']} / {found['rest_hook_p99_ms']} ms | write latency p50 / p99 "
        f"{found['write_p50_ms']} / {found['write_p99_ms']} ms | | p50 <= 20 ms, p99 <= 100 ms |",
        f"| d1 commit to follow-up Task committed, p50 / p99 | {found['task_p50_ms']} / {found['task_p99_ms']} ms "
        f"| | | p50 <= 20 ms, p99 <= 100 ms |",
        f"| d2 Synthea ingest with 10 active rest-hook subscriptions, res/s | "
        f"{found['ingest_10_subscriptions_res_s']} | with none {found['ingest_0_subscriptions_res_s']} | "
        f"{found['ingest_ratio']} | >= 0.9 |",
        "",
        f"Ingest: {found['ingest_resources']} Synthea resources per round, {found['ingest_rounds']} alternating "
        f"rounds per configuration (medians), 2 bundles in flight; both servers run the shipped pathways "
        f"(the Synthea records are historical, so they start no follow-up Tasks). With subscriptions, "
        f"{found['notified_events']} events were delivered; the last arrived {found['notify_lag_s']} s after the "
        f"last bundle was acknowledged (matching and delivery run behind the writes, off their path).",
    ]


def replace_block(text: str, name: str, lines: list[str]) -> str:
    """The report with block `name` rewritten (added under the tiers heading when it is new)."""
    begin, end = f"<!-- figures:{name}:begin -->", f"<!-- figures:{name}:end -->"
    block = "\n".join([begin, *lines, end])
    if begin in text:
        start, stop = text.index(begin), text.index(end) + len(end)
        return text[:start] + block + text[stop:]
    at = text.index(TIERS_HEADING) + len(TIERS_HEADING)
    tiers = sorted([*_tier_names(text), name], key=lambda n: int(n.split("-")[1]))
    following = tiers[tiers.index(name) + 1:]
    if following:  # keep the tiers in size order
        at = text.index(f"<!-- figures:{following[0]}:begin -->")
        return text[:at] + block + "\n\n" + text[at:]
    last = [t for t in tiers if t != name]
    if last:
        at = text.index(f"<!-- figures:{last[-1]}:end -->") + len(f"<!-- figures:{last[-1]}:end -->")
    return text[:at] + "\n\n" + block + text[at:]


def _tier_names(text: str) -> list[str]:
    return [part.split(":")[0] for part in text.split("<!-- figures:")[1:] if part.startswith("tier-")
            and ":begin" in part.split("-->")[0]]


def main() -> None:
    """Run the core benchmarks and every chosen tier, and rewrite their blocks of the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke check)")
    parser.add_argument("--tiers", default="10000",
                        help="population sizes, comma separated (10000,100000,1000000); 1M takes about 20 minutes")
    parser.add_argument("--no-core", action="store_true", help="only the tiers")
    parser.add_argument("--subscriptions", action="store_true",
                        help="also the subscription figures (d1, d2); about 3 minutes more")
    parser.add_argument("--peer", action="store_true",
                        help="also b2, against fhirstarter (its environment is made from the package index on "
                             "first use); about a minute more")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of each tier's latency figures, the median kept (each about 40 s)")
    args = parser.parse_args()
    # the core figures and the 10k tier fit in five minutes on the 2-core machine
    seconds, rounds, passes = ("3", "2", "1") if args.quick else ("5", "3", "3")
    blocks: list[tuple[str, list[str]]] = []
    if not args.no_core:
        read = _run("bench.read_by_id", "--seconds", "3", "--rounds", "2", "--pairs", "3" if args.quick else "6")
        ingest = _run("bench.ingest", "--passes", passes, "--concurrency", "2")
        single = _run("bench.ingest", "--passes", "1", "--concurrency", "1", "--no-raw")
        blocks.append(("core", core_block(read, ingest, single)))
    if args.peer:
        blocks.append(("peer", peer_block(_run("bench.read_peer"))))
    if args.subscriptions:
        found = _run("bench.subscriptions", "--rounds", "1" if args.quick else "3", "--passes", passes)
        blocks.append(("subscriptions", subscriptions_block(found)))
    for tier in (t.strip() for t in args.tiers.split(",") if t.strip()):
        found = _run("bench.tier", "--resources", tier, "--seconds", "2",
                     "--rounds", "1" if args.quick else str(args.rounds), name=f"tier_{tier}")
        blocks.append((f"tier-{tier}", tier_block(found)))
    # read when the figures are in, not before: a 1M run lasts half an hour, and edits made to the report
    # meanwhile must survive it
    text = REPORT.read_text()
    for name, lines in blocks:
        text = replace_block(text, name, lines)
    REPORT.write_text(text)
    print(text)  # noqa: T201


if __name__ == "__main__":
    main()
