"""Audit retention through the CLI: export the expired events to NDJSON, then remove exactly those, never silently."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench.audit_shapes import Who, consent_event, rest_event
from server.settings import Settings
from tests.conftest import FHIR_JSON, body

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent.parent
WHO = Who("ehr-app", "Practitioner/dr1", "clinician", ("TREAT",), "t1")
YEAR_MS = 365 * 86_400_000
OLD = 1_514_764_800_000  # 2018-01-01: older than the default six years
RECENT = 1_767_225_600_000  # 2026-01-01


def run(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", "audit", *args, "--db", settings.sqlite_path], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CARELOOP_AUTH": "off", **env})


async def _post(client: httpx.AsyncClient, event: dict[str, Any]) -> str:
    response = await client.post("/fhir/AuditEvent", content=body(event), headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
async def trail(client: httpx.AsyncClient) -> dict[str, list[str]]:
    """Five expired events (2018) and three kept ones (2026)."""
    old = [await _post(client, rest_event("read", WHO, OLD + n * 86_400_000, f"o{n}", patient="p1"))
           for n in range(4)]
    old.append(await _post(client, consent_event(WHO, OLD + YEAR_MS, "o9", "p1", permit=False)))
    kept = [await _post(client, rest_event("read", WHO, RECENT + n, f"k{n}", patient="p1")) for n in range(3)]
    return {"old": old, "kept": kept}


async def _ids(client: httpx.AsyncClient, query: str) -> set[str]:
    response = await client.get(f"/fhir/AuditEvent?{query}&_count=100")
    assert response.status_code == 200
    return {e["resource"]["id"] for e in response.json().get("entry", [])}


async def test_export_then_purge_removes_exactly_the_exported_events(client: httpx.AsyncClient, settings: Settings,
                                                                     trail: dict[str, list[str]],
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "expired.ndjson"
    exported = run(settings, "export-expired", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "exported 5 audit events" in exported.stdout and "nothing was removed" in exported.stdout
    lines = out.read_bytes().splitlines()
    events = [orjson.loads(line) for line in lines]
    assert sorted(e["id"] for e in events) == sorted(trail["old"])
    assert all(e["resourceType"] == "AuditEvent" for e in events)
    manifest = json.loads((tmp_path / "expired.ndjson.manifest.json").read_text())
    assert manifest["count"] == 5 and manifest["retention_days"] == 2190
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["checkpoints"] == []  # none signed yet (fewer events than one interval): tests/audit covers them
    assert await _ids(client, "date=lt2020") == set(trail["old"])  # the export removed nothing

    again = run(settings, "export-expired", "--out", str(out))
    assert again.returncode == 1 and "never overwritten" in again.stderr

    purged = run(settings, "purge-expired", "--confirm", str(out))
    assert purged.returncode == 0, purged.stderr
    assert "removed 5 audit events recorded before" in purged.stdout
    assert await _ids(client, "patient=p1&subtype=read") == set(trail["kept"])  # not the Query events of these checks
    for gone in trail["old"]:
        assert (await client.get(f"/fhir/AuditEvent/{gone}")).status_code == 404
        assert (await client.get(f"/fhir/AuditEvent/{gone}/_history/1")).status_code == 404
    # once more: the events are gone already, nothing else is touched
    repeated = run(settings, "purge-expired", "--confirm", str(out))
    assert repeated.returncode == 0 and "removed 0 audit events" in repeated.stdout
    assert "(5 were removed before)" in repeated.stdout
    assert await _ids(client, "patient=p1&subtype=read") == set(trail["kept"])  # not the Query events of these checks


def _tamper(path: Path, keep_manifest_hash: bool) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    event = orjson.loads(lines[0])
    event["outcomeDesc"] = "edited after export"
    lines[0] = orjson.dumps(event) + b"\n"
    path.write_bytes(b"".join(lines))
    if not keep_manifest_hash:
        manifest = path.with_name(path.name + ".manifest.json")
        described = json.loads(manifest.read_text())
        described["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest.write_text(json.dumps(described))


async def _refused(client: httpx.AsyncClient, settings: Settings, out: Path, words: str, **env: str) -> None:
    purged = run(settings, "purge-expired", "--confirm", str(out), **env)
    assert purged.returncode == 1, purged.stdout
    assert words in purged.stderr, purged.stderr
    assert purged.stdout == ""


@pytest.mark.parametrize("case", ["no manifest", "line dropped", "line edited", "edited with a new hash",
                                  "event added since", "retention lengthened", "no export at all"])
async def test_purge_refuses_and_removes_nothing(client: httpx.AsyncClient, settings: Settings,
                                                 trail: dict[str, list[str]], tmp_path: Path, case: str) -> None:
    out = tmp_path / "expired.ndjson"
    assert run(settings, "export-expired", "--out", str(out)).returncode == 0
    env: dict[str, str] = {}
    words = {"no manifest": "run export-expired first", "line dropped": "not the file that was exported",
             "line edited": "not the file that was exported", "edited with a new hash": "differ from their export",
             "event added since": "export is incomplete: 1 events", "retention lengthened": "not expired",
             "no export at all": "run export-expired first"}[case]
    if case == "no manifest":
        (tmp_path / "expired.ndjson.manifest.json").unlink()
    elif case == "line dropped":
        out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[1:]))
    elif case in ("line edited", "edited with a new hash"):
        _tamper(out, keep_manifest_hash=case == "line edited")
    elif case == "event added since":  # e.g. a device gateway's late event, recorded long ago
        await _post(client, rest_event("read", WHO, OLD + 5, "late", patient="p2"))
    elif case == "retention lengthened":
        env["CARELOOP_AUDIT_RETENTION_DAYS"] = str(20 * 365)
    elif case == "no export at all":
        out = tmp_path / "never-written.ndjson"
    await _refused(client, settings, out, words, **env)
    assert set(trail["old"]) <= await _ids(client, "date=lt2020")


async def test_retention_period_is_configurable(client: httpx.AsyncClient, settings: Settings,
                                                trail: dict[str, list[str]], tmp_path: Path) -> None:
    # a longer period keeps the 2018 events (nothing to export); a period under a day is refused
    out = tmp_path / "short.ndjson"
    exported = run(settings, "export-expired", "--out", str(out), CARELOOP_AUDIT_RETENTION_DAYS="30000")
    assert exported.returncode == 0 and "exported 0 audit events" in exported.stdout
    assert out.read_bytes() == b""
    bad = run(settings, "export-expired", "--out", str(tmp_path / "x.ndjson"), CARELOOP_AUDIT_RETENTION_DAYS="0")
    assert bad.returncode != 0 and "audit_retention_days" in bad.stderr
