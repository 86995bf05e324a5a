"""Audit retention: events older than the retention period are exported to NDJSON, then removed, never silently.

`export_expired` writes every AuditEvent recorded before the cutoff (now minus the period), one per line, as
stored, and a manifest beside it: the cutoff, the count, the file's SHA-256 and the hash chain's signed
checkpoints (`chain_checkpoints`), so the export stays verifiable; on the audit log also the records the events
were made of (`<file>.records.ndjson`: each record's chain, number, instant, previous hash, hash and bytes, which
`consent.audit.chain.record_hash` checks). `purge_expired` removes exactly the events
of such a file, and only when the file is whole and complete: unchanged since export, every event in it still
stored as exported, and no event recorded before its cutoff missing from it.
https://hl7.org/fhir/R4B/auditevent.html, https://github.com/ndjson/ndjson-spec
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from consent.audit.chain import checkpoints, link_of
from consent.audit.logstore import AuditLogStore
from consent.audit.records import parse_id
from resources.errors import Conflict
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import date_range, format_instant
from resources.search.parse import parse_search
from resources.store.routed import RoutedStore

log = logging.getLogger("careloop.audit")
FORMAT = "careloop-audit-export/1"
DAY_MS = 86_400_000
_PAGE = 2000
_REMOVE = 5000  # events removed per store transaction: a long purge never holds the writer for long


class RetentionError(Exception):
    """An export or purge that must not go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class Export:
    """What one export wrote."""

    path: Path
    manifest: Path
    count: int
    cutoff: str
    sha256: str


def records_path(path: Path) -> Path:
    """The file of the audit records beside an export file (the audit log)."""
    return path.with_name(path.name + ".records.ndjson")


async def _export_records(log_store: AuditLogStore, seqs: list[int], path: Path) -> dict[str, int]:
    """Write the records of these sequences (one JSON line each, bytes in base64); the last number per chain."""
    lasts: dict[str, int] = {}
    lines = []
    for at in range(0, len(seqs), _PAGE):
        found = await log_store.log.records(seqs[at:at + _PAGE])
        for seq in seqs[at:at + _PAGE]:
            record = found.get(seq)
            if record is None:
                continue
            lasts[record.chain] = max(lasts.get(record.chain, 0), record.n)
            lines.append(orjson.dumps({"seq": record.seq, "chain": record.chain, "n": record.n,
                                       "recorded": record.recorded, "members": record.members,
                                       "previous": record.previous, "hash": record.hash,
                                       "body": base64.b64encode(record.body).decode()}) + b"\n")
    await asyncio.to_thread(_write_durably, path, b"".join(lines))
    return lasts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_path(path: Path) -> Path:
    """The manifest beside an export file."""
    return path.with_name(path.name + ".manifest.json")


def cutoff_ms(retention_days: int, now: int | None = None) -> int:
    """The instant before which events are expired."""
    return (now_ms() if now is None else now) - retention_days * DAY_MS


async def chain_checkpoints(repository: Repository, last_sequence: int | dict[str, int]) -> list[dict[str, Any]]:
    """The chain's checkpoints up to the first one that covers the event at `last_sequence` (oldest first).

    The export keeps them in its manifest so the exported events can be verified after they are removed: the
    events' hashes link from the first to the last, and each checkpoint's JWS (the server's key, /auth/jwks)
    signs the hash at its sequence. When no checkpoint covers the last event yet, every one there is is kept.
    On the audit log, `last_sequence` is the last record exported of each writer instance's chain, and each
    checkpoint names its chain.
    """
    log_store = _log_store(repository)
    if log_store is not None:
        lasts = last_sequence if isinstance(last_sequence, dict) else {}
        found: list[dict[str, Any]] = []
        for chain, last in sorted(lasts.items()):
            points = await log_store.log.checkpoints(chain)
            covering = next((p.n for p in points if p.n >= last), None)
            found.extend({"chain": chain, "sequence": p.n, "hash": p.hash, "recorded": p.recorded, "jws": p.jws}
                         for p in points if covering is None or p.n <= covering)
        return found
    last = last_sequence if isinstance(last_sequence, int) else max(last_sequence.values(), default=0)
    if last <= 0:
        return []
    store = repository.store
    if isinstance(store, RoutedStore) and "AuditEvent" in store.types:
        store = store.side  # the checkpoints are kept with the trail, in the audit store
    kept = await checkpoints(store)
    covering = next((point.sequence for point in kept if point.sequence >= last), None)
    return [{"sequence": point.sequence, "hash": point.hash, "recorded": point.recorded, "jws": point.jws}
            for point in kept if covering is None or point.sequence <= covering]


