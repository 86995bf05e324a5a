"""Chronic programme cadences: an active programme CarePlan's activities become Tasks, the next one on schedule.

A programme CarePlan carries the category careloop|chronic-programme (and one naming the programme, e.g.
careloop|diabetes); each activity's detail.scheduledTiming.repeat (period + periodUnit d, wk, mo or a) cuts time
from CarePlan.period.start into windows. For the window holding now the worker makes one Task (identifier
plan:activity:window, created only if absent, so a restart or a second tick makes no duplicate), due at the
window's end; an earlier Task of the activity still open is the patient's missed occurrence: cancelled with
businessStatus careloop|missed, so there is at most one open Task per activity. A CarePlan that is not active, or
whose period.end has passed, makes nothing more. https://hl7.org/fhir/R4B/careplan.html,
https://hl7.org/fhir/R4B/datatypes.html#Timing
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from resources.errors import FhirError
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import date_range, format_instant
from subscriptions.pathways import OPEN_STATUSES
from subscriptions.queries import every_match, find

log = logging.getLogger("careloop.subscriptions")
CARELOOP = "http://careloop.health/fhir/CodeSystem/careloop"
PROGRAMME = (CARELOOP, "chronic-programme")
CADENCE = "http://careloop.health/fhir/sid/cadence-occurrence"
MISSED = {"coding": [{"system": CARELOOP, "code": "missed", "display": "Missed"}], "text": "missed"}
_FIXED_MS = {"d": 86_400_000, "wk": 7 * 86_400_000}
_MONTHS = {"mo": 1, "a": 12}
_DONE = frozenset({"cancelled", "completed", "stopped", "entered-in-error"})


def _add_months(at: datetime, months: int) -> datetime:
    """The same day and time some months later (the month's last day when it is shorter)."""
    year, month = divmod(at.month - 1 + months, 12)
    year, month = at.year + year, month + 1
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=at.tzinfo)
    last = (following - timedelta(days=1)).day
    return at.replace(year=year, month=month, day=min(at.day, last))


