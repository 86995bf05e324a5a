"""Subscription latency and its cost to ingest (PERFORMANCE.md d1, d2), against a live server.

d1: pain scores are written one at a time (c=1) to a server with a rest-hook subscription on the pain topic;
a receiver in this process notes when each notification arrives. Latency is measured from the stored
version's lastUpdated (set in the write transaction just before it commits) to arrival, and to the
lastUpdated of the follow-up Task the shipped pathway makes; both clocks are this machine's. The write's
own latency at c=1 is the baseline.

d2: the Synthea bundles are ingested into a server with no subscriptions and into one with 10 active
rest-hook subscriptions on the ingested types (notifications flowing to the receiver), in alternating
rounds; the ratio of the medians is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn

from bench.common import PYTHON, free_port, median, record, start, stop
from bench.ingest import _bundles, _count, _over_http

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
PAIN_TOPIC = "http://careloop.health/fhir/SubscriptionTopic/pain-score-high"
HEADERS = {"content-type": "application/fhir+json"}
# ten R4-style subscriptions on what the Synthea bundles hold
INGEST_CRITERIA = ("Observation?code=http://loinc.org|8302-2", "Observation?code=http://loinc.org|29463-7",
                   "Observation?code=http://loinc.org|8480-6", "Observation?category=vital-signs",
                   "Observation?category=laboratory", "Encounter?status=finished", "Condition?clinical-status=active",
                   "Procedure?status=completed", "Immunization?status=completed", "MedicationRequest?status=active")


def _ms(instant: str) -> float:
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp() * 1000


class Arrivals:
    """An ASGI receiver noting the wall-clock arrival of each notification's focus."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.events = 0
        self.last = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        now = time.time() * 1000
        self.last = time.monotonic()
        for event in orjson.loads(raw)["entry"][0]["resource"].get("notificationEvent", []):
            self.events += 1
            self.at.setdefault(event["focus"]["reference"].split("/_history")[0].rsplit("/", 1)[1], now)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _subscription(endpoint: str, criteria: str) -> bytes:
    return orjson.dumps({
        "resourceType": "Subscription", "status": "requested", "reason": "benchmark", "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                "valueCode": "id-only"}]}}})


async def _active(client: httpx.AsyncClient, ids: list[str]) -> None:
    for _ in range(400):
        states = [(await client.get(f"/Subscription/{i}")).json()["status"] for i in ids]
        if all(s == "active" for s in states):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"subscriptions did not become active: {states}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latency(base: str, receiver_url: str, arrivals: Arrivals, writes: int) -> dict[str, float]:
    pain = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
            "valueQuantity": {"value": 8, "unit": "{score}", "system": "http://unitsofmeasure.org",
                              "code": "{score}"}}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        patient = (await client.post("/Patient", content=b'{"resourceType":"Patient"}', headers=HEADERS)).json()
        made = (await client.post("/Subscription", content=_subscription(receiver_url, PAIN_TOPIC),
                                  headers=HEADERS)).json()
        await _active(client, [made["id"]])
        body = orjson.dumps({**pain, "subject": {"reference": f"Patient/{patient['id']}"}})
        write_ms, stored = [], []
        for n in range(writes + 20):
            started = time.perf_counter()
            response = await client.post("/Observation", content=body, headers=HEADERS)
            elapsed = (time.perf_counter() - started) * 1000
            if n >= 20:  # the first writes warm the server up
                write_ms.append(elapsed)
                stored.append(response.json())
            await asyncio.sleep(0.02)  # one at a time: each notification is measured on its own
        await asyncio.sleep(1.0)
        hook, task = [], []
        for obs in stored:
            committed = _ms(obs["meta"]["lastUpdated"])
            if obs["id"] in arrivals.at:
                hook.append(arrivals.at[obs["id"]] - committed)
            found = (await client.get("/Task", params={"focus": f"Observation/{obs['id']}"})).json()
            for entry in found.get("entry", []):
                task.append(_ms(entry["resource"]["meta"]["lastUpdated"]) - committed)
    if len(hook) < writes or len(task) < writes:
        raise RuntimeError(f"missing: {writes - len(hook)} notifications, {writes - len(task)} Tasks")
    return {"writes": writes, "write_p50_ms": round(_percentile(write_ms, 0.5), 2),
            "write_p99_ms": round(_percentile(write_ms, 0.99), 2),
            "rest_hook_p50_ms": round(_percentile(hook, 0.5), 2), "rest_hook_p99_ms": round(_percentile(hook, 0.99), 2),
            "task_p50_ms": round(_percentile(task, 0.5), 2), "task_p99_ms": round(_percentile(task, 0.99), 2)}


async def _ingest(base: str, bundles: list[bytes], receiver_url: str | None) -> float:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        if receiver_url is not None:
            ids = [(await client.post("/Subscription", content=_subscription(receiver_url, c), headers=HEADERS)
                    ).json()["id"] for c in INGEST_CRITERIA]
            await _active(client, ids)
    return await _over_http(base, bundles, 2)


def _server(tmp: str, name: str) -> tuple[Any, str]:
    port = free_port()
    # not pinned: like the ingest benchmark (a1), the server may use both cores (it runs a validation process)
    command = [PYTHON, "-m", "server", "serve", "--port", str(port), "--db", str(Path(tmp) / f"{name}.db")]
    process = start(command, f"http://127.0.0.1:{port}/fhir/metadata", env={
        "CARELOOP_LOG_LEVEL": "warning", "CARELOOP_SUBSCRIPTION_ALLOWED_NETWORKS": '["127.0.0.0/8"]'})
    return process, f"http://127.0.0.1:{port}/fhir"


async def _run(rounds: int, passes: int, writes: int) -> dict[str, Any]:
    arrivals = Arrivals()
    port = free_port()
    receiver = uvicorn.Server(uvicorn.Config(arrivals, host="127.0.0.1", port=port, log_level="warning",
                                             lifespan="off"))
    serving = asyncio.create_task(receiver.serve())
    while not receiver.started:
        await asyncio.sleep(0.01)
    receiver_url = f"http://127.0.0.1:{port}/hook"
    bundles = _bundles(passes)
    resources = _count(bundles)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            process, base = _server(tmp, "latency")
            try:
                await asyncio.sleep(8)  # the validation worker imports the models in the background
                figures: dict[str, Any] = await _latency(base, receiver_url, arrivals, writes)
            finally:
                stop(process)
            plain, subscribed = [], []
            for n in range(rounds):
                for with_subs, into in ((False, plain), (True, subscribed)):
                    process, base = _server(tmp, f"ingest-{n}-{with_subs}")
                    try:
                        await asyncio.sleep(8)
                        before = arrivals.events
                        seconds = await _ingest(base, bundles, receiver_url if with_subs else None)
                        done = time.monotonic()
                        into.append(resources / seconds)
                        if with_subs:  # the notifications still queued when the last bundle was acknowledged
                            while time.monotonic() - max(arrivals.last, done) < 2.0:
                                await asyncio.sleep(0.1)
                            figures["notified_events"] = arrivals.events - before
                            figures["notify_lag_s"] = round(max(0.0, arrivals.last - done), 2)
                    finally:
                        stop(process)
    finally:
        receiver.should_exit = True
        await serving
    figures.update({"ingest_resources": resources, "ingest_rounds": rounds,
                    "ingest_0_subscriptions_res_s": round(median(plain)),
                    "ingest_10_subscriptions_res_s": round(median(subscribed)),
                    "ingest_ratio": round(median(subscribed) / median(plain), 3),
                    # each round's pair ran back to back: the spread of these is the machine's noise
                    "ingest_ratio_by_round": [round(s / p, 3) for p, s in zip(plain, subscribed, strict=True)]})
    return figures


def main() -> None:
    """Measure d1 and d2 and record them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating ingest rounds per configuration")
    parser.add_argument("--passes", type=int, default=1, help="times the 16 Synthea bundles are loaded per round")
    parser.add_argument("--writes", type=int, default=200, help="pain scores written for the latency figures")
    args = parser.parse_args()
    figures = asyncio.run(_run(args.rounds, args.passes, args.writes))
    record("subscriptions", figures)
    print(json.dumps(figures, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
