"""Bulk jobs ($export, $import): background tasks with their files, owner, progress, cancellation and expiry.

A job runs as an asyncio task in the context of the request that started it (its access guard narrows every
query), without that request's audit sink. Its files live in a folder of their own below the bulk folder; a
finished job and its files are removed once they expire, by a sweep on a clock the tests can set.
https://hl7.org/fhir/uv/bulkdata/STU2/export.html#bulk-data-status-request
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resources.audit_sink import SINK
from resources.errors import FhirError, NotFound
from resources.search.dates import format_instant

log = logging.getLogger("careloop.bulk")
_ID_LENGTH = len(secrets.token_hex(16))


@dataclass
class BulkJob:
    """One bulk job: who started it, what it asked, where its files are and how far it got."""

    id: str
    kind: str  # export | import
    owner: str | None  # the client id of the kick-off's token (None: authorization off)
    request: str
    folder: Path
    transaction_time: str
    status: str = "running"  # running | done | failed
    progress: str = "queued"
    output: list[dict[str, Any]] = field(default_factory=list)  # {type, file, count}
    error: list[dict[str, Any]] = field(default_factory=list)
    failure: FhirError | None = None
    finished: float | None = None
    task: asyncio.Task[None] | None = None


Work = Callable[[BulkJob], Awaitable[None]]


class BulkJobs:
    """The running and finished bulk jobs of this process."""

    def __init__(self, folder: Path, expire_seconds: float, sweep_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.expire_seconds = expire_seconds
        self.sweep_seconds = sweep_seconds
        self.clock = clock
        self._jobs: dict[str, BulkJob] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Create the folder and remove what an earlier process left (its jobs ended with it)."""
        await asyncio.to_thread(_reset, self.folder)
        self._sweeper = asyncio.create_task(self._sweep_loop())

    async def close(self) -> None:
        """Stop the sweep and every running job."""
        tasks = [t for t in [self._sweeper, *(j.task for j in self._jobs.values())] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def create(self, kind: str, owner: str | None, request: str) -> BulkJob:
        """A new job with its (empty) folder, not yet started."""
        job_id = secrets.token_hex(16)
        job = BulkJob(job_id, kind, owner, request, self.folder / job_id, format_instant(int(self.clock() * 1000)))
        await asyncio.to_thread(job.folder.mkdir, parents=True)
        self._jobs[job_id] = job
        return job

    def start(self, job: BulkJob, work: Work) -> BulkJob:
        """Run `work` for the job in the background."""
        context = contextvars.copy_context()
        context.run(SINK.set, None)  # the kick-off's audit record is complete when it answers
        job.task = asyncio.get_running_loop().create_task(self._run(job, work), context=context)
        return job

    async def _run(self, job: BulkJob, work: Work) -> None:
        try:
            await work(job)
            job.status, job.progress = "done", "complete"
        except FhirError as exc:
            job.status, job.failure = "failed", exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a fault: the client learns the job failed, the log says why
            log.exception("bulk %s job %s failed", job.kind, job.id)
            job.status, job.failure = "failed", FhirError(f"The {job.kind} failed: {type(exc).__name__}")
        finally:
            job.finished = self.clock()

    def get(self, job_id: str, owner: str | None, kind: str | None = None) -> BulkJob:
        """The job, for its owner only: anyone else gets the same 404 as for a job that does not exist."""
        job = self._jobs.get(job_id)
        if job is None or job.owner != owner or (kind is not None and job.kind != kind):
            raise NotFound(f"No bulk job '{job_id}'", code="not-found")
        return job

    async def cancel(self, job_id: str, owner: str | None) -> None:
        """Stop a job (running or finished) and remove its files."""
        job = self.get(job_id, owner)
        await self._drop(job)

    async def _drop(self, job: BulkJob) -> None:
        self._jobs.pop(job.id, None)
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)
        await asyncio.to_thread(shutil.rmtree, job.folder, True)

    async def sweep(self) -> int:
        """Remove the jobs that finished more than the expiry ago, with their files; how many were removed."""
        now = self.clock()
        old = [j for j in self._jobs.values() if j.finished is not None and now - j.finished > self.expire_seconds]
        for job in old:
            await self._drop(job)
        return len(old)

    def expires(self, job: BulkJob) -> float | None:
        """When a finished job's files go (epoch seconds)."""
        return None if job.finished is None else job.finished + self.expire_seconds

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                await self.sweep()
            except OSError:  # a file that would not go is tried again at the next sweep
                log.exception("bulk sweep failed")


def _reset(folder: Path) -> None:
    if folder.exists():
        for child in folder.iterdir():
            if child.is_dir() and len(child.name) == _ID_LENGTH:  # only job folders: never an operator's files
                shutil.rmtree(child, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