def window(start_ms: int, repeat: dict[str, Any], at_ms: int) -> tuple[int, int, int] | None:
    """(index, start, end) of the schedule's window that holds at_ms; None before the start or for an unknown unit."""
    period, unit = repeat.get("period"), repeat.get("periodUnit")
    if not isinstance(period, int | float) or period <= 0 or at_ms < start_ms:
        return None
    if unit in _FIXED_MS:
        size = int(period * _FIXED_MS[unit])
        k = (at_ms - start_ms) // size
        return k, start_ms + k * size, start_ms + (k + 1) * size
    if unit not in _MONTHS or int(period) != period:
        return None
    months = int(period) * _MONTHS[unit]
    origin = datetime.fromtimestamp(start_ms / 1000, UTC)
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    k = max(0, ((at.year - origin.year) * 12 + at.month - origin.month) // months + 1)
    while k > 0 and _add_months(origin, k * months) > at:
        k -= 1
    low, high = _add_months(origin, k * months), _add_months(origin, (k + 1) * months)
    return k, int(low.timestamp() * 1000), int(high.timestamp() * 1000)


def running(plan: dict[str, Any], at_ms: int) -> int | None:
    """The programme's start in ms while it runs at at_ms (active, started, not ended); None otherwise."""
    if plan.get("status") != "active":
        return None
    period = plan.get("period") or {}
    start = date_range(str(period.get("start") or plan.get("created") or ""))
    end = date_range(str(period["end"])) if period.get("end") else None
    if start is None or start[0] > at_ms or (end is not None and end[1] < at_ms):
        return None
    return start[0]


def occurrence_task(plan: dict[str, Any], n: int, detail: dict[str, Any], k: int, low: int, high: int,
                    at_ms: int) -> dict[str, Any]:
    """The Task of one window of one activity."""
    task: dict[str, Any] = {
        "resourceType": "Task", "identifier": [{"system": CADENCE, "value": f"{plan['id']}:{n}:{k}"}],
        "basedOn": [{"reference": f"CarePlan/{plan['id']}"}], "status": "requested", "intent": "order",
        "priority": "routine", "focus": {"reference": f"CarePlan/{plan['id']}"},
        "authoredOn": format_instant(at_ms), "lastModified": format_instant(at_ms),
        "restriction": {"period": {"start": format_instant(low), "end": format_instant(high)}}}
    if detail.get("code"):
        task["code"] = detail["code"]
    text = detail.get("description") or (detail.get("code") or {}).get("text")
    if text:
        task["description"] = text
    if isinstance(plan.get("subject"), dict) and plan["subject"].get("reference"):
        task["for"] = {"reference": plan["subject"]["reference"]}
    owners = [p for p in detail.get("performer") or [] if isinstance(p, dict) and p.get("reference")]
    owners += [t for t in plan.get("careTeam") or [] if isinstance(t, dict) and t.get("reference")]
    if owners:
        task["owner"] = {"reference": owners[0]["reference"]}
    return task


class CadenceWorker:
    """Makes the next Task of each programme activity, on a clock tests control; runs every `interval_s`."""

    def __init__(self, repository: Repository, clock: Callable[[], int] = now_ms, interval_s: float = 60.0) -> None:
        self.repository = repository
        self.clock = clock
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        # (plan, activity) -> the last window known to have its Task: a steady tick costs no search per activity
        self._known: dict[tuple[str, int], int] = {}

    def start(self) -> None:
        """Start the background loop (its first tick one interval after the start)."""
        self._task = asyncio.create_task(self._loop(), name="programme-cadence")

    async def close(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the schedule: one failed tick must not end every programme
                log.exception("Programme cadence: a tick failed; trying again at the next")

    async def tick(self, at_ms: int | None = None) -> int:
        """Bring every running programme up to date at this instant; how many Tasks were made."""
        at = self.clock() if at_ms is None else at_ms
        made = 0
        async for plan in every_match(self.repository, f"CarePlan?status=active&category={PROGRAMME[0]}|"
                                                       f"{PROGRAMME[1]}"):
            start = running(plan, at)
            if start is None:
                continue
            for n, activity in enumerate(plan.get("activity") or []):
                detail = activity.get("detail") or {}
                repeat = (detail.get("scheduledTiming") or {}).get("repeat") or {}
                if detail.get("status") in _DONE:
                    continue
                found = window(start, repeat, at)
                if found is None or self._known.get((str(plan["id"]), n)) == found[0]:
                    continue
                try:
                    made += await self._activity(plan, n, detail, *found, at)
                    self._known[(str(plan["id"]), n)] = found[0]
                except FhirError as exc:  # this activity only: the others still get their Tasks
                    log.warning("CarePlan/%s activity %d: no Task made: %s", plan.get("id"), n, exc)
        return made

    async def _activity(self, plan: dict[str, Any], n: int, detail: dict[str, Any], k: int, low: int, high: int,
                        at: int) -> int:
        value = f"{plan['id']}:{n}:{k}"
        if await find(self.repository, f"Task?identifier={CADENCE}|{value}&_count=1"):
            return 0
        prefix = f"{plan['id']}:{n}:"
        for task in await find(self.repository, f"Task?based-on=CarePlan/{plan['id']}&status="
                                                f"{','.join(OPEN_STATUSES)}&_count=100"):
            ids = [i.get("value") for i in task.get("identifier") or [] if i.get("system") == CADENCE]
            if ids and str(ids[0]).startswith(prefix):
                missed = {**task, "status": "cancelled", "businessStatus": MISSED, "lastModified": format_instant(at)}
                version = int((task.get("meta") or {}).get("versionId") or 0) or None
                await self.repository.update("Task", str(task["id"]), missed, if_match=version)
        task = occurrence_task(plan, n, detail, k, low, high, at)
        await self.repository.create("Task", task, if_none_exist=[("identifier", f"{CADENCE}|{value}")])
        return 1
