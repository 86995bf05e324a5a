"""Side-by-side figures: a ratio is the median of each pair's ratio, and the report renders what is recorded.

The b1 and b2 blocks of docs/performance.md are built from bench.sidebyside.summary; a renamed key there
would only show when `make bench` runs, minutes later.
"""

from __future__ import annotations

from bench.run import core_block, peer_block
from bench.sidebyside import paired, summary


def _run(rps: float, cpu: float, errors: int = 0) -> dict[str, float]:
    return {"rps": rps, "req_per_cpu_s": cpu, "p50_ms": 1000 / rps, "p99_ms": 3000 / rps, "errors": errors}


def test_a_ratio_is_the_median_of_each_pairs_ratio_not_a_ratio_of_medians() -> None:
    # the machine slows in the third pair: both servers feel it, so the pair's ratio holds
    ours = [_run(800, 800), _run(820, 820), _run(400, 400)]
    theirs = [_run(1000, 1000), _run(1000, 1000), _run(500, 500)]
    assert paired(ours, theirs, "rps") == 0.8
    assert paired([_run(1, 1), _run(9, 9), _run(4, 4)], [_run(2, 2), _run(10, 10), _run(5, 5)], "rps") == 0.8


def test_the_summary_counts_every_error_and_renders_in_both_blocks() -> None:
    alone = ([_run(7000, 6900), _run(7200, 7100)], [_run(9000, 8900), _run(9400, 9300, errors=1)])
    together = ([_run(3500, 7000), _run(3400, 6900)], [_run(4300, 8600), _run(4100, 8300, errors=2)])
    read = {"patients": 100, **summary((alone[0], together[0]), (alone[1], together[1]), "trivial")}
    assert read["errors"] == 3
    assert read["ratio"] == round((3500 / 4300 + 3400 / 4100) / 2, 3)
    assert read["careloop_rps"] == 7100 and read["trivial_rps"] == 9200
    ingest = {"http_resources_per_s": 1, "in_process_resources_per_s": 1, "ratio": 1, "raw_insert_resources_per_s": 1,
              "raw_ratio": 1, "resources": 1, "bundles": 1}
    core = "\n".join(core_block(read, ingest, ingest))
    assert f"| {read['ratio']} (runs: " in core and "| 7100 | 9200 |" in core
    peer = {"patients": 100, **summary((alone[0], together[0]), (alone[1], together[1]), "peer")}
    assert "| 7100 | 9200 |" in "\n".join(peer_block(peer))
