"""Pathway Tasks from topic events: one per trigger, step and clinically new event, with owner and Provenance.

An event is *clinically new* when the values the topic's criteria read (their index rows: e.g. the code and
value of a pain score, the status and class of an Encounter) differ from an earlier event of the same resource;
the Task identifier carries a hash of them instead of the change-feed position, so an identical PUT, an
amendment with the same values, a retry or a restart finds the Task already there. Data tagged as an import
(meta.tag careloop|import) starts nothing; a late entry does, due from when it happened.
https://hl7.org/fhir/R4B/task.html, https://hl7.org/fhir/R4B/provenance.html
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from resources.bundle_entries import parse_bundle
from resources.errors import FhirError, Forbidden
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import format_instant
from resources.search.index import IndexRows
from resources.search.match import matches_all
from resources.store.protocol import ReadSource, StoredResource
from resources.transaction import EntryResult, TransactionProcessor
from subscriptions.owners import Owners
from subscriptions.pathways import FOLLOWS_TRIGGER, OPEN_STATUSES, PATHWAY_EVENT, Step, duration_ms, extension, task_for
from subscriptions.queries import find
from subscriptions.topics import Topic, parse_criteria

log = logging.getLogger("careloop.subscriptions")
IMPORT_TAG = ("http://careloop.health/fhir/CodeSystem/careloop", "import")
ENGINE_AGENT = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                     "code": "assembler"}]},
                "who": {"identifier": {"system": "http://careloop.health/fhir/sid/system",
                                       "value": "careloop-pathway-engine"}, "display": "CareLoop pathway engine"}}


@dataclass(frozen=True)
class Occurrence:
    """One event of a topic on one version of a resource, as pathways see it."""

    topic: str
    type: str
    id: str
    vid: int
    body: dict[str, Any]
    rows: IndexRows
    patient: str | None
    key: str  # the clinical key: a hash of the values the topic's criteria read
    anchor_ms: int  # when it happened (the trigger's recency date), never later than now


def imported(body: dict[str, Any]) -> bool:
    """True for data loaded as history: tagged careloop|import (the $import operation tags what it loads)."""
    return any(isinstance(t, dict) and (t.get("system"), t.get("code")) == IMPORT_TAG
               for t in (body.get("meta") or {}).get("tag") or [])


def criteria_codes(topic: Topic, kind: str) -> frozenset[str]:
    """The search parameters a topic's criteria read on one type (its recency date excluded)."""
    return frozenset(f.code for t in topic.triggers if t.resource_type == kind
                     for c in (t.previous, t.current) if c is not None for f in c.filters)


def clinical_key(codes: frozenset[str], rows: IndexRows, body: dict[str, Any]) -> str:
    """A short hash of the index rows of the given parameters (of the whole content when there are none)."""
    if codes:
        picked = sorted(repr(row) for table in (rows.tokens, rows.strings, rows.references, rows.dates, rows.numbers,
                                                rows.quantities, rows.uris, rows.composites)
                        for row in table if row[0] in codes)
        data = orjson.dumps(picked)
    else:
        data = orjson.dumps({k: v for k, v in body.items() if k not in ("meta", "id", "text")},
                            option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:16]


def _fill(text: str, occurrence: Occurrence) -> str:
    return text.replace("{{patient}}", f"Patient/{occurrence.patient}").replace(
        "{{focus}}", f"{occurrence.type}/{occurrence.id}")


async def _no_reads(url: str, source: ReadSource) -> EntryResult:
    raise AssertionError(f"a pathway transaction has no read entries ({url})")


def provenance(target: str, occurrence: Occurrence, at: int) -> dict[str, Any]:
    """The Provenance linking a pathway Task to the trigger version that made it."""
    return {"resourceType": "Provenance", "target": [{"reference": target}], "recorded": format_instant(at),
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                     "code": "CREATE"}]},
            "agent": [ENGINE_AGENT],
            "entity": [{"role": "source", "what": {
                "reference": f"{occurrence.type}/{occurrence.id}/_history/{occurrence.vid}"}}]}


