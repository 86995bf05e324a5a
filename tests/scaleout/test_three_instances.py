"""Three live CareLoop processes on one data folder behave as one server, through a restart by SIGKILL of one.

A token issued at A is refreshed at B and revoked at C; a rest-hook subscription created at B gets every event of
observations posted round-robin to all three exactly once, and after the engine's holder is killed mid-run and
started again, every event at least once (never a number missing); overdue Tasks are escalated exactly once; the
audit trail written by the three verifies. Each instance has its own CARELOOP_INSTANCE_ID and the same signing
key (the shared auth file); the test talks to each port directly, as a load balancer without stickiness would.
https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/notifications.html#event-numbering
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from resources.ids import now_ms
from resources.models import resource_types
from resources.search.dates import format_instant
from server.auth.service import AuthService
from server.settings import Settings
from subscriptions.escalation import ESCALATION, LEVEL
from tests.conftest import FHIR_JSON, body, free_port
from tests.factories import patient
from tests.subscriptions.conftest import pain_score, subscription
from tests.support.receiver import Receiver, running_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ROOT = Path(__file__).parent.parent.parent
NAMES = ("a", "b", "c")
REDIRECT = "http://localhost:9999/callback"
PATIENT_APP = "launch/patient openid fhirUser offline_access patient/*.rs"
SUPERVISOR = {"coding": [{"system": ESCALATION, "code": "supervisor"}]}
MIN = 60_000


class Cluster:
    """Three server processes on one SQLite file, one port each, one shared public base URL."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.ports = {name: free_port() for name in NAMES}
        self.base = f"http://127.0.0.1:{self.ports['a']}/fhir"  # what a load balancer in front would be
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, name: str) -> dict[str, str]:
        return {**os.environ, "CARELOOP_LOG_LEVEL": "warning", "CARELOOP_BASE_URL": self.base,
                "CARELOOP_INSTANCE_ID": f"scaleout-{name}", "CARELOOP_VALIDATION_WORKERS": "0",
                "CARELOOP_SUBSCRIPTION_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
                "CARELOOP_SUBSCRIPTION_RETRY_DELAYS": "[0.3, 0.5, 1, 2, 5, 10]",
                "CARELOOP_ESCALATION_INTERVAL_SECONDS": "1"}

    def start(self, name: str) -> None:
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--port", str(self.ports[name]), "--db", str(self.db)],
            cwd=ROOT, env=self.env(name))

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(timeout=10)

    async def up(self, name: str, seconds: float = 120) -> None:
        """Wait (without blocking the receiver's loop) until the instance answers /metadata."""
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=self.url(name), timeout=5) as client:
            while time.monotonic() < deadline:
                assert self.processes[name].poll() is None, f"instance {name} exited"
                try:
                    if (await client.get("/fhir/metadata")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"instance {name} did not start")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def engine_holder(db: Path) -> str | None:
    """Which instance's process holds the subscription engine's lease (by its pid in the holder id)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT holder FROM lease WHERE job = 'subscriptions:engine' AND until > ?",
                           (time.time(),)).fetchone()
    return None if row is None else str(row[0]).split(":")[1]


def numbers(receiver: Receiver) -> list[int]:
    """Every event number the receiver accepted, in arrival order, repeats included."""
    return [int(e["eventNumber"]) for r in receiver.of_type("event-notification") if r.accepted
            for e in r.status.get("notificationEvent", [])]


async def code_flow(client: httpx.AsyncClient, base: str, client_id: str, username: str) -> dict[str, Any]:
    """The authorization-code flow with PKCE at one instance: authorize, sign in, code, token."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": PATIENT_APP,
              "state": "s", "aud": base, "code_challenge": challenge, "code_challenge_method": "S256"}
    signed = await client.post("/auth/authorize", data={**params, "username": username, "password": "secret"})
    assert signed.status_code == 302, signed.text
    code = parse_qs(urlparse(signed.headers["location"]).query)["code"][0]
    token = await client.post("/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                   "redirect_uri": REDIRECT, "code_verifier": verifier,
                                                   "client_id": client_id})
    assert token.status_code == 200, token.text
    found: dict[str, Any] = token.json()
    return found


