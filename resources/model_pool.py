"""Model validation spread over worker processes for large bundles (the R4B models are pure-Python CPU work).

The event loop validates its own share while the workers validate theirs, so a transaction bundle uses
every core. https://docs.python.org/3/library/concurrent.futures.html#processpoolexecutor
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson

from resources.errors import Issue
from resources.models import model_issues, warm_up

Item = tuple[str, dict[str, Any]]


def _validate_chunk(chunk: list[tuple[str, bytes]]) -> list[list[Issue]]:
    return [model_issues(kind, orjson.loads(body)) for kind, body in chunk]


class ModelValidator:
    """Validates resources against their R4B models, in parallel when a batch is large enough."""

    def __init__(self, workers: int = 0, threshold: int = 24, local_share: float = 0.0) -> None:
        self._workers = workers
        self._local_share = local_share
        self._threshold = threshold
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the worker processes and have them import the models in the background."""
        if self._workers > 0 and self._pool is None:
            context = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
            self._pool = ProcessPoolExecutor(self._workers, mp_context=context, initializer=warm_up)
            # workers are spawned on demand: ask for them now, so their model imports (seconds) happen
            # at start-up instead of inside the first large bundle
            for _ in range(self._workers):
                self._pool.submit(_validate_chunk, [])

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, items: list[Item]) -> ModelJob:
        """Start validating; the workers' shares run while the caller does other work."""
        if self._pool is None or len(items) < self._threshold:
            return ModelJob(items, [])
        # the event loop also parses, indexes and stores, so it keeps the smaller share
        local_count = int(len(items) * self._local_share)
        # several chunks per worker, so the first results arrive while later ones are still checked
        size = max(8, -(-(len(items) - local_count) // (self._workers * 4)))
        local, remote = items[:local_count], items[local_count:]
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(self._pool, _validate_chunk,
                                 [(kind, orjson.dumps(data)) for kind, data in remote[i:i + size]])
            for i in range(0, len(remote), size)
        ]
        return ModelJob(local, futures)

    async def issues_many(self, items: list[Item]) -> list[list[Issue]]:
        """Model issues per item, in order."""
        return await self.submit(items).result()


class ModelJob:
    """Model validation under way: a local share and the futures of the workers' shares."""

    def __init__(self, local: list[Item], futures: list[asyncio.Future[list[list[Issue]]]]) -> None:
        self._local = local
        self._futures = futures

    async def result(self) -> list[list[Issue]]:
        """Validate the local share, then collect the workers' results, in item order."""
        results = [model_issues(kind, data) for kind, data in self._local]
        for future in self._futures:
            results.extend(await future)
        return results

    def cancel(self) -> None:
        """Drop pending worker shares (the request failed before they were needed)."""
        for future in self._futures:
            future.cancel()
