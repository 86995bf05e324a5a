"""Satisfaction surveys: an answered survey completes its Task and becomes the scores the measures read.

A QuestionnaireResponse to the shipped survey (`SURVEY`), completed or amended, is linked to its Task by the
extension `SURVEY_TASK` (valueReference Task/<id>), or by `basedOn` naming a Task; without either, it answers
the patient's oldest open survey Task (one whose input or focus names the survey, or coded
`follow-up-task#satisfaction-survey`). The Task is completed with the response as its output; the answers
become an Observation `churn-signal#satisfaction` (1 to 5, what $churn-risk reads) and one
`follow-up-measure#nps` (0 to 10), each derived from the response. Responses are read from the change feed
after their commit, from a durable position; every effect is keyed by the response (Observation identifiers,
the Task's output), so a response sent again, or handled again after a restart, makes nothing new. Of several
instances on one store, the holder of the worker's lease reads the feed; another takes over from the stored position.
https://hl7.org/fhir/R4B/questionnaireresponse.html, https://hl7.org/fhir/R4B/task.html
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from resources.errors import FhirError
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import format_instant
from resources.search.parse import parse_search
from resources.store.lease import JobLease
from resources.store.protocol import StoredResource, Write

log = logging.getLogger("careloop.surveys")

SURVEY = "http://careloop.health/fhir/Questionnaire/satisfaction"
SURVEY_TASK = "http://careloop.health/fhir/StructureDefinition/survey-task"
ANSWER = "http://careloop.health/fhir/sid/survey-answer"  # Observation.identifier value: <response id>-<linkId>
SATISFACTION = ("http://careloop.health/fhir/CodeSystem/churn-signal", "satisfaction", 1, 5)
NPS = ("http://careloop.health/fhir/CodeSystem/follow-up-measure", "nps", 0, 10)
SURVEY_CODE = ("http://careloop.health/fhir/CodeSystem/follow-up-task", "satisfaction-survey")
OPEN_STATUSES = "requested,received,accepted,in-progress,on-hold,ready"
CURSOR = "surveys:cursor"
_CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}
_BATCH = 500
_POLL_S = 1.0  # how often the feed is looked at for other instances' commits (a local one wakes at once)
LEASE = "subscriptions:surveys"


def answers(response: dict[str, Any]) -> dict[str, Any]:
    """linkId -> the first answer's value (integer, decimal or string), over nested items."""
    found: dict[str, Any] = {}
    stack = list(response.get("item") or [])
    while stack:
        item = stack.pop()
        if not isinstance(item, dict):
            continue
        stack.extend(item.get("item") or [])
        for answer in item.get("answer") or []:
            if not isinstance(answer, dict):
                continue
            stack.extend(answer.get("item") or [])
            value = next((answer[k] for k in ("valueInteger", "valueDecimal", "valueString") if k in answer), None)
            if value is not None and item.get("linkId") not in found:
                found[str(item.get("linkId"))] = value
    return found


def asks_survey(task: dict[str, Any]) -> bool:
    """Whether a Task asks for the shipped survey (its input or focus names it, or it is coded as the survey)."""
    for given in task.get("input") or []:
        if isinstance(given, dict) and str(given.get("valueCanonical", "")).split("|")[0] == SURVEY:
            return True
    focus = (task.get("focus") or {})
    if str(focus.get("reference", "")).split("|")[0] in (SURVEY, "Questionnaire/satisfaction"):
        return True
    return any((c.get("system"), c.get("code")) == SURVEY_CODE for c in (task.get("code") or {}).get("coding") or [])


def linked_task(response: dict[str, Any]) -> str | None:
    """The Task id a response names (the survey-task extension, or basedOn Task/<id>)."""
    refs = [e.get("valueReference") for e in response.get("extension") or []
            if isinstance(e, dict) and e.get("url") == SURVEY_TASK]
    refs += list(response.get("basedOn") or [])
    for ref in refs:
        text = str((ref or {}).get("reference", "")) if isinstance(ref, dict) else ""
        if text.startswith("Task/"):
            return text.split("/")[1]
    return None


def score(answer: Any, low: int, high: int) -> int | None:
    """An integer answer within [low, high], else None (an out-of-range answer is no score)."""
    if isinstance(answer, bool) or not isinstance(answer, int | float) or int(answer) != answer:
        return None
    return int(answer) if low <= answer <= high else None


