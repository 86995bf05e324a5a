"""Crash trials: a live server on a real SQLite folder is killed with SIGKILL at a random point, restarted, checked.

Four scenarios (issue 34, item 1), each a chain of trials on one data folder (a trial's restart is the next one's
server): `ingest` (transaction bundles, two in flight), `delivery` (a rest-hook receiver that fails some
notifications), `pathways` (pain scores that start follow-up Tasks) and `escalation` (overdue Tasks escalated through
every level). After each restart: `PRAGMA integrity_check` of every SQLite file, the scenario's own checks
(bench/crash_checks.py) and the audit trail: every acknowledged request found by its X-Request-Id, `$verify-audit`
sound. Each trial's kill delay comes from `--seed`, printed with it, so a failing chain can be run again.

Run: `python -m bench.crash_trials --trials 100 --scenario all [--seed N] [--json results.json]`.
https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/notifications.html#event-numbering
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.common import ROOT, free_port
from bench.crash_checks import (
    bundle_faults,
    delivery_faults,
    escalation_faults,
    task_faults,
)
from tests.support.receiver import Receiver, running_receiver

TRIAL_TAG = "http://careloop.health/fhir/sid/crash-trial"
BUNDLE_TAG = "http://careloop.health/fhir/sid/crash-trial-bundle"
PATHWAY_EVENT = "http://careloop.health/fhir/sid/pathway-event"
LEVEL = "http://careloop.health/fhir/StructureDefinition/escalation-level"
PAIN_TOPIC = "http://careloop.health/fhir/SubscriptionTopic/pain-score-high"
FHIR_JSON = {"content-type": "application/fhir+json"}
SETTLE_S = 90.0  # how long a restarted server may take to finish what the crash interrupted


@dataclass
class Trial:
    """One kill: its seed and delay, what the clients sent and saw acknowledged, what the checks found."""

    scenario: str
    number: int
    seed: int
    delay: float
    started: str = ""  # the instant the trial's load began (for _since)
    acked_requests: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # set at the first acknowledged write

    def count(self, name: str, by: int = 1) -> None:
        """Add to one of the trial's counters."""
        self.counts[name] = self.counts.get(name, 0) + by


class Scenario(Protocol):
    """What a scenario does before the first kill, while the server is being killed, and after each restart."""

    name: str
    env: dict[str, str]
    max_delay: float

    async def prepare(self, client: httpx.AsyncClient) -> None: ...

    async def drive(self, client: httpx.AsyncClient, trial: Trial, lane: int) -> None: ...

    async def check(self, client: httpx.AsyncClient, trial: Trial) -> None: ...


@dataclass
class Server:
    """`python -m server serve` on one data folder and port, started and killed as the trials need."""

    folder: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    async def start(self, seconds: float = 180) -> None:
        """Start the process and wait (without blocking the receiver's loop) until /readyz says ready: the validation
        workers hold the models, so the background jobs' writes (pathway Tasks, escalations) are not waiting for
        them while a trial's settling time runs."""
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--port", str(self.port),
                 "--db", str(self.folder / "careloop.db")], cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=5) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.folder}")
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the server did not start within {seconds} s; see {self.folder}")

    async def kill(self) -> list[str]:
        """SIGKILL: no shutdown, no final save of anything. The faults: processes of the server still running
        10 s later (they are then killed, by their ids)."""
        if self.process is None:
            return []
        started = children(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 30)
        deadline = time.monotonic() + 10
        while (left := {pid for pid in started if alive(pid)}) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return [f"{len(left)} processes of the killed server still ran 10 s later"] if left else []

    async def stop(self) -> None:
        """An orderly stop at the end of the chain."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, 30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid`, from /proc (none where there is no /proc)."""
    found = set()
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):  # it ended meanwhile
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether the process still runs (a zombie does not)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a trial server: no token check (auth is not what is tried here), audit on, quiet."""
    return {**os.environ, "CARELOOP_AUTH": "off", "CARELOOP_LOG_LEVEL": "warning", **extra}


def integrity(folder: Path) -> list[str]:
    """`PRAGMA integrity_check` of every SQLite file in the folder (as SQLite itself recovers it): the faults."""
    faults = []
    for path in sorted(folder.glob("*.db")) + sorted(folder.glob("*.sqlite")):
        with contextlib.closing(sqlite3.connect(path)) as db:
            result = [row[0] for row in db.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            faults.append(f"integrity_check of {path.name}: {result[:3]}")
    return faults


def instant(at: datetime) -> str:
    """A FHIR instant in UTC, to the millisecond."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


