"""A real HTTP receiver for rest-hook notifications: uvicorn on a free loopback port, in the test's event loop.

It records every POST (headers and JSON body) in arrival order and answers with the status the test sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn


@dataclass
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    answer: int = 200  # the status the receiver gave it

    @property
    def accepted(self) -> bool:
        """Whether the receiver answered 2xx (the sender counts it as delivered)."""
        return 200 <= self.answer < 300

    @property
    def status(self) -> dict[str, Any]:
        """The SubscriptionStatus (first entry) of a notification Bundle."""
        found: dict[str, Any] = self.body["entry"][0]["resource"]
        return found


@dataclass
class Receiver:
    """The notifications received so far, and the answer to give the next ones."""

    port: int
    answer: int = 200
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        """The endpoint to subscribe with."""
        return f"http://127.0.0.1:{self.port}/hook"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        raw = b"".join(chunks)
        self.received.append(Received(scope["path"], headers, orjson.loads(raw) if raw else {}, time.monotonic(),
                                      self.answer))
        self.arrived.set()
        await send({"type": "http.response.start", "status": self.answer, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def of_type(self, kind: str) -> list[Received]:
        """The notifications of one SubscriptionStatus type (handshake, heartbeat, event-notification)."""
        return [r for r in self.received if r.body.get("entry") and r.status.get("type") == kind]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Wait until `count` notifications of a type have arrived; fail after the timeout."""
        deadline = time.monotonic() + timeout
        while len(self.of_type(kind)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{count} {kind} notification(s) expected, got {len(self.of_type(kind))}: "
                                     f"{[r.status.get('type') for r in self.received]}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        return self.of_type(kind)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_receiver(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    """A receiver (a new one on a free port unless given) served by uvicorn until the block ends."""
    receiver = receiver or Receiver(_free_port())
    server = uvicorn.Server(uvicorn.Config(receiver, host="127.0.0.1", port=receiver.port, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
