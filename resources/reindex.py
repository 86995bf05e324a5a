"""Reindexing: recompute the search-index entries of stored resources after search parameters changed.

Runs as a background job in batches; each batch only replaces the entries of versions that are still
current, so a resource updated meanwhile keeps the entries its update wrote.
https://hl7.org/fhir/R4B/searchparameter.html
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import orjson

from resources.ids import new_id, now_ms
from resources.search.index import Indexer
from resources.search.query import SearchQuery
from resources.store.protocol import Store

log = logging.getLogger("careloop.reindex")


@dataclass
class ReindexJob:
    """One reindex run and its progress."""

    id: str
    types: tuple[str, ...]
    status: str = "queued"  # queued | running | completed | failed
    processed: int = 0
    total: int = 0
    started_ms: int = field(default_factory=now_ms)
    finished_ms: int | None = None
    error: str | None = None


class Reindexer:
    """Starts reindex jobs and keeps their progress (the last 100 jobs)."""

    def __init__(self, store: Store, indexer: Indexer, batch: int = 500) -> None:
        self._store = store
        self._indexer = indexer
        self._batch = batch
        self.jobs: dict[str, ReindexJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, types: list[str]) -> ReindexJob:
        """Start reindexing every current resource of the given types."""
        job = ReindexJob(new_id(), tuple(types))
        self.jobs[job.id] = job
        while len(self.jobs) > 100:
            self.jobs.pop(next(iter(self.jobs)))
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def wait(self) -> None:
        """Wait for running jobs (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop running jobs."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, job: ReindexJob) -> None:
        job.status = "running"
        try:
            for type_ in job.types:
                counted = await self._store.search(SearchQuery(type_, count=0, total="accurate"))
                job.total += counted.total or 0
            for type_ in job.types:
                cursor: int | None = None
                while True:
                    page = await self._store.search(SearchQuery(type_, count=self._batch, cursor=cursor))
                    items = [(res.seq, res.vid, self._indexer.extract(res.type, orjson.loads(res.body)))
                             for res in page.resources if res.body]
                    if items:
                        async with self._store.write_session() as session:
                            await session.replace_index(type_, items)
                    job.processed += len(page.resources)
                    if page.next_cursor is None:
                        break
                    cursor = int(page.next_cursor)
            job.status = "completed"
        except Exception as exc:  # a failed job reports why; the server goes on
            log.exception("reindex job %s failed", job.id)
            job.status, job.error = "failed", str(exc)
        finally:
            job.finished_ms = now_ms()
