"""A live server whose disk fails under it (an ext4 file system shut down by its ioctl, as on a dying disk): every
request answers 503 with an OperationOutcome, never 500; after a remount nothing is damaged and the data written
before the failure is served again (issue 34 item 2).

https://www.sqlite.org/rescode.html#ioerr
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.test_disk_full import FHIR, backend_client, live_server, patient

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32); flag 0: flush what was written, then fail every I/O


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(image, mount point): a 48 MiB ext4 image mounted on a loop device (root only), always unmounted."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("an ext4 loop mount needs root and mkfs.ext4")
    image, folder = tmp_path / "disk.img", tmp_path / "data"
    folder.mkdir()
    with open(image, "wb") as file:
        file.truncate(48 * 1024 * 1024)
    made = run("mkfs.ext4", "-q", "-F", str(image))
    mounted = run("mount", "-o", "loop", str(image), str(folder)) if made.returncode == 0 else made
    if mounted.returncode != 0:
        pytest.skip(f"cannot make and mount an ext4 loop device here: {mounted.stderr.strip()}")
    try:
        yield image, folder
    finally:
        if run("umount", str(folder)).returncode != 0:
            run("umount", "-l", str(folder))


def fail_disk(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", 0))
    finally:
        os.close(fd)


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers.get("retry-after")
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] in ("no-store", "transient")


def test_io_error_answers_503_and_damages_nothing(ext4: tuple[Path, Path]) -> None:
    image, folder = ext4
    with live_server(folder, auth=True) as http:
        client = backend_client(folder)
        token = http.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                          auth=client).json()["access_token"]
        bearer = {"authorization": f"Bearer {token}", **FHIR}
        made = http.post("/fhir/Patient", json=patient("Before"), headers=bearer)
        assert made.status_code == 201, made.text
        kept = made.json()["id"]
        fail_disk(folder)
        assert_unavailable(http.post("/fhir/Patient", json=patient("Refused"), headers=bearer))
        assert_unavailable(http.put(f"/fhir/Patient/{kept}", json={**patient("Changed"), "id": kept},
                                    headers=bearer))
        # mandatory audit: a read that cannot be recorded is not answered with data
        assert_unavailable(http.get(f"/fhir/Patient/{kept}", headers=bearer))
        assert_unavailable(http.get("/fhir/Patient", headers=bearer))
        # the authorization server's own file fails too: OAuth's error, not a FHIR 500
        revoked = http.post("/auth/revoke", data={"token": token}, auth=client)
        assert revoked.status_code == 503, revoked.text
        assert revoked.json()["error"] == "temporarily_unavailable" and revoked.headers["retry-after"]
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["audit"] != "ok"
    assert run("umount", str(folder)).returncode == 0
    assert run("mount", "-o", "loop", str(image), str(folder)).returncode == 0
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".db", ".sqlite")):
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], path
    with live_server(folder, auth=True) as http:
        token = http.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                          auth=client).json()["access_token"]
        bearer = {"authorization": f"Bearer {token}", **FHIR}
        read = http.get(f"/fhir/Patient/{kept}", headers=bearer)
        assert read.status_code == 200, read.text
        assert read.json()["name"][0]["family"] == "Before"
        assert http.post("/fhir/Patient", json=patient("After"), headers=bearer).status_code == 201
