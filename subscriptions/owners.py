"""Who owns a pathway Task: the template's owner rule, resolved per patient, else the template's default team.

Rules are data on the ActivityDefinition (extension task-owner: `rule`, `tier`, `default`), so a clinic edits
them with a PUT. `health-manager`: the patient's own health manager (a participant with role health-manager
in the patient's active CareTeam, else Patient.generalPractitioner), only for patients of the given tier (their
latest tier Observation). `own-doctor`: Patient.generalPractitioner. `on-duty`: the member of the on-duty
CareTeam whose participant.period covers now.
https://hl7.org/fhir/R4B/task.html#Task.owner, https://hl7.org/fhir/R4B/careteam.html
"""

from __future__ import annotations

from typing import Any

import orjson

from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import date_range
from subscriptions.pathways import TASK_OWNER, extension
from subscriptions.queries import find

ROLE_SYSTEM = "http://careloop.health/fhir/CodeSystem/care-role"
HEALTH_MANAGER = "health-manager"
TIER = ("http://careloop.health/fhir/CodeSystem/careloop", "tier")
ON_DUTY_TEAM = "CareTeam/on-duty-doctors"


def owner_rule(template: dict[str, Any]) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """(rule, tier, default owner reference) of a template; all None when it names no owner."""
    parts = extension(template, TASK_OWNER)
    default = (parts.get("default") or {}).get("valueReference")
    return ((parts.get("rule") or {}).get("valueCode"), (parts.get("tier") or {}).get("valueCode"),
            default if isinstance(default, dict) else None)


def _ref(value: Any) -> dict[str, Any] | None:
    return {"reference": value["reference"]} if isinstance(value, dict) and value.get("reference") else None


def _has_role(participant: dict[str, Any], code: str) -> bool:
    return any(c.get("system") == ROLE_SYSTEM and c.get("code") == code
               for role in participant.get("role") or [] for c in role.get("coding") or [])


def _covers(period: dict[str, Any] | None, at: int) -> bool:
    """True when the period (open ends allowed) contains the instant."""
    if not period:
        return False
    start = date_range(str(period["start"])) if period.get("start") else None
    end = date_range(str(period["end"])) if period.get("end") else None
    return (start is None or start[0] <= at) and (end is None or end[1] >= at)


class Owners:
    """Resolves the owner of a template's Task for one patient from the store."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    async def tier(self, patient: str) -> str | None:
        """The patient's latest persisted tier (Observation code careloop|tier), or None."""
        found = await find(self.repository, f"Observation?subject=Patient/{patient}&code={TIER[0]}|{TIER[1]}"
                                            f"&_sort=-date&_count=1")
        for body in found:
            concept = body.get("valueCodeableConcept") or {}
            for coding in concept.get("coding") or []:
                if coding.get("code"):
                    return str(coding["code"])
            if body.get("valueString"):
                return str(body["valueString"])
        return None

    async def health_manager(self, patient: str) -> dict[str, Any] | None:
        """The health manager of the patient's active CareTeam, else the patient's own doctor."""
        teams = await find(self.repository, f"CareTeam?subject=Patient/{patient}&status=active")
        for team in teams:
            for participant in team.get("participant") or []:
                if _has_role(participant, HEALTH_MANAGER) and _ref(participant.get("member")):
                    return _ref(participant.get("member"))
        return await self.own_doctor(patient)

    async def own_doctor(self, patient: str) -> dict[str, Any] | None:
        """The patient's own doctor: the first Patient.generalPractitioner."""
        found = await self.repository.store.read("Patient", patient)
        body = orjson.loads(found.body) if found is not None and found.body else {}
        return next((_ref(gp) for gp in body.get("generalPractitioner") or [] if _ref(gp)), None)

    async def on_duty(self, at: int) -> dict[str, Any] | None:
        """The on-duty doctor now: the on-duty CareTeam's member whose period covers the instant."""
        found = await self.repository.store.read(*ON_DUTY_TEAM.split("/"))
        if found is None or not found.body:
            return None
        for participant in orjson.loads(found.body).get("participant") or []:
            if _covers(participant.get("period"), at) and _ref(participant.get("member")):
                return _ref(participant.get("member"))
        return None

    async def owner(self, template: dict[str, Any], patient: str | None, at: int | None = None,
                    memo: dict[tuple[Any, ...], Any] | None = None) -> dict[str, Any] | None:
        """The owner the template's rule finds for this patient, else its default (None when it names none);
        memo: answers already found in this batch (one event's steps mostly share a rule and a patient)."""
        rule, tier, default = owner_rule(template)
        key = (rule, tier, orjson.dumps(default), patient)
        if memo is not None and key in memo:
            found: dict[str, Any] | None = memo[key]
            return found
        answer = await self._owner(rule, tier, default, patient, at)
        if memo is not None:
            memo[key] = answer
        return answer

    async def _owner(self, rule: str | None, tier: str | None, default: dict[str, Any] | None, patient: str | None,
                     at: int | None) -> dict[str, Any] | None:
        found = None
        if rule == "health-manager" and patient is not None and (tier is None or await self.tier(patient) == tier):
            found = await self.health_manager(patient)
        elif rule == "own-doctor" and patient is not None:
            found = await self.own_doctor(patient)
        elif rule == "on-duty":
            found = await self.on_duty(now_ms() if at is None else at)
        return found or _ref(default)
