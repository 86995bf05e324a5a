"""The scheduled recomputation of the persisted segmentation results (tiers, lifecycle stages, churn risk).

Due at a time of day (default 02:00 UTC) and then every `period` (default a day: nightly). The time of the
last run is a store mark, so a restart neither repeats a run nor skips one: a run missed while the server was
down happens at the next start. Only results whose outcome changed are written (operations/persist.py), so a
patient who stays high churn risk gets no new RiskAssessment version and no second recall. Of several instances on
one store, the one that takes the job's lease runs a due slot; the others find it not due once it is recorded.
https://hl7.org/fhir/R4B/riskassessment.html
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from operations import churn_risk, tier
from operations.cohort import CohortRules, PopulationCache
from resources.guard import GUARD
from resources.ids import now_ms
from resources.repository import Repository
from resources.store.lease import JobLease

log = logging.getLogger("careloop.cohort")
MARK = "cohort-recomputed"  # ms of the last run's start
LEASE = "cohort-recompute"
# a run is not renewed while it goes: an instance that dies in one leaves the slot to another after this long
RUN_LEASE_S = 3600.0


@dataclass(frozen=True)
class Recomputed:
    """What one run wrote."""

    at: int
    patients: int
    segments_written: int
    churn_written: int


def latest_due(now: int, at: str, period_ms: int) -> int:
    """The latest due time at or before now: the day's `at` (HH:MM, UTC) plus whole periods, ms."""
    hours, minutes = (int(p) for p in at.split(":"))
    day = datetime.fromtimestamp(now / 1000, UTC).replace(hour=hours, minute=minutes, second=0, microsecond=0)
    anchor = int(day.timestamp() * 1000)
    return anchor + ((now - anchor) // period_ms) * period_ms


async def recompute(repo: Repository, rules: CohortRules, cache: PopulationCache, now: int) -> Recomputed:
    """Judge every patient and write the results that changed, as the server's own work (no caller's guard)."""
    token = GUARD.set(None)
    try:
        segments = await tier.segment(repo, rules, cache, now, None)
        written = await tier.persist(repo, segments, now, None)
        judged = await churn_risk.population(repo, rules, now)
        churned = await churn_risk.persist(repo, judged, rules, now, None)
    finally:
        GUARD.reset(token)
    return Recomputed(now, len(segments.segments), written, churned)


class Recomputation:
    """The background job: `tick` runs a recomputation when one is due; `run` ticks until cancelled."""

    def __init__(self, repo: Repository, rules: CohortRules, cache: PopulationCache, period_s: float,
                 at: str = "02:00", clock: Callable[[], int] = now_ms) -> None:
        self.repo, self.rules, self.cache, self.at, self.clock = repo, rules, cache, at, clock
        self.period_ms = max(1, int(period_s * 1000))
        self.lease = JobLease(repo.store, LEASE, seconds=RUN_LEASE_S)

    async def due(self) -> bool:
        """Whether a due time has passed since the last run.

        A store that never ran one starts counting now: its first run is at the next due time, not at the
        first start (which would write results into every new database).
        """
        last = await self.repo.store.mark(MARK)
        if last is None:
            await self.repo.store.set_mark(MARK, self.clock())
            return False
        return last < latest_due(self.clock(), self.at, self.period_ms)

    async def tick(self) -> Recomputed | None:
        """Run once when due; what it wrote, or None when it was not due."""
        if not await self.due():
            return None
        if not await self.lease.held():  # another instance is running this slot
            return None
        try:
            if not await self.due():  # another instance ran it and let go between the two looks
                return None
            now = self.clock()
            done = await recompute(self.repo, self.rules, self.cache, now)
            await self.repo.store.set_mark(MARK, now)
        finally:
            await self.lease.release()
        log.info("Recomputed %d patients' segments: %d results and %d churn assessments written", done.patients,
                 done.segments_written, done.churn_written)
        return done

    def wait_ms(self) -> int:
        """How long until the next due time."""
        now = self.clock()
        return latest_due(now, self.at, self.period_ms) + self.period_ms - now

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Tick at every due time until cancelled; a failed run is logged and tried again a minute later."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the job must outlive one bad run; the next due time retries
                log.exception("The scheduled cohort recomputation failed")
            # wake at most a minute late: the clock may be moved (tests) or the host suspended
            await sleep(min(self.wait_ms(), 60_000) / 1000)