def _log_store(repository: Repository) -> AuditLogStore | None:
    store = repository.store
    if isinstance(store, RoutedStore) and isinstance(store.side, AuditLogStore):
        return store.side
    return None


async def _expired(repository: Repository, before_ms: int) -> AsyncIterator[tuple[str, bytes]]:
    """(id, stored body) of every AuditEvent recorded before the instant, in row order (no sort: cursor paging)."""
    query = parse_search("AuditEvent", [("date", f"lt{format_instant(before_ms)}")], repository.registry,
                         strict=True).query
    cursor: int | None = None
    while True:
        page = await repository.store.search(replace(query, count=_PAGE, cursor=cursor))
        for found in page.resources:
            if found.body:
                yield found.id, found.body
        if page.next_cursor is None:
            return
        cursor = int(page.next_cursor)


async def export_expired(repository: Repository, out: Path, retention_days: int,
                         now: int | None = None) -> Export:
    """Write the expired events to `out` (NDJSON) and its manifest; refuses to overwrite an earlier export."""
    manifest = manifest_path(out)
    if out.exists() or manifest.exists():
        raise RetentionError(f"{out} (or its manifest) exists already; choose a new file: an export is never "
                             f"overwritten")
    before = cutoff_ms(retention_days, now)
    partial = out.with_name(out.name + ".partial")
    digest, count, last_sequence = hashlib.sha256(), 0, 0
    seqs: set[int] = set()
    handle = await asyncio.to_thread(partial.open, "wb")
    try:
        lines: list[bytes] = []
        async for id_, body in _expired(repository, before):
            line = body + b"\n"
            digest.update(line)
            chain = link_of(orjson.loads(body))
            last_sequence = max(last_sequence, chain.sequence if chain is not None else 0)
            found = parse_id(id_)
            if found is not None:
                seqs.add(found[0])
            lines.append(line)
            count += 1
            if len(lines) >= _PAGE:
                await asyncio.to_thread(handle.writelines, lines)
                lines = []
        await asyncio.to_thread(_finish, handle, lines)
    except BaseException:
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(partial.unlink, True)
        raise
    description = {"format": FORMAT, "file": out.name, "cutoff": format_instant(before),
                   "retention_days": retention_days, "exported_at": format_instant(now_ms()), "count": count,
                   "sha256": digest.hexdigest(), "last_sequence": last_sequence}
    log_store = _log_store(repository)
    if log_store is not None:  # the records the events were made of, so their chain can be checked without the log
        lasts = await _export_records(log_store, sorted(seqs), records_path(out))
        description.update({"records": records_path(out).name, "chains": lasts,
                            "records_sha256": await asyncio.to_thread(_sha256, records_path(out)),
                            "checkpoints": await chain_checkpoints(repository, lasts)})
    else:
        description["checkpoints"] = await chain_checkpoints(repository, last_sequence)
    # the data file appears under its name only once whole, and its manifest only after it
    await asyncio.to_thread(partial.replace, out)
    await asyncio.to_thread(_write_durably, manifest, orjson.dumps(description, option=orjson.OPT_INDENT_2))
    log.warning("Exported %d audit events recorded before %s to %s", count, description["cutoff"], out)
    return Export(out, manifest, count, str(description["cutoff"]), digest.hexdigest())


