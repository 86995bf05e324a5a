"""One background job's lease as its worker sees it: taken, renewed before it runs out, given up at the end.

Several instances on one store each run every background loop; only the one holding the job's lease does the
work, and when it dies its lease runs out and another instance takes over from the durable positions in the store.
Each lease object is its own holder (a restarted instance is a new holder: it waits for its old lease to run out,
and a paused, not dead, old process stops at its next renewal).
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from resources.store.protocol import Store

SECONDS = 10.0  # a dead holder's job waits at most this long for another instance


class JobLease:
    """The lease on `job` in `store` for this process, renewed when a third of it has passed."""

    def __init__(self, store: Store, job: str, seconds: float = SECONDS) -> None:
        self.store, self.job, self.seconds = store, job, seconds
        # unique per object, so two apps in one process (tests) are two holders, as two processes are
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self._renew_at = 0.0  # monotonic time of the next renewal; 0: not held
        self._until = 0.0  # monotonic time by which the lease has surely run out (counted from before the ask)

    async def held(self) -> bool:
        """Whether this process holds the job now: renewed (or taken) when due, one store call at most."""
        now = time.monotonic()
        if self._renew_at and now < self._renew_at:
            return True
        if await self.store.claim(self.job, self.holder, self.seconds):
            self._renew_at, self._until = now + self.seconds / 3, now + self.seconds
            return True
        self._renew_at = self._until = 0.0
        return False

    def surely_held(self) -> bool:
        """Whether the lease taken last has not run out yet (checked before a write a second holder must not make)."""
        return time.monotonic() < self._until

    async def release(self) -> None:
        """Give the job up now (a clean shutdown), so another instance takes it without waiting."""
        # whether or not held() said so: a claim cancelled midway (a shutdown) may have been taken all the same
        self._renew_at = self._until = 0.0
        await self.store.release(self.job, self.holder)
