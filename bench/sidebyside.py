"""Two HTTP servers measured side by side: each alone in turns, and both loaded at once on a shared core.

The machine's speed swings by up to 2x within seconds (docs/performance.md, "Method"), so two runs in turn
can see different machines; two runs at once see the same one. With both servers busy on one core the
scheduler gives each half of it, so the ratio of their rates is the inverse ratio of their cost a request.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from bench.common import loadgen, median

Runs = list[dict[str, float]]


class Target(NamedTuple):
    """A server under load: its port, its process (for CPU time), the token to send and the paths to ask."""

    port: int
    pid: int
    token: str | None
    paths: list[str]


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