async def search_all(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every resource of a search, following its next links."""
    found: list[dict[str, Any]] = []
    response = await client.get(path, params={"_count": "1000", **params})
    while True:
        assert response.status_code == 200, f"{path} {params}: {response.status_code} {response.text[:300]}"
        page = response.json()
        found.extend(e["resource"] for e in page.get("entry", []) if e.get("search", {}).get("mode") != "outcome")
        following = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
        if following is None:
            return found
        response = await client.get(following)


def chunks(values: list[str], size: int = 40) -> list[list[str]]:
    """The values in groups small enough for one query string."""
    return [values[i:i + size] for i in range(0, len(values), size)]


async def post(client: httpx.AsyncClient, trial: Trial, url: str, resource: dict[str, Any], rid: str,
               ) -> httpx.Response | None:
    """POST a resource with a request id; None when the server died before answering. A 2xx is acknowledged."""
    try:
        response = await client.post(url, json=resource, headers={**FHIR_JSON, "X-Request-Id": rid})
    except httpx.TransportError:
        return None
    if 200 <= response.status_code < 300:
        trial.acked_requests.append(rid)
        trial.loaded.set()
    else:
        trial.faults.append(f"{url} answered {response.status_code}: {response.text[:200]}")
    return response


def bundle_of(resource: dict[str, Any]) -> str:
    """The code of the bundle that wrote this version ("" when none)."""
    return next((t["code"] for t in resource.get("meta", {}).get("tag", []) if t.get("system") == BUNDLE_TAG), "")


def trial_tag(trial: Trial) -> dict[str, str]:
    return {"system": TRIAL_TAG, "code": f"{trial.scenario}-{trial.number}"}


# -- (a) transaction ingest ---------------------------------------------------------------------------
@dataclass
class Ingest:
    """Transaction bundles from two clients: a new Patient, an Encounter and three Observations, and an update of
    the client's own anchor Patient, each bundle tagged with its own code."""

    name: str = "ingest"
    env: dict[str, str] = field(default_factory=dict)
    max_delay: float = 3.0
    sent: dict[int, list[str]] = field(default_factory=dict)  # trial -> bundle codes sent
    acked: dict[int, dict[str, list[str]]] = field(default_factory=dict)  # trial -> code -> locations answered

    async def prepare(self, client: httpx.AsyncClient) -> None:
        return None

    def bundle(self, trial: Trial, code: str, lane: int) -> dict[str, Any]:
        tags = [trial_tag(trial), {"system": BUNDLE_TAG, "code": code}]
        patient = f"urn:uuid:{code}-p"
        entries: list[dict[str, Any]] = [
            {"fullUrl": patient, "resource": {"resourceType": "Patient", "meta": {"tag": tags},
                                              "identifier": [{"system": BUNDLE_TAG, "value": code}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Encounter", "meta": {"tag": tags}, "status": "finished",
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                          "subject": {"reference": patient}},
             "request": {"method": "POST", "url": "Encounter"}}]
        for n in range(3):
            entries.append({"resource": {
                "resourceType": "Observation", "meta": {"tag": tags}, "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": patient}, "effectiveDateTime": instant(datetime.now(UTC)),
                "valueQuantity": {"value": 60 + n, "unit": "/min", "system": "http://unitsofmeasure.org",
                                  "code": "/min"}}, "request": {"method": "POST", "url": "Observation"}})
        anchor = f"crash-anchor-{lane}"
        entries.append({"resource": {"resourceType": "Patient", "id": anchor, "meta": {"tag": tags},
                                     "name": [{"family": "Anchor", "given": [code]}]},
                        "request": {"method": "PUT", "url": f"Patient/{anchor}"}})
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    async def drive(self, client: httpx.AsyncClient, trial: Trial, lane: int) -> None:
        for k in range(10_000):
            code = f"{trial.scenario}-{trial.number}-{lane}-{k}"
            self.sent.setdefault(trial.number, []).append(code)
            response = await post(client, trial, "", self.bundle(trial, code, lane), f"req-{code}")
            if response is None:
                return
            if response.status_code == 200:
                self.acked.setdefault(trial.number, {})[code] = [
                    e["response"]["location"] for e in response.json()["entry"]]

    async def check(self, client: httpx.AsyncClient, trial: Trial) -> None:
        tag = f"{TRIAL_TAG}|{trial.scenario}-{trial.number}"
        found: dict[str, list[str]] = {}  # bundle code -> the resources found carrying it
        versions: dict[str, str] = {}  # Type/id/_history/n found -> the bundle that wrote it
        for kind in ("Patient", "Encounter", "Observation"):
            for resource in await search_all(client, f"/{kind}", {"_tag": tag}):
                if resource["id"].startswith("crash-anchor-"):
                    continue
                found.setdefault(bundle_of(resource), []).append(kind)
                versions[f"{kind}/{resource['id']}/_history/{resource['meta']['versionId']}"] = bundle_of(resource)
        for lane in (0, 1):
            for version in await search_all(client, f"/Patient/crash-anchor-{lane}/_history",
                                            {"_since": trial.started}):
                code = bundle_of(version)
                if code.startswith(f"{trial.scenario}-{trial.number}-{lane}-"):
                    found.setdefault(code, []).append("anchor")
                    versions[f"Patient/{version['id']}/_history/{version['meta']['versionId']}"] = code
        acked = self.acked.get(trial.number, {})
        sent = self.sent.get(trial.number, [])
        trial.faults.extend(bundle_faults(sent, set(acked), found, size=6))
        trial.count("bundles sent", len(sent))
        trial.count("bundles acknowledged", len(acked))
        trial.count("bundles present", sum(1 for c in sent if found.get(c)))
        answered = [(code, location) for code, locations in acked.items() for location in locations]
        trial.faults.extend(f"acknowledged {location} of bundle {code} is not stored with that version"
                            for code, location in answered if versions.get(location) != code)
        trial.count("acknowledged versions found", sum(1 for c, loc in answered if versions.get(loc) == c))
        # and a sample read the direct way, by vread
        for code, location in random.Random(trial.seed + trial.number).sample(answered, min(10, len(answered))):
            response = await client.get(f"/{location}")
            if response.status_code != 200 or bundle_of(response.json()) != code:
                trial.faults.append(f"vread of acknowledged {location} (bundle {code}): {response.status_code}")


# -- (b) rest-hook delivery ---------------------------------------------------------------------------
class FlakyReceiver(Receiver):
    """The test receiver, answering 503 to a seeded share of the notifications."""

    def __init__(self, port: int, failure_rate: float, seed: int) -> None:
        super().__init__(port)
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.answer = 503 if self.rng.random() < self.failure_rate else 200
        await super().__call__(scope, receive, send)


@dataclass
class Delivery:
    """Pain scores of 4 or more, each an event of a rest-hook subscription whose receiver fails a quarter of the
    time; after each restart every committed event reaches the receiver, each number always the same event."""

    receiver: Receiver
    name: str = "delivery"
    env: dict[str, str] = field(default_factory=lambda: {
        "CARELOOP_SUBSCRIPTION_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        # many quick retries: a receiver failing a quarter of the time never puts the subscription in error
        "CARELOOP_SUBSCRIPTION_RETRY_DELAYS": json.dumps([0.2] * 40)})
    max_delay: float = 3.0
    subscription: str = ""
    patient: str = ""
    acked: dict[int, list[str]] = field(default_factory=dict)  # trial -> Observation ids acknowledged
    before: dict[str, int] = field(default_factory=dict)  # the counts after the previous trial

    async def prepare(self, client: httpx.AsyncClient) -> None:
        self.patient = (await client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
                        ).json()["id"]
        channel = {"type": "rest-hook", "endpoint": self.receiver.url, "payload": "application/fhir+json",
                   "_payload": {"extension": [{
                       "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                              "backport-payload-content", "valueCode": "id-only"}]}}
        made = await client.post("/Subscription", headers=FHIR_JSON, json={
            "resourceType": "Subscription", "status": "requested", "reason": "crash trials",
            "criteria": PAIN_TOPIC, "channel": channel})
        assert made.status_code == 201, made.text
        self.subscription = made.json()["id"]
        await self.receiver.wait_for("handshake", timeout=60)

    async def drive(self, client: httpx.AsyncClient, trial: Trial, lane: int) -> None:
        for k in range(10_000):
            score = {"resourceType": "Observation", "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
                     "subject": {"reference": f"Patient/{self.patient}"},
                     "effectiveDateTime": instant(datetime.now(UTC)),
                     "valueQuantity": {"value": 4 + k % 7, "unit": "{score}", "system": "http://unitsofmeasure.org",
                                       "code": "{score}"}}
            response = await post(client, trial, "/Observation", score, f"req-{trial.scenario}-{trial.number}-"
                                                                            f"{lane}-{k}")
            if response is None:
                return
            if response.status_code == 201:
                self.acked.setdefault(trial.number, []).append(response.json()["id"])

    def notifications(self) -> list[tuple[int, str, bool]]:
        """(event number, focus, accepted) of every event notification received so far."""
        out = []
        for received in self.receiver.of_type("event-notification"):
            for event in received.status.get("notificationEvent", []):
                focus = str(event.get("focus", {}).get("reference", "")).rsplit("/", 2)[-2:]
                out.append((int(event["eventNumber"]), "/".join(focus), received.accepted))
        return out

    async def check(self, client: httpx.AsyncClient, trial: Trial) -> None:
        acked = {f"Observation/{i}" for i in self.acked.get(trial.number, [])}
        deadline = time.monotonic() + SETTLE_S
        while True:
            status = (await client.get(f"/Subscription/{self.subscription}/$status")).json()
            committed = int(status["entry"][0]["resource"]["eventsSinceSubscriptionStart"])
            faults = delivery_faults(committed, acked, self.notifications())
            if not faults or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        trial.faults.extend(faults)
        seen = self.notifications()
        accepted = [n for n, _, ok in seen if ok]
        # the counts are the subscription's since its start: a trial's share is the difference with the last one
        now = {"events committed": committed, "notifications accepted": len(accepted),
               "duplicates accepted": len(accepted) - len(set(accepted)),
               "notifications refused by the receiver": len(seen) - len(accepted)}
        trial.counts.update({k: v - self.before.get(k, 0) for k, v in now.items()})
        trial.counts["writes acknowledged"] = len(acked)
        self.before = now
        stored = await client.get(f"/Subscription/{self.subscription}")
        if stored.json().get("status") != "active":
            trial.faults.append(f"the subscription is {stored.json().get('status')}: {stored.json().get('error')}")


# -- (c) pathway Task creation ------------------------------------------------------------------------
@dataclass
class Pathways:
    """Pain scores of 7 or more for a new patient per client: each starts one urgent callback Task (pathway
    pain-callback); after each restart every Observation has exactly one Task, with one Provenance."""

    name: str = "pathways"
    env: dict[str, str] = field(default_factory=dict)
    max_delay: float = 3.0
    patients: dict[int, list[str]] = field(default_factory=dict)
    acked: dict[int, list[str]] = field(default_factory=dict)

    async def prepare(self, client: httpx.AsyncClient) -> None:
        return None

    async def drive(self, client: httpx.AsyncClient, trial: Trial, lane: int) -> None:
        prefix = f"req-{trial.scenario}-{trial.number}-{lane}"
        made = await post(client, trial, "/Patient", {"resourceType": "Patient", "meta": {"tag": [trial_tag(trial)]}},
                          f"{prefix}-p")
        if made is None or made.status_code != 201:
            return
        pid = made.json()["id"]
        self.patients.setdefault(trial.number, []).append(pid)
        for k in range(10_000):
            score = {"resourceType": "Observation", "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
                     "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": instant(datetime.now(UTC)),
                     "valueQuantity": {"value": 7 + k % 4, "unit": "{score}", "system": "http://unitsofmeasure.org",
                                       "code": "{score}"}}
            response = await post(client, trial, "/Observation", score, f"{prefix}-{k}")
            if response is None:
                return
            if response.status_code == 201:
                self.acked.setdefault(trial.number, []).append(response.json()["id"])

    async def check(self, client: httpx.AsyncClient, trial: Trial) -> None:
        # the patients a lost answer left unknown are found by the trial's tag
        patients = [p["id"] for p in await search_all(client, "/Patient",
                                                      {"_tag": f"{TRIAL_TAG}|{trial.scenario}-{trial.number}"})]
        acked = {f"Observation/{i}" for i in self.acked.get(trial.number, [])}
        deadline = time.monotonic() + SETTLE_S
        while True:
            observations, tasks, provenances = await self._state(client, patients)
            faults = task_faults(observations, acked, tasks, provenances)
            if not faults or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        trial.faults.extend(faults)
        trial.counts.update({"observations acknowledged": len(acked), "observations stored": len(observations),
                             "tasks": len(tasks)})

    async def _state(self, client: httpx.AsyncClient, patients: list[str],
                     ) -> tuple[set[str], list[tuple[str, str, str]], list[str]]:
        observations: set[str] = set()
        tasks: list[tuple[str, str, str]] = []  # (Task id, identifier, focus)
        for group in chunks([f"Patient/{p}" for p in patients]):
            observations.update(f"Observation/{o['id']}" for o in await search_all(
                client, "/Observation", {"patient": ",".join(group)}))
            for task in await search_all(client, "/Task", {"patient": ",".join(group)}):
                identifier = next((i["value"] for i in task.get("identifier", []) if i.get("system") == PATHWAY_EVENT),
                                  "")
                tasks.append((task["id"], identifier, str(task.get("focus", {}).get("reference"))))
        provenances: list[str] = []
        for group in chunks([f"Task/{t[0]}" for t in tasks]):
            for found in await search_all(client, "/Provenance", {"target": ",".join(group)}):
                provenances.extend("/".join(t["reference"].split("/")[:2]) for t in found.get("target", []))
        return observations, tasks, provenances


# -- (d) escalation ----------------------------------------------------------------------------------
@dataclass
class Escalation:
    """Open Tasks already past their deadline, with service levels of zero minutes so that every escalation is
    due again at once: the worker (every 0.2 s) takes each through every level while the server is killed."""

    name: str = "escalation"
    env: dict[str, str] = field(default_factory=lambda: {
        "CARELOOP_SERVICE_LEVEL_MINUTES": json.dumps({"stat": 0, "asap": 0, "urgent": 0, "routine": 0}),
        "CARELOOP_ESCALATION_INTERVAL_SECONDS": "0.2", "CARELOOP_ESCALATION_MAX_LEVEL": "2"})
    max_delay: float = 2.5
    tasks_per_lane: int = 12
    max_level: int = 2
    acked: dict[int, list[str]] = field(default_factory=dict)

    async def prepare(self, client: httpx.AsyncClient) -> None:
        return None

    async def drive(self, client: httpx.AsyncClient, trial: Trial, lane: int) -> None:
        overdue = instant(datetime.now(UTC) - timedelta(hours=1))
        for k in range(self.tasks_per_lane):
            task = {"resourceType": "Task", "meta": {"tag": [trial_tag(trial)]}, "status": "requested",
                    "intent": "order", "priority": "routine", "description": "crash trial",
                    "authoredOn": overdue, "restriction": {"period": {"start": overdue, "end": overdue}}}
            response = await post(client, trial, "/Task", task, f"req-{trial.scenario}-{trial.number}-{lane}-{k}")
            if response is None:
                return
            if response.status_code == 201:
                self.acked.setdefault(trial.number, []).append(response.json()["id"])

    async def check(self, client: httpx.AsyncClient, trial: Trial) -> None:
        acked = set(self.acked.get(trial.number, []))
        tag = f"{TRIAL_TAG}|{trial.scenario}-{trial.number}"
        deadline = time.monotonic() + SETTLE_S
        while True:
            tasks = await search_all(client, "/Task", {"_tag": tag})
            done = all((t.get("businessStatus", {}).get("coding") or [{}])[0].get("code") == "exhausted"
                       for t in tasks)
            if (done and acked <= {t["id"] for t in tasks}) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        histories: dict[str, list[int]] = {}
        provenances: dict[str, list[int]] = {}
        for task in tasks:
            history = await search_all(client, f"/Task/{task['id']}/_history", {})
            histories[task["id"]] = [level(v) for v in sorted(history, key=lambda v: int(v["meta"]["versionId"]))]
            for found in await search_all(client, "/Provenance", {"target": f"Task/{task['id']}"}):
                provenances.setdefault(task["id"], []).extend(
                    int(t["reference"].rsplit("/", 1)[-1]) for t in found["target"] if "/_history/" in t["reference"])
        trial.faults.extend(escalation_faults(acked, histories, provenances, self.max_level))
        trial.counts.update({"tasks acknowledged": len(acked), "tasks stored": len(tasks),
                             "escalations": sum(len(p) for p in provenances.values())})


def level(task: dict[str, Any]) -> int:
    """A Task version's escalation level (0 when never escalated)."""
    return next((int(e["valueInteger"]) for e in task.get("extension", []) if e.get("url") == LEVEL), 0)


# -- the chain of trials ------------------------------------------------------------------------------
async def audited(client: httpx.AsyncClient, trial: Trial, verify: bool) -> None:
    """Every acknowledged request of the trial is in the audit trail, and (when `verify`) the chain verifies."""
    found: set[str] = set()
    for group in chunks(trial.acked_requests):
        for event in await search_all(client, "/AuditEvent", {"entity:identifier": ",".join(group)}):
            found.update(str(e["what"]["identifier"]["value"]) for e in event.get("entity", [])
                         if e.get("what", {}).get("identifier", {}).get("value"))
    missing = [r for r in trial.acked_requests if r not in found]
    if missing:
        trial.faults.append(f"{len(missing)} acknowledged requests not in the audit trail: {missing[:5]}")
    trial.count("acknowledged requests audited", len(trial.acked_requests) - len(missing))
    if not verify:
        return
    trial.count("chain verifications")
    verdict = await client.get("/$verify-audit")
    parameters = {p["name"]: p for p in verdict.json().get("parameter", [])} if verdict.status_code == 200 else {}
    if not parameters.get("result", {}).get("valueBoolean"):
        trial.faults.append(f"$verify-audit: {verdict.status_code} {verdict.text[:300]}")


async def one_trial(server: Server, scenario: Scenario, trial: Trial, verify: bool) -> None:
    """Load, kill the trial's delay after the first acknowledged write, check the files, restart, check."""
    trial.started = instant(datetime.now(UTC) - timedelta(seconds=1))
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
        lanes = [asyncio.create_task(scenario.drive(client, trial, lane)) for lane in (0, 1)]
        # the delay counts from the first acknowledged write: a restarted server's first answers can be slow
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(trial.loaded.wait(), 60)
        await asyncio.sleep(trial.delay)
        trial.faults.extend(await server.kill())
        for lane in lanes:
            lane.cancel()
        for outcome in await asyncio.gather(*lanes, return_exceptions=True):
            if isinstance(outcome, Exception):  # a client that broke, not a server that died, is the trial's fault
                trial.faults.append(f"the load stopped: {outcome!r}")
    trial.faults.extend(await asyncio.to_thread(integrity, server.folder))
    await server.start()
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
        await scenario.check(client, trial)
        await audited(client, trial, verify)


@contextlib.asynccontextmanager
async def chain(scenario: Scenario, folder: Path, template: Path | None) -> AsyncIterator[Server]:
    """A server on the folder (from a copy of `template` when given), prepared for the scenario; stopped after."""
    folder.mkdir(parents=True, exist_ok=True)
    if template is not None:
        (folder / "careloop.db").write_bytes(template.read_bytes())
    server = Server(folder, free_port(), server_env(scenario.env))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
            await scenario.prepare(client)
        yield server
    finally:
        await server.stop()


async def run_chain(name: str, trials: int, seed: int, folder: Path, template: Path | None = None,
                    echo: bool = True, report: Callable[[list[Trial]], None] | None = None) -> list[Trial]:
    """`trials` kills of one scenario on one data folder; each trial's delay seeded by (seed, scenario, number).

    The whole trail is verified ($verify-audit walks all of it) every tenth trial and after the last."""
    results: list[Trial] = []
    async with contextlib.AsyncExitStack() as stack:
        scenario: Scenario
        if name == "delivery":
            receiver = FlakyReceiver(free_port(), 0.25, seed)
            await stack.enter_async_context(running_receiver(receiver))
            scenario = Delivery(receiver)
        else:
            scenario = {"ingest": Ingest, "pathways": Pathways, "escalation": Escalation}[name]()
        server = await stack.enter_async_context(chain(scenario, folder, template))
        for number in range(trials):
            rng = random.Random(f"{seed}:{name}:{number}")
            trial = Trial(name, number, seed, round(rng.uniform(0.0, scenario.max_delay), 3))
            await one_trial(server, scenario, trial, verify=number % 10 == 9 or number == trials - 1)
            results.append(trial)
            if report is not None:
                report(results)
            if echo:
                verdict = "ok" if not trial.faults else "FAULTS: " + "; ".join(trial.faults)
                line = f"{name} trial {number} (seed {seed}, kill after {trial.delay} s): {json.dumps(trial.counts)}"
                print(line, verdict, flush=True)  # noqa: T201
    return results


SCENARIOS = ("ingest", "delivery", "pathways", "escalation")


def summary(results: dict[str, list[Trial]]) -> dict[str, dict[str, Any]]:
    """Per scenario: trials, trials with faults, the summed counters and the first faults."""
    out: dict[str, dict[str, Any]] = {}
    for name, trials in results.items():
        counts: dict[str, int] = {}
        for trial in trials:
            for key, value in trial.counts.items():
                counts[key] = counts.get(key, 0) + value
        faulty = [t for t in trials if t.faults]
        out[name] = {"trials": len(trials), "trials with faults": len(faulty), **counts,
                     "faults": [f"trial {t.number}: {f}" for t in faulty for f in t.faults][:20]}
    return out


def table(found: dict[str, Any]) -> str:
    """The summary as a Markdown table: one row per scenario, its counters in one cell."""
    rows = ["| scenario | trials | with faults | counts |", "|---|---|---|---|"]
    for name, figures in found["scenarios"].items():
        counts = ", ".join(f"{k} {v}" for k, v in figures.items()
                           if k not in ("trials", "trials with faults", "faults"))
        rows.append(f"| {name} | {figures['trials']} | {figures['trials with faults']} | {counts} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="kills per scenario")
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (its seed is printed)")
    parser.add_argument("--folder", type=Path, default=None, help="where the data folders go (a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="write the summary here as well")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    print(f"crash trials: seed {seed}, load average {os.getloadavg()}", flush=True)  # noqa: T201
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    results: dict[str, list[Trial]] = {}

    def report(name: str, trials: list[Trial]) -> dict[str, Any]:
        results[name] = trials
        found = {"seed": seed, "load average": os.getloadavg(), "scenarios": summary(results)}
        if args.json is not None:  # after every trial: a run stopped early still leaves its counts
            args.json.write_text(json.dumps(found, indent=2))
        return found

    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="careloop-crash-") as scratch:
        base = args.folder or Path(scratch)
        for name in names:
            asyncio.run(run_chain(name, args.trials, seed, base / name,
                                  report=lambda trials, name=name: report(name, trials)))
            found = report(name, results.get(name, []))
    print(table(found), json.dumps(found, indent=2), sep="\n\n")  # noqa: T201
    if any(v["trials with faults"] for v in found["scenarios"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
