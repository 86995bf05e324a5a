"""The service-level escalation worker: an open Task past its deadline is escalated (DOMAIN.md section 4).

Escalating a Task marks it `escalated` (businessStatus), raises its priority one step, hands it to its
owner's supervisor (subscriptions/supervisors.py), gives it the new priority's deadline and counts the level
in an extension; a Provenance on the new version and an AuditEvent record it. Still open after the new
deadline, it is escalated again, up to the configured maximum; then it is marked `exhausted` and left alone.
Overdue Tasks are found through the `deadline` index, oldest first, a page at a time, never by a scan; each
escalation is a versioned update (If-Match on the version read), so a second worker or one restarted midway
cannot repeat it; of several instances on one store only the holder of the worker's lease looks, so they do not race
for the same pages. https://hl7.org/fhir/R4B/task.html, https://hl7.org/fhir/R4B/provenance.html
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from resources.bundle_entries import parse_bundle
from resources.errors import FhirError, Invalid
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import format_instant
from resources.search.parse import parse_search
from resources.store.lease import JobLease
from resources.store.protocol import ReadSource, StoredResource
from resources.transaction import EntryResult, TransactionProcessor
from subscriptions.pathways import PRIORITIES
from subscriptions.supervisors import supervisor_of

log = logging.getLogger("careloop.escalation")

OPEN_STATUSES = ("requested", "received", "accepted", "in-progress", "on-hold")
ESCALATION = "http://careloop.health/fhir/CodeSystem/task-escalation"
LEVEL = "http://careloop.health/fhir/StructureDefinition/escalation-level"
ACTIVITY = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_AUDIT_SUBTYPE = "http://careloop.health/fhir/CodeSystem/audit-subtype"
WORKER = "CareLoop escalation worker"
LEASE = "subscriptions:escalation"


@dataclass(frozen=True)
class EscalationConfig:
    """Service levels per priority (ms), how many escalations a Task may get, how often and how many to look at."""

    service_levels_ms: dict[str, int] = field(default_factory=lambda: {
        "stat": 30 * 60_000, "asap": 2 * 3_600_000, "urgent": 2 * 3_600_000, "routine": 24 * 3_600_000})
    max_level: int = 2
    interval_s: float = 30.0
    page: int = 100
    base_url: str = "http://localhost/fhir"


def raised(priority: str | None) -> str:
    """One step up: routine -> urgent -> asap -> stat (stat stays stat)."""
    at = PRIORITIES.index(priority) if priority in PRIORITIES else 0
    return PRIORITIES[min(at + 1, len(PRIORITIES) - 1)]


def level_of(task: dict[str, Any]) -> int:
    """How often the Task was escalated (its escalation-level extension; 0 when never)."""
    for ext in task.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == LEVEL and isinstance(ext.get("valueInteger"), int):
            return int(ext["valueInteger"])
    return 0


def _with_level(task: dict[str, Any], level: int) -> list[dict[str, Any]]:
    others = [e for e in task.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == LEVEL)]
    return [*others, {"url": LEVEL, "valueInteger": level}]


def _status(code: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": ESCALATION, "code": code}], "text": text}


def overdue_search(now: int, page: int) -> list[tuple[str, str]]:
    """The worklist search of overdue open Tasks not yet past their last escalation, oldest deadline first."""
    return [("deadline", "lt" + format_instant(now)), ("status", ",".join(OPEN_STATUSES)),
            ("business-status:not", f"{ESCALATION}|exhausted"), ("_sort", "deadline"), ("_count", str(page))]


async def _no_reads(url: str, source: ReadSource) -> EntryResult:
    raise AssertionError(f"an escalation transaction has no read entries ({url})")


class EscalationWorker:
    """Escalates overdue open Tasks every `interval_s` seconds, on a clock that tests control."""

    def __init__(self, repository: Repository, config: EscalationConfig,
                 clock: Callable[[], int] = now_ms) -> None:
        self.repository = repository
        self.config = config
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._round = asyncio.Event()  # set after each round of the loop
        self._warned = False
        # held across rounds: an instance that stops answering loses it within a round or two
        self.lease = JobLease(repository.store, LEASE, seconds=max(10.0, 3 * config.interval_s))

    async def start(self) -> None:
        """Start the loop; its first round runs at once, so Tasks that fell due while the server was down are
        found on start."""
        self._task = asyncio.create_task(self._loop(), name="escalation-worker")

    async def close(self) -> None:
        """Stop the loop (an escalation in flight is one transaction: it is either written or not)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            with contextlib.suppress(FhirError):  # another instance takes over at once
                await self.lease.release()

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until the loop finished a round (the one at start, at first): for tests and benchmarks."""
        await asyncio.wait_for(self._round.wait(), timeout)

    def wake(self) -> None:
        """Run a round now instead of at the next interval."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                if await self.lease.held():
                    await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep escalating: one failed round must not stop every later one
                log.exception("Escalation round failed; trying again at the next interval")
            self._round.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.interval_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """Escalate every Task overdue now, a page at a time; how many were escalated or marked exhausted."""
        done = 0
        while True:
            now = self.clock()
            try:
                query = parse_search("Task", overdue_search(now, self.config.page), self.repository.registry,
                                     strict=True).query
            except Invalid as exc:  # the deadline SearchParameter was retired or never stored: no index to use
                if not self._warned:
                    log.warning("Escalation is idle: %s (docs/subscriptions.md, Service levels)", exc)
                    self._warned = True
                return done
            self._warned = False
            page = await self.repository.search(query)
            changed = 0
            for stored in page.resources:
                changed += await self._escalate(stored, now)
            done += changed
            # a full page that changed nothing would come back unchanged (e.g. every Task edited meanwhile)
            if len(page.resources) < self.config.page or changed == 0:
                return done

    async def _escalate(self, stored: StoredResource, now: int) -> int:
        task: dict[str, Any] = orjson.loads(stored.body or b"{}")
        level = level_of(task)
        reference = f"Task/{stored.id}"
        new = dict(task)
        # the store sets versionId and lastUpdated; tags, profiles and security labels belong to the Task and stay
        kept = {k: v for k, v in (task.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        new.pop("meta", None)
        if kept:
            new["meta"] = kept
        new["lastModified"] = format_instant(now)
        if level >= self.config.max_level:
            new["businessStatus"] = _status("exhausted", f"overdue after the last escalation (level {level})")
            return await self._write(stored, new, None)
        priority = raised(task.get("priority"))
        owner = (task.get("owner") or {}).get("reference")
        supervisor = await supervisor_of(self.repository, owner) if isinstance(owner, str) else None
        new["priority"] = priority
        new["businessStatus"] = _status("escalated", f"escalated (level {level + 1})")
        new["extension"] = _with_level(task, level + 1)
        if supervisor is not None:
            new["owner"] = {"reference": supervisor}
        period = dict((task.get("restriction") or {}).get("period") or {})
        period["end"] = format_instant(now + self.config.service_levels_ms.get(priority, 86_400_000))
        new["restriction"] = {**(task.get("restriction") or {}), "period": period}
        provenance = {
            "resourceType": "Provenance",
            "target": [{"reference": f"{reference}/_history/{stored.vid + 1}"}],
            "recorded": format_instant(now),
            "activity": {"coding": [{"system": ACTIVITY, "code": "UPDATE"}]},
            "reason": [{"coding": [{"system": ESCALATION, "code": "escalated", "display": "escalation"}],
                        "text": f"overdue since {(task.get('restriction') or {}).get('period', {}).get('end')}: "
                                f"level {level + 1}, priority {task.get('priority')} -> {priority}, owner "
                                f"{owner or 'none'} -> {supervisor or owner or 'none'}"}],
            "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "provenance-participant-type", "code": "assembler"}]},
                       "who": {"display": WORKER}}],
            "entity": [{"role": "revision", "what": {"reference": f"{reference}/_history/{stored.vid}"}}],
        }
        written = await self._write(stored, new, provenance)
        if written:
            await self._audit(stored, task, level + 1, now)
        return written

    async def _write(self, stored: StoredResource, task: dict[str, Any], provenance: dict[str, Any] | None) -> int:
        """The Task's new version (If-Match on the version read) and its Provenance, in one transaction."""
        entries: list[dict[str, Any]] = [{"resource": task, "request": {
            "method": "PUT", "url": f"Task/{stored.id}", "ifMatch": f'W/"{stored.vid}"'}}]
        if provenance is not None:
            entries.append({"resource": provenance, "request": {"method": "POST", "url": "Provenance"}})
        base = self.config.base_url
        try:
            _, parsed = parse_bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries},
                                     len(entries), base)
            await TransactionProcessor(self.repository, base).run(parsed, _no_reads)
        except FhirError as exc:
            # 409/412: changed (completed, reassigned, escalated by another worker) since it was read: the
            # newer version decides, and the next round sees it if it is still overdue
            log.info("Task/%s not escalated: %s", stored.id, exc)
            return 0
        return 1

    async def _audit(self, stored: StoredResource, task: dict[str, Any], level: int, now: int) -> None:
        appender = self.repository.appender
        if appender is None:
            return
        patient = str((task.get("for") or {}).get("reference") or "")
        entity = [{"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                   "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4"},
                   "what": {"reference": f"Task/{stored.id}/_history/{stored.vid + 1}"}}]
        if patient.startswith("Patient/"):
            entity.append({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                    "code": "1"},
                           "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
                           "what": {"reference": patient}})
        event = {
            "resourceType": "AuditEvent",
            "type": {"system": _DCM, "code": "110100", "display": "Application Activity"},
            "subtype": [{"system": _AUDIT_SUBTYPE, "code": "task-escalated", "display": "Task escalated"}],
            "action": "U", "recorded": format_instant(now), "outcome": "0",
            "outcomeDesc": f"Task/{stored.id} escalated to level {level}",
            "agent": [{"type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
                       "requestor": True, "who": {"display": WORKER}}],
            "source": {"observer": {"display": "CareLoop"},
                       "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                                 "code": "4", "display": "Application Server"}]},
            "entity": entity,
        }
        try:
            await appender.append(event)
        except FhirError as exc:  # the escalation stands; the trail's own health check reports the outage
            log.warning("Escalation of Task/%s not audited: %s", stored.id, exc)
