"""The audit trail's writer on a generic store (MongoDB): group commit of whole AuditEvents, chained in one order.

Requests hand their events to `record` and await it; one task takes everything queued, links each event into the
hash chain, writes them all in one transaction of the audit store, and only then resolves each request's future.
So a request is answered only after its events are durable, at one commit per batch rather than per request, and
a single writer keeps a single chain. https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from consent.audit.chain import GENESIS, Checkpoint, checkpoint_resource, link, link_of
from consent.audit.clock import instant as format_instant
from consent.audit.rows import AuditRows
from consent.audit.shapes import request_events
from resources.errors import Unavailable
from resources.ids import new_id, now_ms
from resources.search.index import Indexer
from resources.store.protocol import Store, StoredResource, Write

log = logging.getLogger("careloop.audit")
if TYPE_CHECKING:
    from consent.audit.records import Facts
Sign = Callable[[dict[str, Any]], str]  # claims -> compact JWS (the authorization server's key)
_SCAN = 64


class AuditUnavailable(Exception):
    """The audit trail cannot be written: the request must not be answered with data."""


@dataclass
class _Pending:
    events: list[dict[str, Any]]
    done: asyncio.Future[list[StoredResource]]


class AuditRecorder:
    """Appends AuditEvents to the audit store in batches, chained and periodically checkpointed."""

    def __init__(self, store: Store, indexer: Indexer, *, sign: Sign | None = None, checkpoint_events: int = 1000,
                 checkpoint_seconds: float = 60.0) -> None:
        self.store = store
        self._indexer = indexer
        self._rows = AuditRows(indexer)
        self.sign = sign
        self._every = checkpoint_events
        self._seconds = checkpoint_seconds
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.head = (0, GENESIS)  # (sequence, hash) of the newest event written
        self._unsigned = 0  # events since the last checkpoint
        self._checkpoint_at = time.monotonic()
        self._opened = False
        self.problem: str | None = None  # why the trail cannot be written (None: it can)

    @property
    def queue_depth(self) -> int:
        """Requests whose events wait to be written (the metrics' audit queue depth)."""
        return self._queue.qsize()

    @property
    def ready(self) -> bool:
        """True once the audit store is open."""
        return self._opened

    async def open(self) -> None:
        """Open the audit store and find the chain head; a failure leaves the server up and the trail unavailable."""
        try:
            await self.store.open()
            self.head = await self._find_head()
        except Exception as exc:  # noqa: BLE001 - any failure to open makes the trail unavailable, never the server
            self.problem = f"the audit store cannot be opened ({exc.__class__.__name__}: {exc})"
            log.error("Audit trail unavailable: %s", self.problem)
        else:
            self._opened = True
            self.problem = None
            self._unsigned = 1 if self.head[0] else 0  # a restart signs the head it found at the next checkpoint
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop the writer after what is queued, then close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._opened:
            if self._unsigned and self.problem is None:
                try:
                    await self._write([], force_checkpoint=True)
                except Exception:  # noqa: BLE001 - closing anyway; the next start signs the head
                    log.exception("Final audit checkpoint failed")
            await self.store.close()

    async def _find_head(self) -> tuple[int, str]:
        # the newest stored event: look back a little from the newest change, further when that window holds none
        last = await self.store.last_seq()
        span = _SCAN
        while True:
            after = max(0, last - span)
            newest = None
            cursor = after
            while cursor < last:
                page = await self.store.changes(cursor, last, ["AuditEvent"], 1000)
                if not page:
                    break
                newest, cursor = page[-1], page[-1].seq
            if newest is not None:
                chain = link_of(orjson.loads(newest.body or b"{}"))
                return (chain.sequence, chain.hash) if chain is not None else (0, GENESIS)
            if after == 0:
                return 0, GENESIS
            span *= 16

    async def record(self, events: list[dict[str, Any]]) -> list[StoredResource]:
        """Store the events durably in the chain; AuditUnavailable when the trail cannot be written."""
        if not events:
            return []
        if not self._opened:
            raise AuditUnavailable(self.problem or "the audit trail is not open")
        done: asyncio.Future[list[StoredResource]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(events, done))
        return await done

    async def record_request(self, facts: Facts, recorded_ms: int) -> None:
        """Store one request's BALP events (the generic store keeps each event whole)."""
        await self.record(request_events(*facts))

    async def append(self, event: dict[str, Any]) -> StoredResource:
        """One client-supplied AuditEvent into the chain (resources.audit_sink.Appender)."""
        try:
            return (await self.record([event]))[0]
        except AuditUnavailable as exc:
            raise Unavailable(f"The audit trail cannot be written: {exc}") from exc

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
                stored = await self._write([e for p in batch for e in p.events])
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
                    pending.done.set_result(stored[at:at + len(pending.events)])
                at += len(pending.events)

    def _failed(self, exc: Exception) -> None:
        self.problem = f"the audit store cannot be written ({exc.__class__.__name__}: {exc})"
        log.error("Audit trail unavailable: %s", self.problem)

    async def _write(self, events: list[dict[str, Any]], force_checkpoint: bool = False) -> list[StoredResource]:
        sequence, previous = self.head
        writes: list[Write] = []
        stored: list[StoredResource] = []
        at_ms = now_ms()
        instant = format_instant(at_ms)
        for event in events:
            resource = dict(event)
            resource["id"] = new_id()
            resource["meta"] = {**resource.get("meta", {}), "versionId": "1", "lastUpdated": instant}
            sequence += 1
            previous = link(resource, sequence, previous)
            body = orjson.dumps(resource)
            rows = self._rows.rows(resource)
            writes.append(Write("AuditEvent", resource["id"], 1, at_ms, "create", body, rows, 0, "POST"))
            stored.append(StoredResource("AuditEvent", resource["id"], 1, at_ms, False, body, "POST"))
        unsigned = self._unsigned + len(events)
        due = unsigned >= self._every or (
            unsigned and time.monotonic() - self._checkpoint_at >= self._seconds) or (force_checkpoint and unsigned)
        if due and sequence:
            point = await self._checkpoint(sequence, previous, instant)
            basic = checkpoint_resource(point)
            basic["id"] = new_id()
            basic["meta"] = {"versionId": "1", "lastUpdated": instant}
            writes.append(Write("Basic", basic["id"], 1, at_ms, "create", orjson.dumps(basic),
                                self._indexer.extract("Basic", basic), 0, "POST"))
        if not writes:
            return stored
        async with self.store.write_session() as session:
            await session.apply(writes)
        self.head = (sequence, previous)
        if due:
            self._unsigned = 0
            self._checkpoint_at = time.monotonic()
        else:
            self._unsigned = unsigned
        return stored

    async def _checkpoint(self, sequence: int, head: str, instant: str) -> Checkpoint:
        claims = {"sub": "audit-chain", "seq": sequence, "hash": head, "iat": int(time.time())}
        jws = await asyncio.to_thread(self.sign, claims) if self.sign is not None else None
        return Checkpoint(sequence, head, instant, jws)
