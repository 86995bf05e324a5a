"""Commits of other instances on one store, handed to this instance's commit listeners.

Caches kept from commit listeners (the Consent book, custom SearchParameters, device reading rules, revoked SMART
grants) follow this process's own writes at once; several instances on one store also need each other's. The
follower reads the change feed for those types every `poll_s` and hands what another instance committed to the
same listeners, as writes without index rows. Its own writes it recognises by (type, id, version) and skips.
https://hl7.org/fhir/R4B/subscription.html (the change feed), docs/operations.md (Scale out)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection

from resources.store.protocol import Store, StoredResource, Write

log = logging.getLogger("careloop.store")
FOLLOWED = frozenset({"Consent", "SearchParameter", "ObservationDefinition"})  # the types listeners keep caches of
POLL_S = 0.5  # another instance's Consent change applies here within this (plus one feed read)
_BATCH = 500
_OWN_KEPT = 10_000  # own writes remembered; a feed read that lags further than this delivers some twice (harmless)


def _write(change: StoredResource) -> Write:
    action = "delete" if change.deleted else ("create" if change.vid == 1 else "update")
    return Write(change.type, change.id, change.vid, change.updated_ms, action,
                 None if change.deleted else change.body, method=change.method)


class FeedFollower:
    """Polls the change feed for `types` and calls `deliver` with other instances' writes, oldest first."""

    def __init__(self, store: Store, deliver: Callable[[list[Write]], None], types: Collection[str] = FOLLOWED,
                 poll_s: float = POLL_S) -> None:
        self.store, self.deliver, self.types, self.poll_s = store, deliver, frozenset(types), poll_s
        self.position = 0
        self._own: set[tuple[str, str, int]] = set()
        self._task: asyncio.Task[None] | None = None

    def on_commit(self, writes: list[Write]) -> None:
        """A commit of this process (registered as a commit listener): its writes are not delivered again."""
        if len(self._own) > _OWN_KEPT:
            self._own.clear()
        self._own.update((w.type, w.id, w.vid) for w in writes if w.type in self.types)

    async def start(self) -> None:
        """Follow from the newest change (what was committed before, the caches loaded at start)."""
        self.position = await self.store.last_seq()
        self._task = asyncio.create_task(self._loop(), name="feed-follower")

    async def close(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def catch_up(self) -> int:
        """Deliver every change of another instance up to now; how many were delivered."""
        until, delivered = await self.store.last_seq(), 0
        while self.position < until:
            batch = await self.store.changes(self.position, until, self.types, _BATCH)
            remote = []
            for change in batch:
                key = (change.type, change.id, change.vid)
                if key in self._own:
                    self._own.discard(key)
                else:
                    remote.append(_write(change))
            if remote:
                self.deliver(remote)
                delivered += len(remote)
            self.position = batch[-1].seq if len(batch) == _BATCH else until
        return delivered

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep following: a failed read is tried again at the next poll
                log.exception("Following other instances' commits failed; trying again")
