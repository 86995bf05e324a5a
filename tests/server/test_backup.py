"""Backup and restore (issue 34, item 3): an archive taken while a live server takes writes restores into a new
data folder where every acknowledged write is found and the audit chain (signed checkpoints) still verifies.

https://www.sqlite.org/backup.html
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from resources.models import resource_types
from server.auth.service import AuthService
from server.backup import BackupError, files_of, restore
from server.settings import Settings
from tests.conftest import free_port, serving

ROOT = Path(__file__).parent.parent.parent


def careloop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=300)


def backend(db: Path, base: str, scope: str = "system/*.cruds") -> tuple[str, str]:
    auth = AuthService.open(Settings(sqlite_path=str(db), base_url=base), frozenset(resource_types()))
    try:
        record, secret = auth.add_client("clinic app", "confidential-symmetric", scope, [], ehr=True)
    finally:
        auth.close()
    assert secret is not None
    return record.client_id, secret


def token(origin: str, client: tuple[str, str], scope: str = "system/*.cruds") -> dict[str, str]:
    found = httpx.post(f"{origin}/auth/token", data={"grant_type": "client_credentials", "scope": scope},
                       auth=client, timeout=30)
    assert found.status_code == 200, found.text
    return {"Authorization": f"Bearer {found.json()['access_token']}", "content-type": "application/fhir+json"}


def writer(base: str, headers: dict[str, str], stop: threading.Event, acknowledged: list[str], name: str) -> None:
    """Create Patients until told to stop; note the id of each one the server acknowledged (201)."""
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        n = 0
        while not stop.is_set():
            n += 1
            made = client.post("/Patient", content=orjson.dumps({
                "resourceType": "Patient", "identifier": [{"system": "urn:test", "value": f"{name}-{n}"}]}))
            if made.status_code == 201:
                acknowledged.append(made.json()["id"])


@pytest.mark.slow
def test_backup_under_load_restores_every_acknowledged_write(tmp_path: Path, seeded_database: Path) -> None:
    db = tmp_path / "live" / "careloop.db"
    db.parent.mkdir()
    shutil.copyfile(seeded_database, db)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    base = f"{origin}/fhir"
    client = backend(db, base)
    auditor = backend(db, base, "system/AuditEvent.rs")  # wildcards do not reach the audit trail
    env = {**os.environ, "CARELOOP_LOG_LEVEL": "warning", "CARELOOP_BASE_URL": base,
           "CARELOOP_VALIDATION_WORKERS": "0", "CARELOOP_AUDIT_CHECKPOINT_EVENTS": "25"}
    archive = tmp_path / "nightly.tar"
    acknowledged: list[list[str]] = [[], []]
    with serving(port, db, env, base):
        headers = token(origin, client)
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(base, headers, stop, acknowledged[i], f"w{i}"))
                   for i in range(2)]
        for t in threads:
            t.start()
        try:
            while sum(map(len, acknowledged)) < 40:  # writes are flowing before and while the backup runs
                threading.Event().wait(0.1)
            before = [list(a) for a in acknowledged]
            done = careloop("backup", str(archive), "--db", str(db), env=env)
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert sum(map(len, acknowledged)) > sum(map(len, before))  # writes went on during the backup
    with tarfile.open(archive) as found:
        assert sorted(found.getnames()) == ["audit.sqlite", "auth.sqlite", "manifest.json", "store.sqlite"]

    restored = tmp_path / "restored" / "careloop.db"
    done = careloop("restore", str(archive), "--db", str(restored), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(p.exists() for p in files_of(Settings(sqlite_path=str(restored))).values())
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    base = f"{origin}/fhir"
    with serving(port, restored, {**env, "CARELOOP_BASE_URL": base}, base):
        headers = token(origin, client)  # the client and the signing keys came back with the auth file
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            for ids in before:  # acknowledged before the backup started: each must be there
                for id_ in ids:
                    assert http.get(f"/Patient/{id_}").status_code == 200, id_
            verified = http.post("/$verify-audit", json={"resourceType": "Parameters"},
                                 headers=token(origin, auditor, "system/AuditEvent.rs"))
            assert verified.status_code == 200, verified.text
            report: dict[str, Any] = verified.json()
    result = {p["name"]: p for p in report["parameter"]}
    assert result["result"]["valueBoolean"] is True, report
    assert result["checked"]["valueInteger"] > 40
    signature = {p["name"]: p for p in result["checkpoint"]["part"]}["signature"]["valueCode"]
    assert signature == "valid", report


def test_restore_refuses_an_existing_folder_and_a_damaged_archive(tmp_path: Path, seeded_database: Path) -> None:
    db = tmp_path / "a" / "careloop.db"
    db.parent.mkdir()
    shutil.copyfile(seeded_database, db)
    archive = tmp_path / "one.tar"
    done = careloop("backup", str(archive), "--db", str(db))
    assert done.returncode == 0, done.stderr
    again = careloop("backup", str(archive), "--db", str(db))
    assert again.returncode == 1 and "never overwrites" in again.stdout
    with pytest.raises(BackupError, match="new data folder"):
        restore(archive, Settings(sqlite_path=str(db)))
    damaged = tmp_path / "damaged.tar"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the store copy
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="checksum|not a CareLoop backup"):
        restore(damaged, Settings(sqlite_path=str(tmp_path / "b" / "careloop.db")))
    assert not (tmp_path / "b" / "careloop.db").exists()
    with pytest.raises(BackupError, match="not a CareLoop backup"):
        restore(db, Settings(sqlite_path=str(tmp_path / "c" / "careloop.db")))
