"""Background jobs on two instances of one SQLite file (two apps in one process, each its own store object and
lease holder): a due recomputation slot runs once; the escalation and survey workers run on the lease holder only,
and the other takes over when the holder stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from operations.recompute import Recomputation
from resources.ids import now_ms
from server.app import create_app
from server.settings import Settings
from tests.conftest import create
from tests.factories import patient

pytestmark = pytest.mark.anyio
DAY = 86_400_000


@asynccontextmanager
async def instance(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """One app with its lifespan, and a client on it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url="http://testserver") as client:
        yield app, client


async def test_a_due_slot_is_recomputed_by_one_instance(settings: Settings) -> None:
    quiet = settings.model_copy(update={"cohort_recompute_seconds": 0})  # only the jobs of this test run
    clock = [now_ms()]
    async with instance(quiet) as (a, client), instance(quiet) as (b, _):
        await create(client, patient())
        jobs = [Recomputation(app.state.services.repository, app.state.services.cohort,
                              app.state.services.population, 86_400, "02:00", lambda: clock[0]) for app in (a, b)]
        assert await jobs[0].tick() is None  # the first look only starts counting
        clock[0] += DAY
        results = await asyncio.gather(*(job.tick() for job in jobs))
        assert sum(r is not None for r in results) == 1
        assert [await job.tick() for job in jobs] == [None, None]  # and neither runs it again
        clock[0] += DAY  # the next slot: whoever looks first runs it
        assert sum([await job.tick() is not None for job in reversed(jobs)]) == 1


async def test_workers_run_on_one_instance_and_move_when_it_stops(settings: Settings) -> None:
    async with AsyncExitStack() as first:
        a, _ = await first.enter_async_context(instance(settings))
        async with instance(settings) as (b, _):
            assert a.state.escalation.lease.holder != b.state.escalation.lease.holder
            await asyncio.sleep(0.2)
            workers = [(app.state.escalation, app.state.surveys, app.state.services.subscriptions) for app in (a, b)]
            assert [await w.lease.held() for w in workers[0]] == [True, True, True]
            assert [await w.lease.held() for w in workers[1]] == [False, False, False]
            assert workers[0][2].active and not workers[1][2].active
            await first.aclose()  # a stops cleanly: it gives its leases up
            for worker in workers[1]:
                assert await worker.lease.held()
            deadline = asyncio.get_running_loop().time() + 10
            while not (workers[1][1].active and workers[1][2].active):  # their loops notice within a second
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