def overdue_task(owner: str, patient_id: str) -> dict[str, Any]:
    due = now_ms() - MIN
    return {"resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
            "for": {"reference": f"Patient/{patient_id}"}, "owner": {"reference": owner},
            "authoredOn": format_instant(due - 60 * MIN),
            "restriction": {"period": {"start": format_instant(due - 60 * MIN), "end": format_instant(due)}}}


async def test_three_instances_on_one_folder_behave_as_one_server(tmp_path: Path, seeded_database: Path) -> None:
    db = tmp_path / "careloop.db"
    shutil.copyfile(seeded_database, db)
    cluster = Cluster(db)
    settings = Settings(sqlite_path=str(db), base_url=cluster.base)
    auth = AuthService.open(settings, frozenset(resource_types()))  # what `careloop clients add` does
    admin, secret = auth.add_client("admin", "confidential-symmetric", "system/*.cruds", [], ehr=True)
    app, _ = auth.add_client("app", "public", PATIENT_APP, [REDIRECT])
    auditor, auditor_secret = auth.add_client("auditor", "confidential-symmetric", "system/AuditEvent.rs", [])
    for name in NAMES:
        cluster.start(name)
    clients = {name: httpx.AsyncClient(base_url=cluster.url(name), timeout=30) for name in NAMES}
    try:
        async with running_receiver() as receiver:
            await asyncio.gather(*(cluster.up(name) for name in NAMES))
            a, b, c = (clients[name] for name in NAMES)
            issued = await c.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                                  auth=(admin.client_id, secret or ""))
            assert issued.status_code == 200, issued.text
            headers = {"Authorization": f"Bearer {issued.json()['access_token']}", **FHIR_JSON}

            async def post(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
                made = await client.post(f"/fhir/{resource['resourceType']}", content=body(resource), headers=headers)
                assert made.status_code == 201, made.text
                found: dict[str, Any] = made.json()
                return found

            # -- auth: issued at A, refreshed at B, revoked at C, refused everywhere at once ----------------
            someone = await post(a, patient(family="Scaleout"))
            auth.store.add_user("alice", "secret", f"Patient/{someone['id']}")  # while they serve: shared at once
            first = await code_flow(a, cluster.base, app.client_id, "alice")
            refreshed = await b.post("/auth/token", data={"grant_type": "refresh_token", "client_id": app.client_id,
                                                          "refresh_token": first["refresh_token"]})
            assert refreshed.status_code == 200, refreshed.text
            second = refreshed.json()
            alice = {"Authorization": f"Bearer {second['access_token']}"}
            assert (await a.get(f"/fhir/Patient/{someone['id']}", headers=alice)).status_code == 200
            revoked = await c.post("/auth/revoke", data={"token": second["refresh_token"], "client_id": app.client_id})
            assert revoked.status_code == 200
            for client in (a, b, c):  # the family ended: its access token too, at every instance
                assert (await client.get(f"/fhir/Patient/{someone['id']}", headers=alice)).status_code == 401
            again = await a.post("/auth/token", data={"grant_type": "refresh_token", "client_id": app.client_id,
                                                      "refresh_token": second["refresh_token"]})
            assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

            # -- a subscription created at B; overdue Tasks made at every instance -------------------------
            sub = await post(b, subscription(receiver.url))
            await receiver.wait_for("handshake", timeout=30)
            clinic = await post(a, {"resourceType": "Organization", "name": "Clinic"})
            head = await post(b, {"resourceType": "PractitionerRole", "active": True, "code": [SUPERVISOR],
                                  "organization": {"reference": f"Organization/{clinic['id']}"}})
            nurse = await post(c, {"resourceType": "PractitionerRole", "active": True,
                                   "organization": {"reference": f"Organization/{clinic['id']}"}})
            tasks = [await post(clients[NAMES[n % 3]], overdue_task(f"PractitionerRole/{nurse['id']}", someone["id"]))
                     for n in range(6)]

            # -- events in the normal case: each exactly once -----------------------------------------------
            for n in range(15):
                await post(clients[NAMES[n % 3]], pain_score(someone["id"], 4 + n % 6))
            deadline = time.monotonic() + 60
            while set(numbers(receiver)) != set(range(1, 16)):
                assert time.monotonic() < deadline, f"delivered: {sorted(numbers(receiver))}"
                await asyncio.sleep(0.1)
            assert Counter(numbers(receiver)) == Counter(range(1, 16))

            # -- the engine's holder is killed mid-run and started again -------------------------------------
            pid = engine_holder(db)
            victim = next(name for name in NAMES if str(cluster.processes[name].pid) == pid)
            alive = [name for name in NAMES if name != victim]
            for n in range(15, 30):
                if n == 20:
                    cluster.kill(victim)
                target = clients[NAMES[n % 3]] if n < 20 else clients[alive[n % 2]]
                await post(target, pain_score(someone["id"], 4 + n % 6))
            cluster.start(victim)
            await cluster.up(victim)
            deadline = time.monotonic() + 90
            while set(numbers(receiver)) != set(range(1, 31)):
                assert time.monotonic() < deadline, f"delivered after the kill: {sorted(set(numbers(receiver)))}"
                await asyncio.sleep(0.2)
            repeated = [n for n, times in Counter(numbers(receiver)).items() if times > 1]
            assert all(n > 15 for n in repeated), repeated  # a repeat only of what was in flight at the kill
            for name in NAMES:  # every instance reports the same count, the restarted one included
                found = (await clients[name].get(f"/fhir/Subscription/{sub['id']}/$status", headers=headers)).json()
                count = int(found["entry"][0]["resource"]["eventsSinceSubscriptionStart"])
                deadline = time.monotonic() + 10
                while count != 30:
                    assert time.monotonic() < deadline, f"$status at {name}: {count}"
                    await asyncio.sleep(0.5)
                    found = (await clients[name].get(f"/fhir/Subscription/{sub['id']}/$status",
                                                     headers=headers)).json()
                    count = int(found["entry"][0]["resource"]["eventsSinceSubscriptionStart"])

            # -- each overdue Task escalated exactly once -----------------------------------------------------
            for made in tasks:
                deadline = time.monotonic() + 30
                while True:
                    stored = (await a.get(f"/fhir/Task/{made['id']}", headers=headers)).json()
                    if stored["meta"]["versionId"] != "1":
                        break
                    assert time.monotonic() < deadline, f"Task/{made['id']} was not escalated"
                    await asyncio.sleep(0.5)
                levels = [e["valueInteger"] for e in stored.get("extension", []) if e["url"] == LEVEL]
                assert (stored["meta"]["versionId"], levels) == ("2", [1])
                assert stored["owner"] == {"reference": f"PractitionerRole/{head['id']}"}
                made_by = (await b.get("/fhir/Provenance", params={"target": f"Task/{made['id']}"},
                                       headers=headers)).json()
                assert len(made_by.get("entry", [])) == 1

            # -- the audit trail the three wrote verifies ------------------------------------------------------
            audit_token = await c.post("/auth/token", data={"grant_type": "client_credentials",
                                                            "scope": "system/AuditEvent.rs"},
                                       auth=(auditor.client_id, auditor_secret or ""))
            verified = await c.get("/fhir/$verify-audit",
                                   headers={"Authorization": f"Bearer {audit_token.json()['access_token']}"})
            assert verified.status_code == 200, verified.text
            parts = {p["name"]: p for p in verified.json()["parameter"]}
            assert "break" not in parts, parts.get("break")
            assert parts["result"]["valueBoolean"] is True
    finally:
        for client in clients.values():
            await client.aclose()
        cluster.stop()
        auth.close()

