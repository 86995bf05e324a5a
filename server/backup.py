"""`careloop backup` and `careloop restore`: the SQLite files of one server in one archive, taken while it serves.

Each file (the FHIR store, then the audit trail, then the authorization server's file with its signing keys) is
copied with SQLite's online backup API in one step, which reads one consistent snapshot while writers go on
(WAL). The store is copied first: a write acknowledged before its snapshot had its AuditEvents written before
its answer, so they are in the audit snapshot taken after it. https://www.sqlite.org/backup.html
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.auth.service import auth_path
from server.settings import Settings

FORMAT = 1
PARTS = ("store", "audit", "auth")  # in the order they are copied


class BackupError(Exception):
    """A backup or restore that cannot be done, with the reason for the operator."""


def files_of(settings: Settings) -> dict[str, Path]:
    """The store, audit and auth files of the settings, by part."""
    store = Path(settings.sqlite_path)
    audit = Path(settings.audit_db) if settings.audit_db else Path(str(store.with_suffix("")) + "-audit.sqlite")
    return {"store": store, "audit": audit, "auth": Path(auth_path(settings))}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _snapshot(source: Path, target: Path) -> str:
    """Copy one database with the online backup API (one step: one snapshot); its integrity_check answer."""
    src = sqlite3.connect(source, timeout=60)
    try:
        dest = sqlite3.connect(target)
        try:
            src.backup(dest)  # pages=-1: every page in one step, under one read transaction
            return str(dest.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            dest.close()
    finally:
        src.close()


def backup(settings: Settings, out: Path) -> dict[str, Any]:
    """Write the archive `out` (a new file); the manifest it holds."""
    if settings.store != "sqlite" or settings.sqlite_path == ":memory:":
        raise BackupError("backup copies SQLite files; for MongoDB use mongodump --oplog (docs/operations.md)")
    if out.exists():
        raise BackupError(f"{out} exists: a backup never overwrites one")
    files = files_of(settings)
    if not files["store"].exists():
        raise BackupError(f"no store at {files['store']}")
    manifest: dict[str, Any] = {"format": FORMAT, "made": datetime.now(UTC).isoformat(timespec="seconds"),
                                "files": {}}
    with tempfile.TemporaryDirectory(dir=out.parent or ".") as tmp:
        for part in PARTS:
            if not files[part].exists():  # audit off, or no client ever registered
                continue
            copy = Path(tmp) / f"{part}.sqlite"
            check = _snapshot(files[part], copy)
            if check != "ok":
                raise BackupError(f"the {part} copy fails integrity_check: {check}")
            manifest["files"][part] = {"sha256": _sha256(copy), "bytes": copy.stat().st_size}
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w") as archive:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
            for part in manifest["files"]:
                archive.add(Path(tmp) / f"{part}.sqlite", arcname=f"{part}.sqlite")
        os.replace(partial, out)  # whole or absent: a crash leaves only the .partial file
    return manifest


def restore(archive_path: Path, settings: Settings) -> dict[str, Any]:
    """Unpack an archive into the (new) files of the settings; refuses to replace any existing file."""
    files = files_of(settings)
    present = [str(p) for p in files.values() if p.exists()]
    if present:
        raise BackupError(f"restore goes into a new data folder; these exist: {', '.join(present)}")
    if not archive_path.is_file() or not tarfile.is_tarfile(archive_path):
        raise BackupError(f"{archive_path} is not a CareLoop backup")
    files["store"].parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "r") as archive, tempfile.TemporaryDirectory(dir=files["store"].parent) as tmp:
        try:
            member = archive.extractfile("manifest.json")
            manifest: dict[str, Any] = json.loads(member.read()) if member is not None else {}
        except (KeyError, ValueError) as exc:
            raise BackupError(f"{archive_path} has no readable manifest.json") from exc
        if manifest.get("format") != FORMAT or "store" not in manifest.get("files", {}):
            raise BackupError(f"{archive_path} is not a CareLoop backup of format {FORMAT}")
        for part, facts in manifest["files"].items():
            if part not in PARTS:
                raise BackupError(f"unknown part {part!r} in the manifest")
            archive.extract(f"{part}.sqlite", tmp, filter="data")
            copy = Path(tmp) / f"{part}.sqlite"
            if _sha256(copy) != facts["sha256"]:
                raise BackupError(f"{part}.sqlite does not match its checksum: the archive is damaged")
        for part in manifest["files"]:
            files[part].parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / f"{part}.sqlite", files[part])
    return manifest
