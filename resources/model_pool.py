"""Model validation spread over worker processes for large bundles (the R4B models are pure-Python CPU work).

Chunks go to the workers as soon as a bundle arrives; when the event loop needs the results it takes back the
chunks no worker has started, from the end, one at a time, while the workers go on from the front. The two
meet in the middle, so every core is used whatever else the event loop had to do meanwhile.
https://docs.python.org/3/library/concurrent.futures.html#processpoolexecutor
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import orjson

from resources.errors import Issue
from resources.models import model_issues, warm_up

Item = tuple[str, dict[str, Any]]
CHUNK = 16


def _validate_chunk(chunk: list[tuple[str, bytes]]) -> list[list[Issue]]:
    return [model_issues(kind, orjson.loads(body)) for kind, body in chunk]


def _validate_local(chunk: list[Item]) -> list[list[Issue]]:
    return [model_issues(kind, data) for kind, data in chunk]


class ModelValidator:
    """Validates resources against their R4B models, in parallel when a batch is large enough."""

    def __init__(self, workers: int = 0, threshold: int = 24) -> None:
        self._workers = workers
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
        """Start validating; the workers take chunks while the caller does other work."""
        chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
        if self._pool is None or len(items) < self._threshold:
            return ModelJob(chunks, [None] * len(chunks))
        pool = self._pool
        futures: list[Future[list[list[Issue]]] | None] = [
            pool.submit(_validate_chunk, [(kind, orjson.dumps(data)) for kind, data in chunk]) for chunk in chunks]
        return ModelJob(chunks, futures)

    async def issues_many(self, items: list[Item]) -> list[list[Issue]]:
        """Model issues per item, in order."""
        return await self.submit(items).result()


class ModelJob:
    """Model validation under way: chunks and, for those sent to a worker, their futures."""

    def __init__(self, chunks: list[list[Item]], futures: list[Future[list[list[Issue]]] | None]) -> None:
        self._chunks = chunks
        self._futures = futures

    async def result(self) -> list[list[Issue]]:
        """Every item's issues in order: unstarted chunks are taken back from the end and validated here."""
        done: list[list[list[Issue]] | None] = [None] * len(self._chunks)
        for index in reversed(range(len(self._chunks))):
            future = self._futures[index]
            if future is not None and not future.cancel():
                break  # a worker has it, and so every chunk before it
            done[index] = _validate_local(self._chunks[index])
        results: list[list[Issue]] = []
        for index, chunk_result in enumerate(done):
            if chunk_result is None:
                future = self._futures[index]
                assert future is not None
                chunk_result = await asyncio.wrap_future(future)
            results.extend(chunk_result)
        return results

    def cancel(self) -> None:
        """Drop chunks no worker has started (the request failed before they were needed)."""
        for future in self._futures:
            if future is not None:
                future.cancel()
