"""The scheduled recomputation of persisted segments: due times, a controllable clock, restarts, only changes.

https://hl7.org/fhir/R4B/riskassessment.html
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from operations.recompute import Recomputation, latest_due
from resources.ids import now_ms
from server.app import create_app
from server.settings import Settings
from tests.conftest import create
from tests.factories import patient
from tests.server.test_cohort import visit
from tests.server.test_cohort_segments import RESULT, churn_of, history, search

pytestmark = pytest.mark.anyio
DAY = 86_400_000


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("now", "at", "period_h", "due"), [
    ("2026-12-07T03:00:00", "02:00", 24, "2026-12-07T02:00:00"),
    ("2026-12-07T01:59:59", "02:00", 24, "2026-12-06T02:00:00"),  # before today's time: yesterday's
    ("2026-12-07T02:00:00", "02:00", 24, "2026-12-07T02:00:00"),
    ("2026-12-07T13:30:00", "02:00", 6, "2026-12-07T08:00:00"),  # every 6 hours from 02:00
    ("2026-12-07T01:00:00", "02:00", 6, "2026-12-06T20:00:00"),
])
def test_latest_due(now: str, at: str, period_h: int, due: str) -> None:
    assert latest_due(_ms(now), at, period_h * 3_600_000) == _ms(due)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url="http://testserver") as client:
        yield app, client


async def test_a_recomputation_on_a_controlled_clock_survives_restarts_and_writes_only_changes(
        settings: Settings) -> None:
    quiet = settings.model_copy(update={"cohort_recompute_seconds": 0})  # only the job of this test runs
    clock = [now_ms()]  # a day later is always past one more 02:00

    def job(app: FastAPI) -> Recomputation:
        svc = app.state.services
        return Recomputation(svc.repository, svc.cohort, svc.population, 86_400, "02:00", lambda: clock[0])

    async with serving(quiet) as (app, client):
        drifting = (await create(client, patient(family="Drifting")))["id"]
        calm = (await create(client, patient()))["id"]
        for resource in churn_of(drifting, 200):
            await create(client, resource)
        await create(client, visit(calm, 5))
        nightly = job(app)
        assert await nightly.tick() is None  # the first start only starts counting
        assert await search(client, f"/fhir/Observation?code={RESULT}|tier") == []
        clock[0] += DAY  # past the next 02:00
        done = await nightly.tick()
        assert done is not None and done.patients >= 2 and done.segments_written >= 4 and done.churn_written >= 2
        high = await search(client, "/fhir/RiskAssessment?risk=high")
        assert [r["subject"]["reference"] for r in high] == [f"Patient/{drifting}"]
        assert await nightly.tick() is None  # not due again the same night
    async with serving(quiet) as (app, client):  # a restart remembers the last run
        nightly = job(app)
        assert await nightly.tick() is None
        clock[0] += DAY
        again = await nightly.tick()
        assert again is not None and again.segments_written == 0 and again.churn_written == 0
        assert len(await history(client, high[0])) == 1  # still high: no new version, no second recall


async def test_the_server_runs_the_job_in_the_background(settings: Settings) -> None:
    often = settings.model_copy(update={"cohort_recompute_seconds": 1, "cohort_recompute_at": "00:00"})
    async with serving(often) as (_, client):
        pid = (await create(client, patient(family="Background")))["id"]
        for _ in range(100):
            found = await search(client, f"/fhir/Observation?code={RESULT}|tier&subject=Patient/{pid}")
            if found:
                break
            await asyncio.sleep(0.1)
        assert [o["valueCodeableConcept"]["coding"][0]["code"] for o in found] == ["C"]
