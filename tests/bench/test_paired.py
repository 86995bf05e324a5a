"""Figures measured in turn with the trivial endpoint: the load generator alternates, each round divides by its own.

Until 5 December the trivial endpoint was measured once a round, up to a minute after the figures it divided,
while this machine's speed swung within seconds.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.loadgen import Target, get_request, run
from bench.tier import PAIRED, _ratios

pytestmark = pytest.mark.anyio


async def _serve(status: bytes, seen: list[bytes]) -> asyncio.Server:
    """A tiny HTTP/1.1 keep-alive server answering every request with one status and remembering the paths."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head.split(b" ")[1])
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_the_pair_is_requested_in_turn_with_the_server() -> None:
    first, second = [], []
    server, pair = await _serve(b"200 OK", first), await _serve(b"500 Oops", second)
    async with server, pair:
        port, pair_port = server.sockets[0].getsockname()[1], pair.sockets[0].getsockname()[1]
        target = Target(pair_port, [get_request("127.0.0.1", pair_port, "/fhir/Patient/x")])
        requests = [get_request("127.0.0.1", port, p) for p in ("/a", "/b")]
        result = await run("127.0.0.1", port, requests, 1, 0.3, 0.0, target)
    assert result.ok > 10 and result.errors == 0
    # one request to the pair after each to the server: the counts differ by at most the one in flight
    assert abs(len(first) - len(second)) <= 1
    assert target.result.errors == len(second) and target.result.ok == 0
    assert set(first) == {b"/a", b"/b"} and set(second) == {b"/fhir/Patient/x"}


def _round(p50: float, floor: float) -> dict[str, object]:
    return {"p50_ms": p50, "p99_ms": p50, "errors": 0, "pair": {"p50_ms": floor, "p99_ms": floor, "errors": 0}}


def test_each_round_divides_by_the_floor_measured_with_it() -> None:
    # two slow rounds and a fast one: the server and the endpoint slowed together, so the ratio holds
    runs: dict[str, list[dict[str, object]]] = {
        key: [_round(0.8, 0.35), _round(0.4, 0.15), _round(0.8, 0.35)] for key in PAIRED}
    for key in ("include", "broad", "broad_total", "read", "tier_one", "churn_one", "tier_all", "churn_all"):
        runs[key] = [{"p50_ms": 1.0, "p99_ms": 1.0, "errors": 0}] * 3
    raw = {key: [(0.05, 0.1)] * 3 for key in (*PAIRED, "read", "tier_all")}
    runs["trivial"] = [r["pair"] for key in PAIRED for r in runs[key]]
    measured = {key: {"p50_ms": 1.0, "p99_ms": 1.0, "errors": 0.0} for key in runs}
    figures: dict[str, object] = {}
    _ratios(figures, measured, runs, raw)  # type: ignore[arg-type]
    assert figures["observation_ratio_rounds"] == [2.0, 2.0, 2.0]
    assert figures["everything_trivial_p50_ms"] == 0.35
    # against one floor for all rounds (the fast round's), the slow rounds would have read 4.0
    assert figures["everything_ratio"] == 2.0
