"""Model validation in worker processes, so the serving process neither runs nor holds the R4B models.

The R4B models are pure-Python CPU work and about 70 MB of memory. With workers, every model check (a single
create as well as each chunk of a large bundle) runs there, on the other core, while the event loop goes on
with shape checks, indexing and storing; the models are loaded once, in the workers only. With no workers
(a one-core machine, the tests) the checks run in the serving process. A worker that dies is replaced, and
the checks it had are redone in the serving process.
https://docs.python.org/3/library/concurrent.futures.html#processpoolexecutor
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson

from resources.errors import Issue
from resources.models import model_issues, warm_up

log = logging.getLogger("careloop.validation")

Item = tuple[str, dict[str, Any]]
CHUNK = 16


def _exit_with_parent() -> None:
    """Wait until the serving process ends, then end this worker: a server killed with SIGKILL (or crashed) never
    shuts its pool down, and the workers would otherwise wait for work forever, each holding the models."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)


def _start_worker() -> None:
    """A worker's start: watch the serving process, then load the models."""
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()
    warm_up()


def _validate_chunk(chunk: list[tuple[str, bytes]]) -> list[list[Issue]]:
    return [model_issues(kind, orjson.loads(body)) for kind, body in chunk]


def _validate_local(chunk: list[Item]) -> list[list[Issue]]:
    return [model_issues(kind, data) for kind, data in chunk]


class ModelValidator:
    """Validates resources against their R4B models, in the worker processes when there are any."""

    def __init__(self, workers: int = 0) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._warming: list[Future[list[list[Issue]]]] = []

    @property
    def local(self) -> bool:
        """True when the checks run in this process (no workers)."""
        return self._workers <= 0

    def start(self) -> None:
        """Start the workers and have them load the models now (with none, nothing to do)."""
        if self._pool is None and not self.local:
            context = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
            self._pool = ProcessPoolExecutor(self._workers, mp_context=context, initializer=_start_worker)
            # workers are spawned on demand: ask for them now, so their model imports (seconds) happen
            # at start-up instead of inside the first request
            self._warming = [self._pool.submit(_validate_chunk, []) for _ in range(self._workers)]

    @property
    def ready(self) -> bool:
        """True when writes can be validated now: in this process, or by workers that have loaded the models."""
        if self.local:
            return True
        return self._pool is not None and all(f.done() and not f.cancelled() and f.exception() is None
                                              for f in self._warming)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def replace(self, broken: ProcessPoolExecutor) -> None:
        """Start new workers in place of a pool whose worker died (once, however many requests noticed)."""
        if self._pool is not broken:
            return
        log.error("A validation worker died; starting new ones")
        self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)
        self.start()

    def submit(self, items: list[Item]) -> ModelJob:
        """Start validating; the workers take chunks while the caller does other work."""
        chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
        pool = self._pool
        if pool is None:
            return ModelJob(self, None, chunks, [None] * len(chunks))
        try:
            futures: list[Future[list[list[Issue]]] | None] = [
                pool.submit(_validate_chunk, [(kind, orjson.dumps(data)) for kind, data in chunk])
                for chunk in chunks]
        except BrokenProcessPool:
            self.replace(pool)
            return ModelJob(self, None, chunks, [None] * len(chunks))
        return ModelJob(self, pool, chunks, futures)

    async def issues_many(self, items: list[Item]) -> list[list[Issue]]:
        """Model issues per item, in order."""
        return await self.submit(items).result()


class ModelJob:
    """Model validation under way: chunks and, for those sent to a worker, their futures."""

    def __init__(self, owner: ModelValidator, pool: ProcessPoolExecutor | None, chunks: list[list[Item]],
                 futures: list[Future[list[list[Issue]]] | None]) -> None:
        self._owner = owner
        self._pool = pool
        self._chunks = chunks
        self._futures = futures

    async def result(self) -> list[list[Issue]]:
        """Every item's issues, in order."""
        results: list[list[Issue]] = []
        broken = False
        for chunk, future in zip(self._chunks, self._futures, strict=True):
            if future is None:
                results.extend(_validate_local(chunk))
                continue
            try:
                done: list[list[Issue]] = await asyncio.wrap_future(future)
            except BrokenProcessPool:
                broken = True
                done = _validate_local(chunk)  # the answer must not depend on a worker's death
            results.extend(done)
        if broken and self._pool is not None:
            self._owner.replace(self._pool)
        return results

    def cancel(self) -> None:
        """Drop chunks no worker has started (the request failed before they were needed)."""
        for future in self._futures:
            if future is not None:
                future.cancel()