def _finish(handle: Any, lines: list[bytes]) -> None:
    handle.writelines(lines)
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _read_export(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The manifest and the file's events (id -> SHA-256 of its line); RetentionError unless they agree."""
    manifest = manifest_path(path)
    if not path.exists() or not manifest.exists():
        raise RetentionError(f"{path} and its manifest {manifest.name} are both needed: run export-expired first")
    try:
        described = orjson.loads(manifest.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise RetentionError(f"{manifest} is not a manifest of an export: {exc}") from exc
    if not isinstance(described, dict) or described.get("format") != FORMAT:
        raise RetentionError(f"{manifest} is not a manifest of an export ({FORMAT})")
    cutoff = date_range(str(described.get("cutoff")))
    if cutoff is None:
        raise RetentionError(f"{manifest} has no valid cutoff")
    digest, events = hashlib.sha256(), {}
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            digest.update(line)
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise RetentionError(f"{path}, line {number}: not JSON ({exc})") from exc
            recorded = date_range(str(event.get("recorded"))) if isinstance(event, dict) else None
            if not isinstance(event, dict) or event.get("resourceType") != "AuditEvent" or not event.get("id"):
                raise RetentionError(f"{path}, line {number}: not an AuditEvent with an id")
            if recorded is None or recorded[0] >= cutoff[0]:
                raise RetentionError(f"{path}, line {number}: AuditEvent/{event['id']} is not older than the "
                                     f"cutoff {described['cutoff']}")
            events[str(event["id"])] = hashlib.sha256(line.rstrip(b"\n")).hexdigest()
    if digest.hexdigest() != described.get("sha256") or len(events) != described.get("count"):
        raise RetentionError(f"{path} is not the file that was exported (its content or length changed since; "
                             f"the manifest says {described.get('count')} events, SHA-256 {described.get('sha256')})")
    return described, events


@dataclass(frozen=True)
class Purge:
    """What one purge removed."""

    removed: int
    already_gone: int
    cutoff: str


async def purge_expired(repository: Repository, confirm: Path, retention_days: int,
                        now: int | None = None) -> Purge:
    """Remove exactly the events of an export, once it is shown whole and complete against the store."""
    described, exported = await asyncio.to_thread(_read_export, confirm)
    cutoff = date_range(str(described["cutoff"]))
    assert cutoff is not None
    if cutoff[0] > cutoff_ms(retention_days, now):
        raise RetentionError(f"The export's cutoff {described['cutoff']} is inside the retention period of "
                             f"{retention_days} days (CARELOOP_AUDIT_RETENTION_DAYS): its events are not expired")
    missing, changed, stored = 0, [], set()
    async for id_, body in _expired(repository, cutoff[0]):
        stored.add(id_)
        found = exported.get(id_)
        if found is None:
            missing += 1
        elif found != hashlib.sha256(body).hexdigest():
            changed.append(id_)
    if missing:
        raise RetentionError(f"The export is incomplete: {missing} events recorded before {described['cutoff']} "
                             f"are not in {confirm.name}; export again and purge with the new file")
    if changed:
        raise RetentionError(f"{len(changed)} events differ from their export (first: AuditEvent/{changed[0]}); "
                             f"nothing was removed")
    present = [id_ for id_ in exported if id_ in stored]
    removed = 0
    try:
        for start in range(0, len(present), _REMOVE):
            removed += await repository.store.expunge("AuditEvent", present[start:start + _REMOVE])
    except Conflict as exc:
        raise RetentionError(f"{removed} events removed, then stopped: {exc.diagnostics}") from exc
    finally:
        if removed:
            log.warning("Removed %d audit events recorded before %s (exported to %s, SHA-256 %s)", removed,
                        described["cutoff"], confirm, described["sha256"])
    return Purge(removed, len(exported) - len(present), str(described["cutoff"]))
