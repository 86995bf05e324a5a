"""The audit store failing while the server runs: its disk fills up, requests answer 503 with no patient data and
/health says why; once there is room again the trail recovers by itself, and nothing answered is missing.

The audit file lives on a small tmpfs of its own that the test fills (a real ENOSPC from the kernel, which SQLite
reports as SQLITE_FULL); mounting needs root, so elsewhere the test is skipped and says so.
https://profiles.ihe.net/ITI/BALP/ (issue 29, mandatory audit)
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audit.conftest import auditor, request_id, trail
from tests.auth.conftest import open_world

pytestmark = pytest.mark.anyio


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "audit-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the disk to the last byte (ENOSPC ends the write)."""
    filler = disk / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


async def test_a_full_audit_disk_answers_503_then_recovers_by_itself(tmp_path: Path, seeded_database: Path,
                                                                     small_disk: Path) -> None:
    async with open_world(tmp_path, seeded_database, audit_db=str(small_disk / "fhir-audit.sqlite")) as world:
        alice = f"/fhir/Patient/{world.ids['alice']}"
        before = await world.client.get(alice, headers={**world.admin, "X-Request-Id": "before"})
        assert before.status_code == 200 and "Alpha" in before.text
        assert (await world.client.get("/health")).json() == {"status": "ok", "audit": "ok"}

        filler = _fill(small_disk)
        for n in range(3):  # every request while the disk is full: no data, and said so
            refused = await world.client.get(alice, headers={**world.admin, "X-Request-Id": f"full-{n}"})
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"].startswith("application/fhir+json")
            assert refused.headers["x-request-id"] == f"full-{n}" and refused.headers["retry-after"]
            outcome = refused.json()
            assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "transient"
            assert "audit trail cannot be written" in outcome["issue"][0]["diagnostics"]
            assert "Alpha" not in refused.text and world.ids["alice"] not in refused.text.replace(alice, "")
        searched = await world.client.get("/fhir/Patient", params={"name": "Alpha"}, headers=world.admin)
        assert searched.status_code == 503 and "Alpha" not in searched.text.split("diagnostics")[0]
        health = await world.client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and "audit store cannot be written" in health.json()["audit"]

        filler.unlink()  # room again: no restart, no operator action on the server
        after = await world.client.get(alice, headers={**world.admin, "X-Request-Id": "after"})
        assert after.status_code == 200 and "Alpha" in after.text
        assert (await world.client.get("/health")).json() == {"status": "ok", "audit": "ok"}

        recorded = {request_id(e) for e in await trail(world.client, await auditor(world), patient=world.ids["alice"])}
        assert {"before", "after"} <= recorded and not {"full-0", "full-1", "full-2"} & recorded
        verified = await world.client.post("/fhir/$verify-audit", json={"resourceType": "Parameters"},
                                           headers=await auditor(world))
        assert verified.status_code == 200, verified.text
        result = next(p for p in verified.json()["parameter"] if p["name"] == "result")
        assert result["valueBoolean"] is True, verified.text  # one unbroken chain across the failure
