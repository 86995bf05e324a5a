"""Segmentation results kept as FHIR resources: tier and lifecycle Observations, a churn RiskAssessment.

One current result per patient and kind, found by its identifier (`segment-result|<kind>-<patient>`): a new
result updates it (the old one stays in its history); a result whose outcome did not change is not written
at all, so a recomputation that finds high churn risk again writes no new version and starts no second
recall. https://hl7.org/fhir/R4B/riskassessment.html https://hl7.org/fhir/R4B/observation.html
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from operations.cohort import scan
from operations.parameters import OperationInput
from operations.segment import STAGE
from resources.errors import MethodNotAllowed
from resources.guard import current_guard
from resources.ids import new_id
from resources.repository import Repository
from resources.search.dates import format_instant
from resources.store.protocol import StoredResource, WriteSession

RESULT = "http://careloop.health/fhir/CodeSystem/careloop"  # tier, lifecycle, previous-stage, churn
IDENTIFIER = "http://careloop.health/fhir/sid/segment-result"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
QUALITATIVE = {"low": "low", "elevated": "moderate", "high": "high"}  # churn level -> risk-probability


def persist_asked(given: OperationInput, operation: str) -> bool:
    """Whether a call asks for its results to be stored: only in a POST, since storing changes data."""
    asked = given.boolean("persist") or False
    if asked and given.query:
        raise MethodNotAllowed(f"persist=true stores results: POST ${operation} with a Parameters body")
    return asked


@dataclass(frozen=True)
class Result:
    """One patient's result of one kind (tier, lifecycle or churn), ready to be written."""

    kind: str
    patient: str
    body: dict[str, Any]

    @property
    def identifier(self) -> str:
        return f"{self.kind}-{self.patient}"

    @property
    def resource_type(self) -> str:
        return str(self.body["resourceType"])


def _base(kind: str, patient: str, now: int) -> dict[str, Any]:
    return {"identifier": [{"system": IDENTIFIER, "value": f"{kind}-{patient}"}], "status": "final",
            "subject": {"reference": f"Patient/{patient}"}}


def observation(kind: str, patient: str, system: str, code: str, reasons: Iterable[str], now: int,
                previous: str | None = None) -> Result:
    """A tier or lifecycle Observation (previous: the stage a lifecycle transition came from)."""
    body = {"resourceType": "Observation", **_base(kind, patient, now),
            "code": {"coding": [{"system": RESULT, "code": kind}]}, "effectiveDateTime": format_instant(now),
            "valueCodeableConcept": {"coding": [{"system": system, "code": code}]},
            "note": [{"text": reason} for reason in reasons]}
    if not body["note"]:
        del body["note"]
    if previous is not None:
        body["component"] = [{"code": {"coding": [{"system": RESULT, "code": "previous-stage"}]},
                              "valueCodeableConcept": {"coding": [{"system": STAGE, "code": previous}]}}]
    return Result(kind, patient, body)


def churn(patient: str, level: str, probability: float, basis: Iterable[str], notes: Iterable[str],
          now: int) -> Result:
    """The churn RiskAssessment: outcome churn, its probability and qualitative risk, the evidence as basis."""
    body = {"resourceType": "RiskAssessment", **_base("churn", patient, now),
            "code": {"coding": [{"system": RESULT, "code": "churn"}]}, "occurrenceDateTime": format_instant(now),
            "basis": [{"reference": ref} for ref in basis],
            "prediction": [{"outcome": {"coding": [{"system": RESULT, "code": "churn"}]},
                            "probabilityDecimal": probability,
                            "qualitativeRisk": {"coding": [{"system": RISK_PROBABILITY,
                                                            "code": QUALITATIVE[level]}]}}],
            "note": [{"text": note} for note in notes]}
    # FHIR JSON has no empty arrays: a low risk has no basis
    return Result("churn", patient, {k: v for k, v in body.items() if v != []})


def outcome(body: dict[str, Any]) -> tuple[Any, ...]:
    """What decides whether a result changed: the coded value (and the probability of a churn result)."""
    if body.get("resourceType") == "RiskAssessment":
        prediction = (body.get("prediction") or [{}])[0]
        risk = [c.get("code") for c in (prediction.get("qualitativeRisk") or {}).get("coding") or []]
        return tuple(risk), prediction.get("probabilityDecimal")
    return tuple((c.get("system"), c.get("code")) for c in (body.get("valueCodeableConcept") or {}).get("coding")
                 or [])


async def current(repo: Repository, resource_type: str, kind: str, patient: str | None
                  ) -> dict[str, dict[str, Any]]:
    """The current results of one kind by identifier value (one patient's, or all the caller may see)."""
    # `system|` matches every result; the kind is the identifier's prefix
    params = [("identifier", f"{IDENTIFIER}|" + ("" if patient is None else f"{kind}-{patient}"))]
    found = {}
    async for body in scan(repo, resource_type, params):
        for ident in body.get("identifier") or []:
            if ident.get("system") == IDENTIFIER and str(ident.get("value")).startswith(f"{kind}-"):
                found[str(ident.get("value"))] = body
    return found


async def _matches(repo: Repository, session: WriteSession, results: list[Result]) -> dict[str, StoredResource]:
    """The current result each identifier names, as the transaction sees it (whoever may see it: one per patient)."""
    found: dict[str, StoredResource] = {}
    step = repo.search_limits.max_or_values
    for kind in sorted({r.resource_type for r in results}):
        mine = [r for r in results if r.resource_type == kind]
        for at in range(0, len(mine), step):
            values = ",".join(f"{IDENTIFIER}|{r.identifier}" for r in mine[at:at + step])
            query = replace(repo.parse_criteria(kind, [("identifier", values)], "Conditional update"), count=2 * step)
            for stored in (await session.search(query)).resources:
                for ident in orjson.loads(stored.body or b"{}").get("identifier") or []:
                    if ident.get("system") == IDENTIFIER:
                        found[str(ident.get("value"))] = stored
    return found


async def write(repo: Repository, results: Iterable[Result], existing: dict[str, dict[str, Any]],
                batch: int = 1000) -> int:
    """Write the results whose outcome changed (existing: current results by identifier); how many were written.

    Many results share one transaction (a commit each would take a population of 10,000 minutes). Inside it,
    each is a conditional update on its identifier: the current result is looked up again there, so racing
    recomputations leave one current result. The caller's update scope is checked as for PUT, and each write
    as any write is (the guard's visibility and consent checks in Repository.prepare).
    """
    changed = [r for r in results if (before := existing.get(r.identifier)) is None
               or outcome(before) != outcome(r.body)]
    guard = current_guard()
    validated: set[str] = set()
    for result in changed:
        if result.kind not in validated:  # results of one kind share their shape: one check each per call
            if guard is not None:
                guard.require(result.resource_type, "u")
            await repo.validate(result.body, result.resource_type)
            validated.add(result.kind)
    for at in range(0, len(changed), batch):
        chunk = changed[at:at + batch]
        async with repo.store.write_session() as session:
            current = await _matches(repo, session, chunk)
            writes = []
            for result in chunk:
                now = current.get(result.identifier)
                id_ = now.id if now is not None else new_id()
                writes.append(repo.prepare(result.resource_type, id_, {**result.body, "id": id_},
                                           now.vid + 1 if now else 1, repo.clock(), "update" if now else "create",
                                           now.vid if now else 0, "PUT", current=now))
            await session.apply(writes)
    return len(changed)