class FollowUp:
    """Turns topic events into pathway Tasks (and cancels or moves the Tasks that follow their trigger)."""

    def __init__(self, repository: Repository, service_levels: dict[str, int], base_url: str) -> None:
        self.repository = repository
        self.service_levels = service_levels
        self.base_url = base_url
        self.owners = Owners(repository)

    def occurrence(self, topic: Topic, change: StoredResource, body: dict[str, Any] | None,
                   rows: IndexRows | None) -> Occurrence | None:
        """The event as pathways see it; None for a deletion or an import."""
        if body is None or rows is None or imported(body):
            return None
        patient = change.id if change.type == "Patient" else (rows.compartments[0] if rows.compartments else None)
        now = now_ms()
        anchor = now
        recent = [t.recent[0] for t in topic.triggers if t.resource_type == change.type and t.recent is not None]
        if recent:
            highs = [high for code, _, high in rows.dates if code == recent[0]]
            anchor = min(max(highs), now) if highs else now
        return Occurrence(topic.url, change.type, change.id, change.vid, body, rows, patient,
                          clinical_key(criteria_codes(topic, change.type), rows, body), anchor)

    async def _holds(self, step: Step, occurrence: Occurrence) -> bool:
        for kind, query in step.conditions:
            if "{{patient}}" in query and occurrence.patient is None:
                return False
            found = [r for r in await find(self.repository, _fill(query, occurrence))
                     if (r.get("resourceType"), r.get("id")) != (occurrence.type, occurrence.id)]
            if bool(found) != (kind == "exists"):
                return False
        return True

    async def run(self, occurrences: list[Occurrence], steps: dict[str, list[Step]],
                  stops: dict[str, list[str]]) -> None:
        """Make the Tasks these events start (each once), after cancelling what the events stop."""
        made: dict[str, tuple[dict[str, Any], Occurrence]] = {}
        memo: dict[tuple[Any, ...], Any] = {}  # owners found in this batch
        for occurrence in occurrences:
            for step in steps.get(occurrence.topic, []):
                try:
                    if not await self._holds(step, occurrence):
                        continue
                    task = await self._task(step, occurrence, memo)
                except FhirError as exc:  # a broken condition query in a clinic's edit: this step only
                    log.warning("Pathway step %s not evaluated: %s", step.key, exc)
                    continue
                if task is not None:
                    made.setdefault(task["identifier"][0]["value"], (task, occurrence))
            for plan in stops.get(occurrence.topic, []):  # after the steps: their conditions may read the plan
                await self._stop(plan, occurrence)
        fresh = [made[v] for v in made if not await self._existing(v)]
        if fresh:
            await self._create(fresh)

    async def _existing(self, value: str) -> dict[str, Any] | None:
        found = await find(self.repository, f"Task?identifier={PATHWAY_EVENT}|{value}&_count=1")
        return found[0] if found else None

    async def _task(self, step: Step, occurrence: Occurrence,
                    memo: dict[tuple[Any, ...], Any]) -> dict[str, Any] | None:
        """The Task this step makes of this event; None when it follows its trigger and was moved or cancelled."""
        now = now_ms()
        owner = await self.owners.owner(step.template, occurrence.patient, now, memo)
        focus = (occurrence.type, occurrence.id, occurrence.vid)
        follows = extension(step.template, FOLLOWS_TRIGGER)
        if not follows:
            return task_for(step, occurrence.key, focus, occurrence.patient, now, self.service_levels,
                            occurrence.anchor_ms, owner)
        # one Task per trigger, whatever its versions: due relative to the trigger's own date, cancelled with it
        code = (follows.get("anchor") or {}).get("valueCode")
        before = duration_ms((follows.get("before") or {}).get("valueDuration")) or 0
        lows = [low for c, low, _ in occurrence.rows.dates if c == code]
        if not lows:
            full = self.repository.indexer.extract(occurrence.type, occurrence.body)
            lows = [low for c, low, _ in full.dates if c == code]
        if not lows or lows[0] <= now:  # no date, or it has passed: nothing to follow (an open Task stays)
            return None
        deadline = lows[0] - before if lows[0] - before > now else lows[0]  # booked late: remind before it starts
        cancel_text = (follows.get("cancel-when") or {}).get("valueString")
        cancelled = False
        if cancel_text:
            criteria = parse_criteria(self.repository.registry, occurrence.type, str(cancel_text),
                                      "cancel-when")
            rows = self.repository.indexer.extract(occurrence.type, occurrence.body)
            cancelled = matches_all(criteria.filters, occurrence.body, rows)
        task = task_for(step, "trigger", focus, occurrence.patient, now, self.service_levels, None, owner,
                        deadline_ms=deadline)
        existing = await self._existing(task["identifier"][0]["value"])
        if existing is None:
            return None if cancelled else task
        if existing.get("status") not in OPEN_STATUSES:
            return None
        changed = dict(existing)
        if cancelled:
            changed["status"] = "cancelled"
            changed["businessStatus"] = {"text": "trigger cancelled"}
        elif existing.get("restriction") != task["restriction"]:
            changed["restriction"] = {"period": {**(existing.get("restriction") or {}).get("period", {}),
                                                 "end": task["restriction"]["period"]["end"]}}
        if changed != existing:
            changed["lastModified"] = format_instant(now)
            await self._save(changed)
        return None

    async def _save(self, task: dict[str, Any]) -> None:
        version = int((task.get("meta") or {}).get("versionId") or 0) or None
        try:
            await self.repository.update("Task", str(task["id"]), task, if_match=version)
        except FhirError as exc:  # changed meanwhile (a person took it): their version stands
            log.info("Task/%s not changed by its trigger: %s", task.get("id"), exc)

    async def _stop(self, plan: str, occurrence: Occurrence) -> None:
        """Cancel the patient's open Tasks of a plan that were made before this event (the patient returned)."""
        if occurrence.patient is None:
            return
        found = await find(self.repository, f"Task?patient=Patient/{occurrence.patient}&based-on=PlanDefinition/"
                                            f"{plan}&status={','.join(OPEN_STATUSES)}&_count=100")
        for task in found:
            authored = str(task.get("authoredOn") or "")
            if authored and authored <= format_instant(occurrence.anchor_ms):
                await self._save({**task, "status": "cancelled", "businessStatus": {"text": "patient returned"},
                                  "lastModified": format_instant(now_ms())})

    async def _create(self, made: list[tuple[dict[str, Any], Occurrence]]) -> None:
        """Create the Tasks, each conditional on its identifier and with its Provenance, in one transaction; one
        by one when that fails (a refused marketing step must not cost the other Tasks)."""
        try:
            await self._transaction(made)
        except FhirError as exc:
            log.debug("Pathway Tasks as one transaction failed (%s); creating them one at a time", exc)
            refused = 0
            for one in made:
                try:
                    await self._transaction([one])
                except Forbidden as each:
                    # a step the patient's Consents refuse (marketing without an opt-in) is the expected outcome
                    # for most patients, not a fault: one line per batch, not one per patient at 2 AM
                    refused += 1
                    log.debug("Pathway Task %s not created: %s", one[0]["identifier"][0]["value"], each)
                except FhirError as each:
                    log.warning("Pathway Task %s not created: %s", one[0]["identifier"][0]["value"], each)
            if refused:
                log.info("%d pathway Tasks not created: the patients' Consents refuse them (e.g. marketing "
                         "without an opt-in)", refused)

    async def _transaction(self, made: list[tuple[dict[str, Any], Occurrence]]) -> None:
        at = now_ms()
        entries = []
        for task, occurrence in made:
            full_url = f"urn:uuid:{uuid.uuid4()}"
            entries.append({"fullUrl": full_url, "resource": task, "request": {
                "method": "POST", "url": "Task",
                "ifNoneExist": f"identifier={PATHWAY_EVENT}|{task['identifier'][0]['value']}"}})
            entries.append({"resource": provenance(full_url, occurrence, at),
                            "request": {"method": "POST", "url": "Provenance"}})
        _, parsed = parse_bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries}, len(entries),
                                 self.base_url)
        await TransactionProcessor(self.repository, self.base_url).run(parsed, _no_reads)
