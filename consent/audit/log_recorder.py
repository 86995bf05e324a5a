"""The audit trail's writer on the audit log: group commit of the records of concurrent requests, one chain each.

A request hands its facts (plain references to what the audit edge already has) to `record_request` and awaits
it; one task takes everything queued, encodes each record (orjson), finds its index entries, links it into this
instance's hash chain, and appends them all with their entries in one transaction of the log; only then is each
request's future resolved. So a request is answered only after its record is durable and searchable, at one
commit per batch. Each server instance keeps a chain of its own (CARELOOP_INSTANCE_ID, else an id minted once and
kept in the audit file), so several processes on one log never interleave one chain.
https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from consent.audit.chain import GENESIS
from consent.audit.clock import instant as format_instant
from consent.audit.logstore import AuditLogStore
from consent.audit.recorder import AuditUnavailable, Sign
from consent.audit.records import EVENT, REQUEST, Facts, new_record
from consent.audit.rows import AuditRows
from resources.errors import Unavailable
from resources.ids import now_ms
from resources.search.dates import date_range
from resources.search.index import Indexer
from resources.store.audit_log.model import ChainMoved, CheckpointRow, NewRecord, StoredRecord
from resources.store.audit_log.sqlite import SqliteAuditLog
from resources.store.protocol import StoredResource

log = logging.getLogger("careloop.audit")
_RETRIES = 5  # renumberings of a batch when another process appended to the same chain meanwhile
Item = tuple[str, Any, int]  # (REQUEST, facts, recorded ms) or (EVENT, event, recorded ms)


@dataclass
class _Pending:
    items: list[Item]
    done: asyncio.Future[list[StoredRecord]]


class LogRecorder:
    """Appends audit records to the log in batches, chained per instance and periodically checkpointed."""

    def __init__(self, audit_log: SqliteAuditLog, indexer: Indexer, *, sign: Sign | None = None,
                 checkpoint_events: int = 1000, checkpoint_seconds: float = 60.0,
                 instance_id: str | None = None) -> None:
        self.log = audit_log
        self._rows = AuditRows(indexer)
        self.store = AuditLogStore(audit_log, self._rows)
        self.sign = sign
        self._every = checkpoint_events
        self._seconds = checkpoint_seconds
        self._configured_chain = instance_id
        self.chain = instance_id or ""
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.head = (0, GENESIS)  # (n, hash) of this instance's newest record
        self._unsigned = 0  # records since the last checkpoint
        self._checkpoint_at = time.monotonic()
        self._opened = False
        self.problem: str | None = None  # why the trail cannot be written (None: it can)

    @property
    def queue_depth(self) -> int:
        """Requests whose records wait to be written (the metrics' audit queue depth)."""
        return self._queue.qsize()

    @property
    def ready(self) -> bool:
        """True once the audit log is open."""
        return self._opened

    async def open(self) -> None:
        """Open the log and find this instance's chain head; a failure leaves the server up, the trail unavailable."""
        try:
            await self.log.open()
            self.chain = await self.log.instance(self._configured_chain)
            self.head = await self.log.head(self.chain) or (0, GENESIS)
        except Exception as exc:  # noqa: BLE001 - any failure to open makes the trail unavailable, never the server
            self.problem = f"the audit store cannot be opened ({exc.__class__.__name__}: {exc})"
            log.error("Audit trail unavailable: %s", self.problem)
        else:
            self._opened = True
            self.problem = None
            self._unsigned = 1 if self.head[0] else 0  # a restart signs the head it found at the next checkpoint
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop the writer after what is queued, then close the log."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._opened and self._unsigned and self.problem is None:
            try:
                await self._write([], force_checkpoint=True)
            except Exception:  # noqa: BLE001 - closing anyway; the next start signs the head
                log.exception("Final audit checkpoint failed")
        await self.log.close()

    async def _submit(self, items: list[Item]) -> list[StoredRecord]:
        if not self._opened:
            raise AuditUnavailable(self.problem or "the audit trail is not open")
        done: asyncio.Future[list[StoredRecord]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(items, done))
        return await done

    async def record_request(self, facts: Facts, recorded_ms: int) -> None:
        """Store one request's record durably in the chain; AuditUnavailable when the trail cannot be written."""
        await self._submit([(REQUEST, facts, recorded_ms)])

    async def record(self, events: list[dict[str, Any]]) -> None:
        """Store whole AuditEvents (the authorization server's own), one record each."""
        if events:
            await self._submit([(EVENT, event, _recorded(event)) for event in events])

    async def append(self, event: dict[str, Any]) -> StoredResource:
        """One client-supplied AuditEvent into the chain (resources.audit_sink.Appender)."""
        try:
            (stored,) = await self._submit([(EVENT, event, _recorded(event))])
        except AuditUnavailable as exc:
            raise Unavailable(f"The audit trail cannot be written: {exc}") from exc
        found = await self.store.member(stored, 0)
        assert found is not None
        return found

    def _wait(self) -> float | None:
        if not self._unsigned:
            return None
        return max(0.0, self._seconds - (time.monotonic() - self._checkpoint_at))

    async def _run(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), self._wait())
            except TimeoutError:
                try:
                    await self._write([], force_checkpoint=True)
                except Exception as exc:  # noqa: BLE001 - reported by health; retried at the next interval
                    self._failed(exc)
                    self._checkpoint_at = time.monotonic()
                continue
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                stored = await self._write([item for pending in batch for item in pending.items])
            except Exception as exc:  # noqa: BLE001 - every waiting request learns the trail failed
                self._failed(exc)
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(AuditUnavailable(self.problem or "write failed"))
                continue
            self.problem = None
            at = 0
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_result(stored[at:at + len(pending.items)])
                at += len(pending.items)

    def _failed(self, exc: Exception) -> None:
        self.problem = f"the audit store cannot be written ({exc.__class__.__name__}: {exc})"
        log.error("Audit trail unavailable: %s", self.problem)

    def _records(self, items: list[Item], written: int) -> list[NewRecord]:
        n, previous = self.head
        found = []
        for kind, payload, recorded in items:
            n += 1
            found.append(new_record(self.chain, n, previous, kind, payload, recorded, written, self._rows))
            previous = found[-1].hash
        return found

    async def _write(self, items: list[Item], force_checkpoint: bool = False) -> list[StoredRecord]:
        written = now_ms()
        for attempt in range(_RETRIES):
            records = self._records(items, written)
            n, head = (records[-1].n, records[-1].hash) if records else self.head
            unsigned = self._unsigned + len(records)
            due = unsigned >= self._every or (unsigned and time.monotonic() - self._checkpoint_at >= self._seconds
                                              ) or (force_checkpoint and unsigned)
            points = []
            if due and n:
                points.append(await self._checkpoint(n, head, format_instant(written)))
            if not records and not points:
                return []
            try:
                seqs = await self.log.append(records, points)
                break
            except ChainMoved:
                # another process writes under the same chain id (CARELOOP_INSTANCE_ID unset on several): go on
                # from the head it wrote, so the chain stays one line, serialised by the file's write lock
                if attempt == _RETRIES - 1:
                    raise
                self.head = await self.log.head(self.chain) or (0, GENESIS)
        self.head = (n, head)
        if due:
            self._unsigned = 0
            self._checkpoint_at = time.monotonic()
        else:
            self._unsigned = unsigned
        return [StoredRecord(seq, r.chain, r.n, r.recorded, r.members, r.previous, r.hash, r.body)
                for seq, r in zip(seqs, records, strict=True)]

    async def _checkpoint(self, n: int, head: str, recorded: str) -> CheckpointRow:
        claims = {"sub": "audit-chain", "chain": self.chain, "seq": n, "hash": head, "iat": int(time.time())}
        jws = await asyncio.to_thread(self.sign, claims) if self.sign is not None else None
        return CheckpointRow(self.chain, n, head, recorded, jws)


def _recorded(event: dict[str, Any]) -> int:
    """The instant a whole event says it happened (its `recorded`), else now."""
    found = date_range(str(event.get("recorded", "")))
    return found[0] if found is not None else now_ms()
