"""Two HTTP servers measured side by side: each alone in turns, and both loaded at once on a shared core.

The machine's speed swings by up to 2x within seconds (docs/performance.md, "Method"), so two runs in turn
can see different machines; two runs at once see the same one. With both servers busy on one core the
scheduler gives each half of it, so the ratio of their rates is the inverse ratio of their cost a request.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from bench.common import loadgen, median

Runs = list[dict[str, float]]


class Target(NamedTuple):
    """A server under load: its port, its process (for CPU time), the token to send and the paths to ask."""

    port: int
    pid: int
    token: str | None
    paths: list[str]


def add_arguments(parser: argparse.ArgumentParser, patients: int, seconds: float, rounds: int, pairs: int) -> None:
    """The options every side-by-side read takes, with its defaults."""
    parser.add_argument("--patients", type=int, default=patients)
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--rounds", type=int, default=rounds, help="turns of each server alone (absolute figures)")
    parser.add_argument("--pairs", type=int, default=pairs, help="runs of both at once (the ratio)")
    parser.add_argument("--connections", type=int, default=32)


def _run(target: Target, connections: int, seconds: float) -> dict[str, float]:
    return loadgen(target.port, target.paths, connections, seconds, 1, 1, target.pid, target.token)


def alone(first: Target, second: Target, rounds: int, connections: int, seconds: float) -> tuple[Runs, Runs]:
    """Each server alone on its core, in turns; the order within a round alternates (ABBA)."""
    for target in (first, second):
        loadgen(target.port, target.paths, connections, 1, 1, 1, None, target.token)  # first requests, caches
    found: tuple[Runs, Runs] = ([], [])
    for n in range(rounds):
        order = [(found[0], first), (found[1], second)]
        for runs, target in order if n % 2 == 0 else order[::-1]:
            runs.append(_run(target, connections, seconds))
    return found


def together(first: Target, second: Target, pairs: int, connections: int, seconds: float) -> tuple[Runs, Runs]:
    """Both servers loaded at once, each by its own load generator, `pairs` times."""
    found: tuple[Runs, Runs] = ([], [])
    with ThreadPoolExecutor(2) as pool:
        for _ in range(pairs):
            a, b = pool.map(lambda target: _run(target, connections, seconds), (first, second))
            found[0].append(a)
            found[1].append(b)
    return found


def paired(first: Runs, second: Runs, key: str) -> float:
    """The median of each pair's ratio (steadier than a ratio of medians when the machine drifts)."""
    return round(median([a[key] / b[key] for a, b in zip(first, second, strict=True)]), 3)


def spread(first: Runs, second: Runs, key: str = "rps") -> list[float]:
    """Each pair's ratio."""
    return [round(a[key] / b[key], 3) for a, b in zip(first, second, strict=True)]


def summary(ours: tuple[Runs, Runs], theirs: tuple[Runs, Runs], name: str) -> dict[str, Any]:
    """The figures of both servers' runs, alone and at once (ours first, then theirs, keyed by `name`)."""
    (ours_alone, ours_both), (theirs_alone, theirs_both) = ours, theirs
    figures: dict[str, Any] = {"alone_ratio": paired(ours_alone, theirs_alone, "rps"),
                               "ratio": paired(ours_both, theirs_both, "rps"),
                               "ratio_spread": spread(ours_both, theirs_both),
                               "cpu_ratio": paired(ours_both, theirs_both, "req_per_cpu_s")}
    for who, runs in (("careloop", ours_alone), (name, theirs_alone)):
        figures[f"{who}_rps"] = round(median([r["rps"] for r in runs]))
        figures[f"{who}_req_per_cpu_s"] = round(median([r["req_per_cpu_s"] for r in runs]))
        figures[f"{who}_p50_ms"] = round(median([r["p50_ms"] for r in runs]), 2)
        figures[f"{who}_p99_ms"] = round(median([r["p99_ms"] for r in runs]), 2)
    figures["errors"] = sum(r["errors"] for r in ours_alone + theirs_alone + ours_both + theirs_both)
    figures["rounds"] = {"careloop": ours_alone, name: theirs_alone, "careloop_together": ours_both,
                         f"{name}_together": theirs_both}
    return figures
