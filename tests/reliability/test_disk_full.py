"""A live server whose data folder fills up: writes answer 507, reads keep working, nothing is damaged, and writes
resume by themselves once space returns (issue 34 item 2).

https://www.sqlite.org/rescode.html#full
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from resources.store.sqlite.reserve import NAME
from tests.conftest import free_port, serving
from tests.reliability.conftest import fill

ROOT = Path(__file__).parent.parent.parent
FHIR = {"content-type": "application/fhir+json"}
RESERVE_MIB = 4


@contextmanager
def live_server(folder: Path, *, auth: bool = False) -> Iterator[httpx.Client]:
    """A live server with its whole data folder (store, audit trail, auth file, reserve) in `folder`; a client at
    its root."""
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if k != "CARELOOP_AUTH"}, "CARELOOP_LOG_LEVEL": "error",
           "CARELOOP_DISK_RESERVE_MIB": str(RESERVE_MIB), "CARELOOP_TERMINOLOGY_SEED": "false",
           "CARELOOP_VALIDATION_WORKERS": "0", "CARELOOP_BASE_URL": f"{root}/fhir"}
    if not auth:
        env["CARELOOP_AUTH"] = "off"
    with serving(port, folder / "careloop.db", env, f"{root}/fhir"), httpx.Client(base_url=root, timeout=30) as http:
        yield http


def fill_all(http: httpx.Client, folder: Path) -> Path:
    """Fill the disk, the reserve kept: a background write of the server (the audit trail's timed checkpoint, say)
    that meets the filling disk releases the reserve, and the filler would then take that room too (a disk that
    keeps filling, which no reserve survives). Then the filler is removed, /readyz takes the reserve again, and
    the filling starts over."""
    for _ in range(3):
        filler = fill(folder)
        if (folder / NAME).exists():
            return filler
        filler.unlink()
        assert http.get("/readyz").json()["checks"]["disk"] == "ok"
    raise AssertionError("the reserve was released during each of three fillings")


def patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def transaction(family: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5b3c3d44-2f0e-4f7e-9b7a-0a4c4f1d9a01", "resource": patient(family),
         "request": {"method": "POST", "url": "Patient"}}]}


def assert_full(answer: httpx.Response) -> None:
    assert answer.status_code == 507, answer.text
    assert answer.headers["retry-after"] == "60"
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "no-store"
    assert "full" in body["issue"][0]["diagnostics"]


def families(http: httpx.Client) -> set[str]:
    found = http.get("/fhir/Patient", params={"_count": "100"}, headers={"cache-control": "no-cache"})
    assert found.status_code == 200, found.text
    return {e["resource"]["name"][0]["family"] for e in found.json().get("entry", [])}


def test_full_disk_refuses_writes_serves_reads_and_recovers(small_disk: Path) -> None:
    with live_server(small_disk) as http:
        full_then_recovered(http, small_disk)


def full_then_recovered(http: httpx.Client, folder: Path) -> None:
    kept = http.post("/fhir/Patient", json=patient("Before"), headers=FHIR)
    assert kept.status_code == 201, kept.text
    kept_id = kept.json()["id"]
    assert (folder / "careloop.reserve").stat().st_size == RESERVE_MIB * 1024 * 1024

    filler = fill_all(http, folder)
    # every kind of write is refused with an OperationOutcome, never a 500
    assert_full(http.post("/fhir/Patient", json=patient("Refused"), headers=FHIR))
    assert_full(http.put(f"/fhir/Patient/{kept_id}", json={**patient("Changed"), "id": kept_id}, headers=FHIR))
    assert_full(http.put("/fhir/Patient/by-put", json={**patient("Refused"), "id": "by-put"}, headers=FHIR))
    assert_full(http.post("/fhir", json=transaction("Refused"), headers=FHIR))
    # reads and searches keep working, each still recorded in the audit trail (the released reserve)
    for _ in range(20):
        read = http.get(f"/fhir/Patient/{kept_id}")
        assert read.status_code == 200, read.text
        assert read.json()["name"][0]["family"] == "Before"
    assert families(http) == {"Before"}
    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert "full" in ready.json()["checks"]["disk"]

    filler.unlink()
    # no restart: the next write finds the room, takes the reserve again and succeeds
    made = http.post("/fhir/Patient", json=patient("After"), headers=FHIR)
    assert made.status_code == 201, made.text
    assert http.put(f"/fhir/Patient/{kept_id}", json={**patient("Changed"), "id": kept_id},
                    headers=FHIR).status_code == 200
    assert http.post("/fhir", json=transaction("InBundle"), headers=FHIR).status_code == 200
    assert families(http) == {"Changed", "After", "InBundle"}
    assert http.get("/fhir/Patient/by-put").status_code == 404
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["disk"] == "ok"
    verified = http.post("/fhir/$verify-audit", json={"resourceType": "Parameters"}, headers=FHIR)
    assert verified.status_code == 200, verified.text
    assert verified.json()["parameter"][0] == {"name": "result", "valueBoolean": True}
    checked = verified.json()["parameter"][1]["valueInteger"]
    assert checked >= 30  # the reads while the disk was full were recorded too


def test_no_file_is_damaged_by_the_full_disk(small_disk: Path) -> None:
    folder = small_disk
    with live_server(folder) as http:
        for n in range(5):
            assert http.post("/fhir/Patient", json=patient(f"P{n}"), headers=FHIR).status_code == 201
        fill_all(http, folder)
        for n in range(5):
            refused = http.post("/fhir/Patient", json=patient(f"Big{n}" + "x" * 60_000), headers=FHIR)
            assert refused.status_code == 507, refused.text
            assert http.get("/fhir/Patient", params={"_count": "3"}).status_code == 200
    # the server stopped with the disk still full; every file it wrote is whole
    files = sorted(p for p in folder.iterdir() if p.suffix in (".db", ".sqlite"))
    assert len(files) >= 2  # the store and its audit trail
    for path in files:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], path


def backend_client(folder: Path) -> tuple[str, str]:
    """(client_id, secret) of a backend client registered with the CLI in the server's auth file."""
    added = subprocess.run([sys.executable, "-m", "server", "clients", "add", "--name", "his", "--type",
                            "confidential-symmetric", "--scope", "system/*.cruds", "--ehr", "--json", "--db",
                            str(folder / "careloop.db")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           check=True)
    record = json.loads(added.stdout)
    return record["client_id"], record["client_secret"]


def test_with_authorization_on_tokens_are_issued_and_checked_while_the_disk_is_full(small_disk: Path) -> None:
    with live_server(small_disk, auth=True) as http:
        client = backend_client(small_disk)

        def token() -> httpx.Response:
            return http.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                             auth=client)

        first = token()
        assert first.status_code == 200, first.text
        bearer = {"authorization": f"Bearer {first.json()['access_token']}", **FHIR}
        kept = http.post("/fhir/Patient", json=patient("Before"), headers=bearer)
        assert kept.status_code == 201, kept.text
        filler = fill_all(http, small_disk)
        assert_full(http.post("/fhir/Patient", json=patient("Refused"), headers=bearer))
        assert http.get(f"/fhir/Patient/{kept.json()['id']}", headers=bearer).status_code == 200
        second = token()  # a token needs no write to the auth file; its AuditEvent uses the reserve
        assert second.status_code == 200, second.text
        filler.unlink()
        made = http.post("/fhir/Patient", json=patient("After"), headers=bearer)
        assert made.status_code == 201, made.text
        revoked = http.post("/auth/revoke", data={"token": second.json()["access_token"]}, auth=client)
        assert revoked.status_code == 200
        assert http.get("/fhir/Patient", headers={"authorization": f"Bearer {second.json()['access_token']}"}
                        ).status_code == 401
