"""Notifications outlive a crash: a live server killed with SIGKILL delivers its pending events after a restart.

https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/notifications.html#event-numbering
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON, body, free_port
from tests.factories import patient
from tests.subscriptions.conftest import pain_score, subscription
from tests.support.receiver import Receiver, running_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ROOT = Path(__file__).parent.parent.parent


@contextmanager
def serving(db: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A `python -m server serve` process on the file; killed (not asked) when the block ends."""
    env = {**os.environ, "CARELOOP_LOG_LEVEL": "warning", "CARELOOP_AUTH": "off",
           "CARELOOP_SUBSCRIPTION_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
           # long enough that the retries are still going when the process is killed
           "CARELOOP_SUBSCRIPTION_RETRY_DELAYS": "[0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 60]",
           "CARELOOP_SUBSCRIPTION_EVENTS_RETAINED": "20"}
    process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--db", str(db)],
                               cwd=ROOT, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


async def up(process: subprocess.Popen[bytes], client: httpx.AsyncClient, seconds: float = 90) -> None:
    """Wait (without blocking the receiver's event loop) until the server answers /metadata."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if (await client.get("/metadata")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("the server did not start")


def numbers(receiver: Receiver) -> set[int]:
    """The event numbers the receiver accepted (answered 2xx to)."""
    return {int(e["eventNumber"]) for r in receiver.of_type("event-notification") if r.accepted
            for e in r.status.get("notificationEvent", [])}


async def events_since_start(client: httpx.AsyncClient, sid: str) -> int:
    """The subscription's event count as $status reports it."""
    found: dict[str, Any] = (await client.get(f"/Subscription/{sid}/$status")).json()
    return int(found["entry"][0]["resource"]["eventsSinceSubscriptionStart"])


async def test_pending_events_are_delivered_after_sigkill(tmp_path: Path, seeded_database: Path) -> None:
    db = tmp_path / "careloop.db"
    shutil.copyfile(seeded_database, db)
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    async with running_receiver() as receiver, httpx.AsyncClient(base_url=base, timeout=30) as client:
        with serving(db, port) as first:
            await up(first, client)
            someone = (await client.post("/Patient", content=body(patient()), headers=FHIR_JSON)).json()
            sub = (await client.post("/Subscription", content=body(subscription(receiver.url, max_count=5)),
                                     headers=FHIR_JSON)).json()
            await receiver.wait_for("handshake")
            receiver.answer = 503  # the receiver goes down: every notification from now on waits
            for n in range(30):
                made = await client.post("/Observation", content=body(pain_score(someone["id"], 4 + n % 6)),
                                         headers=FHIR_JSON)
                assert made.status_code == 201
            deadline = time.monotonic() + 20
            while await events_since_start(client, sub["id"]) < 30 or not receiver.of_type("event-notification"):
                assert time.monotonic() < deadline, "the 30 events were not numbered"
                await asyncio.sleep(0.1)
            assert numbers(receiver) == set()
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        receiver.answer = 200  # the receiver recovers while the server restarts on the same file
        with serving(db, port) as second:
            await up(second, client)
            deadline = time.monotonic() + 30
            while numbers(receiver) != set(range(1, 31)):
                assert time.monotonic() < deadline, f"delivered after the restart: {sorted(numbers(receiver))}"
                await asyncio.sleep(0.1)
            assert await events_since_start(client, sub["id"]) == 30
            # $events after the restart serves the stored events, the last 20 as CARELOOP_SUBSCRIPTION_EVENTS_RETAINED
            replay = (await client.get(f"/Subscription/{sub['id']}/$events")).json()
            replayed = [int(e["eventNumber"]) for e in replay["entry"][0]["resource"]["notificationEvent"]]
            assert replayed == list(range(11, 31))
