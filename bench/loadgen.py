"""A closed-loop HTTP/1.1 keep-alive load generator on raw asyncio streams (loopback only).

Each of `connections` clients sends a request, waits for the whole answer, records the latency and sends the
next. Like wrk it has coordinated omission: latencies are service times under a closed loop. Given a second
server (--pair-port), each client alternates between the two, so both are measured over the same moments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    """Counts and latencies (seconds) of one run."""

    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies) or [0.0]
        return {"requests": self.ok, "errors": self.errors, "rps": self.ok / self.seconds if self.seconds else 0.0,
                "p50_ms": lat[len(lat) // 2] * 1000, "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000}


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


@dataclass
class Target:
    """A server to load: its port, the requests to send it in turn, and what it answered."""

    port: int
    requests: list[bytes]
    result: Result = field(default_factory=Result)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, warm: float,
                    result: Result) -> None:
    started = time.perf_counter()
    writer.write(request)
    status = await _read_response(reader)
    done = time.perf_counter()
    if started >= warm:
        if 200 <= status < 400:
            result.ok += 1
            result.latencies.append(done - started)
        else:
            result.errors += 1


async def _client(host: str, targets: list[Target], stop: float, warm: float, index: int) -> None:
    # one keep-alive connection a target, each sent its next request in turn: with two targets their
    # latencies are taken at the same moments, so a drift of the machine's speed moves both alike
    streams = [await asyncio.open_connection(host, target.port) for target in targets]
    n = index
    try:
        while time.perf_counter() < stop:
            for target, (reader, writer) in zip(targets, streams, strict=True):
                await _exchange(reader, writer, target.requests[n % len(target.requests)], warm, target.result)
            n += 1
    finally:
        for _, writer in streams:
            writer.close()


async def run(host: str, port: int, requests: list[bytes], connections: int, seconds: float,
              warmup: float, pair: Target | None = None) -> Result:
    """Drive the server for warmup + seconds and measure the last `seconds` (and the pair, in turn with it)."""
    targets = [Target(port, requests), *([pair] if pair is not None else [])]
    start = time.perf_counter()
    warm, stop = start + warmup, start + warmup + seconds
    await asyncio.gather(*(_client(host, targets, stop, warm, i) for i in range(connections)))
    for target in targets:
        target.result.seconds = seconds
    return targets[0].result


def get_request(host: str, port: int, path: str, token: str | None = None) -> bytes:
    """A keep-alive GET request (with a Bearer token when given)."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/fhir+json\r\n{auth}\r\n").encode()


def main() -> None:
    """Command line: paths from a JSON file, results as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", required=True, help="JSON file with a list of request paths")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--cpu", type=int, default=None, help="pin the load generator to this core")
    parser.add_argument("--token", default=None, help="send this Bearer access token with every request")
    parser.add_argument("--pair-port", type=int, default=None, help="a second server, sent a request after each "
                        "request to the first, on a connection of its own (its summary under 'pair')")
    parser.add_argument("--pair-paths", default=None, help="JSON file with the second server's request paths")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    with open(args.paths) as handle:
        paths = json.load(handle)
    requests = [get_request("127.0.0.1", args.port, p, args.token) for p in paths]
    pair = None
    if args.pair_port is not None:
        with open(args.pair_paths or args.paths) as handle:
            pair = Target(args.pair_port, [get_request("127.0.0.1", args.pair_port, p) for p in json.load(handle)])
    result = asyncio.run(run("127.0.0.1", args.port, requests, args.connections, args.seconds, args.warmup, pair))
    summary: dict[str, object] = {**result.summary()}
    if pair is not None:
        summary["pair"] = pair.result.summary()
    print(json.dumps(summary))  # noqa: T201


if __name__ == "__main__":
    main()