class SurveyWorker:
    """Reads survey responses from the change feed and completes their Tasks and scores."""

    def __init__(self, repository: Repository, clock: Callable[[], int] = now_ms) -> None:
        self.repository = repository
        self.clock = clock
        self.cursor = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lease = JobLease(repository.store, LEASE)
        self.active = False

    async def start(self) -> None:
        """Take the lease when free and find the feed position (now, on first start); start watching."""
        if await self.lease.held():
            await self._take_over()
        self._task = asyncio.create_task(self._loop(), name="survey-worker")
        self._wake.set()

    async def close(self) -> None:
        """Stop watching (the position is saved after each batch)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.active = False
        with contextlib.suppress(FhirError):  # another instance takes over at once
            await self.lease.release()

    async def _take_over(self) -> None:
        """Read from the stored position (another instance may have moved it)."""
        store = self.repository.store
        found = await store.mark(CURSOR)
        self.cursor = found if found is not None else await store.last_seq()
        if found is None:
            await store.set_mark(CURSOR, self.cursor)
        self.active = True

    def on_commit(self, writes: list[Write]) -> None:
        """A commit with a QuestionnaireResponse wakes the worker."""
        if any(w.type == "QuestionnaireResponse" for w in writes):
            self._idle.clear()
            self._wake.set()

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until every committed response has been handled (for tests)."""
        self._idle.clear()
        self._wake.set()
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # other instances' commits wake no one here: look each second
                await asyncio.wait_for(self._wake.wait(), _POLL_S)
            self._wake.clear()
            try:
                if not await self.lease.held():
                    self.active = False
                    if not self._wake.is_set():
                        self._idle.set()
                    continue
                if not self.active:
                    await self._take_over()
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching: one bad batch must not stop every later survey
                log.exception("Survey worker: a batch failed; retrying shortly")
                await asyncio.sleep(1.0)
                self._wake.set()
                continue
            if not self._wake.is_set():
                self._idle.set()

    async def _drain(self) -> None:
        store = self.repository.store
        until = await store.last_seq()
        while self.cursor < until:
            if not await self.lease.held():  # renewed batch by batch; lost, the new holder reads from the mark
                self.active = False
                return
            batch = await store.changes(self.cursor, until, {"QuestionnaireResponse"}, _BATCH)
            for change in batch:
                await self.handle(change)
            self.cursor = batch[-1].seq if len(batch) == _BATCH else until
            await store.set_mark(CURSOR, self.cursor)

    async def handle(self, change: StoredResource) -> None:
        """Complete the Task and record the scores of one response version (repeatable)."""
        if change.deleted or not change.body:
            return
        response: dict[str, Any] = orjson.loads(change.body)
        if (str(response.get("questionnaire", "")).split("|")[0] != SURVEY
                or response.get("status") not in ("completed", "amended")):
            return
        subject = str((response.get("subject") or {}).get("reference", ""))
        patient = subject.split("/")[1] if subject.startswith("Patient/") else None
        given = answers(response)
        reference = f"QuestionnaireResponse/{change.id}"
        when = response.get("authored") or format_instant(self.clock())
        for (system, code, low, high) in (SATISFACTION, NPS):
            value = score(given.get(code), low, high)
            if value is not None and patient is not None:
                await self._observation(reference, change.id, patient, system, code, value, when)
        await self._complete(response, reference, patient)

    async def _observation(self, reference: str, response_id: str, patient: str, system: str, code: str, value: int,
                           when: str) -> None:
        identifier = {"system": ANSWER, "value": f"{response_id}-{code}"}
        observation = {"resourceType": "Observation", "identifier": [identifier], "status": "final",
                       "category": [_CATEGORY], "code": {"coding": [{"system": system, "code": code}]},
                       "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": when,
                       "valueInteger": value, "derivedFrom": [{"reference": reference}]}
        try:
            outcome = await self.repository.create("Observation", observation,
                                                   if_none_exist=[("identifier", f"{ANSWER}|{identifier['value']}")])
            if outcome.created:
                return
            stored = orjson.loads(outcome.resource.body or b"{}")
            if stored.get("valueInteger") != value or stored.get("effectiveDateTime") != when:  # an amended answer
                await self.repository.update("Observation", outcome.resource.id, {**observation,
                                                                                  "id": outcome.resource.id},
                                             if_match=outcome.resource.vid)
        except FhirError as exc:
            log.warning("Survey answer %s of %s not recorded: %s", code, reference, exc)

    async def _task_for(self, response: dict[str, Any], patient: str | None) -> StoredResource | None:
        named = linked_task(response)
        if named is not None:
            try:
                return await self.repository.read("Task", named)
            except FhirError:
                return None
        if patient is None:
            return None
        query = parse_search("Task", [("patient", patient), ("status", OPEN_STATUSES), ("_sort", "authored-on"),
                                      ("_count", "50")], self.repository.registry, strict=True).query
        for stored in (await self.repository.search(query)).resources:
            if asks_survey(orjson.loads(stored.body or b"{}")):
                return stored
        return None

    async def _complete(self, response: dict[str, Any], reference: str, patient: str | None) -> None:
        stored = await self._task_for(response, patient)
        if stored is None or not stored.body:
            return
        task: dict[str, Any] = orjson.loads(stored.body)
        outputs = list(task.get("output") or [])
        if any((o.get("valueReference") or {}).get("reference") == reference for o in outputs if isinstance(o, dict)):
            return  # completed by this response already
        if task.get("status") in ("completed", "cancelled", "failed", "rejected", "entered-in-error"):
            return  # closed otherwise: a later response does not reopen or rewrite it
        task.pop("meta", None)
        outputs.append({"type": {"coding": [{"system": "http://hl7.org/fhir/resource-types",
                                             "code": "QuestionnaireResponse"}], "text": "survey answers"},
                        "valueReference": {"reference": reference}})
        task.update(status="completed", output=outputs, lastModified=format_instant(self.clock()))
        try:
            await self.repository.update("Task", stored.id, task, if_match=stored.vid)
        except FhirError as exc:  # changed meanwhile: the next version of the response tries again
            log.info("Survey Task/%s not completed by %s: %s", stored.id, reference, exc)
