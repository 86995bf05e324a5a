"""A MongoDB transaction that outlasts transient errors, as the driver's `with_transaction` does for a callback:
on TransientTransactionError it is begun again and the writes made so far are replayed; a commit whose outcome is
unknown (UnknownTransactionCommitResult) is retried. Bounded in attempts and time, for an HTTP request.

https://www.mongodb.com/docs/manual/core/transactions-in-applications/
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo.errors import PyMongoError

from resources.store.mongo.failures import cause, transient

T = TypeVar("T")
ATTEMPTS = 5  # transactions begun, the first included
BUDGET_S = 10.0  # the driver allows 120 s; a client waiting for an answer does not
_BACKOFF_S = 0.01
_BACKOFF_MAX_S = 0.5
_MAX_TIME_EXPIRED = 50  # a commit that ran out of maxCommitTimeMS is not retried (the driver's rule)


class Transaction:
    """One write session's transaction on a driver session; its writes are kept to be replayed."""

    def __init__(self, session: Any, *, attempts: int = ATTEMPTS, budget_s: float = BUDGET_S) -> None:
        self.session = session
        self._attempts = attempts
        self._budget_s = budget_s
        self._begun = 0
        self._commits = 0
        self._started = time.monotonic()
        self._writes: list[Callable[[], Awaitable[object]]] = []

    async def begin(self) -> None:
        """Start the transaction."""
        self._begun += 1
        await self.session.start_transaction()

    async def run(self, step: Callable[[], Awaitable[T]], *, write: bool) -> T:
        """Run one read or write; after a transient error, begin again, replay the writes so far, run it again."""
        while True:
            try:
                found = await step()
            except Exception as exc:
                if not transient(cause(exc) or exc):
                    raise
                await self._again(exc)
                continue
            if write:
                self._writes.append(step)
            return found

    async def commit(self) -> None:
        """Commit; retry a commit of unknown outcome, and the whole transaction after a transient error."""
        while True:
            try:
                await self.session.commit_transaction()
                return
            except PyMongoError as exc:
                if exc.has_error_label("UnknownTransactionCommitResult") and \
                        getattr(exc, "code", None) != _MAX_TIME_EXPIRED:
                    self._spend(exc, begun=False)
                    continue
                if not transient(exc):
                    raise
                await self._again(exc)

    async def abort(self) -> None:
        """Abort, if a transaction is open (a failure to abort leaves it to the server's timeout)."""
        if self.session.in_transaction:
            with contextlib.suppress(PyMongoError):
                await self.session.abort_transaction()

    async def _again(self, exc: BaseException) -> None:
        while True:
            self._spend(exc, begun=True)
            await self.abort()
            await asyncio.sleep(random.random() * min(_BACKOFF_S * 1.5 ** self._begun, _BACKOFF_MAX_S))  # noqa: S311
            await self.begin()
            try:
                for write in self._writes:
                    await write()
                return
            except Exception as again:
                if not transient(cause(again) or again):
                    raise
                exc = again

    def _spend(self, exc: BaseException, *, begun: bool) -> None:
        # out of attempts or time: the last error stands (mapped to 503 by the store)
        self._commits += 0 if begun else 1
        if (begun and self._begun >= self._attempts) or self._commits > self._attempts or \
                time.monotonic() - self._started > self._budget_s:
            raise exc
