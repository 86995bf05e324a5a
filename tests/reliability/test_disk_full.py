"""A live server whose data folder fills up: writes answer 507, reads keep working, nothing is damaged, and writes
resume by themselves once space returns (issue 34 item 2).

https://www.sqlite.org/rescode.html#full
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port, serving
from tests.reliability.conftest import fill

FHIR = {"content-type": "application/fhir+json"}
RESERVE_MIB = 4


@contextmanager
def live_server(folder: Path) -> Iterator[httpx.Client]:
    """A live server with its whole data folder (store, audit trail, reserve) in `folder`; a client at its root."""
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CARELOOP_AUTH": "off", "CARELOOP_LOG_LEVEL": "critical",
           "CARELOOP_DISK_RESERVE_MIB": str(RESERVE_MIB), "CARELOOP_TERMINOLOGY_SEED": "false",
           "CARELOOP_VALIDATION_WORKERS": "0"}
    with serving(port, folder / "careloop.db", env, f"{root}/fhir"), httpx.Client(base_url=root, timeout=30) as http:
        yield http


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

    filler = fill(folder)
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
        fill(folder)
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
