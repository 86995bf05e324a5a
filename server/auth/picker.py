"""Which patients a signed-in user may pick in a standalone launch: the picker lists and accepts only these.

A RelatedPerson picks their own patient; a Practitioner or PractitionerRole picks among the patients the app's
granted Patient scopes (`user/` or `patient/`) would let them read, decided by the FHIR API's own guard; anyone
else picks nobody. https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from consent.access import Access
from consent.scopes import ResourceScope, ScopeError, parse_scopes
from resources.errors import FhirError
from resources.search.parse import parse_search
from resources.search.query import SearchQuery
from server.auth.launch import CLINICIANS
from server.auth.visibility import read_as, search_as
from server.context import Services

PAGE = 20
NO_FACTS = Access()  # no purposes, roles or organization: scopes alone decide


@dataclass(frozen=True)
class Choice:
    """A patient the picker offers."""

    id: str
    label: str


def _label(id_: str, body: dict[str, Any]) -> str:
    names = body.get("name") or [{}]
    first = names[0] if isinstance(names[0], dict) else {}
    text = " ".join([*first.get("given", []), first.get("family", "")]).strip() or first.get("text", "")
    return str(text or id_)


def clinician_access(scope: str, known_types: frozenset[str], client_id: str, fhir_user: str,
                     facts: Access = NO_FACTS) -> Access:
    """The Patient read the app was granted, as `user/` scopes: the set a clinician picks from (facts: the
    purposes, roles and organization the token will carry)."""
    try:
        granted, _ = parse_scopes(scope, known_types)
    except ScopeError:
        granted = ()
    # a patient/ scope has no patient yet at this point: the picker asks which patients it could be about
    scopes = tuple(ResourceScope("user", "Patient", frozenset("rs"), s.query, s.text) for s in granted
                   if s.applies("Patient", "r"))
    return replace(facts, scopes=scopes, patient=None, client_id=client_id, fhir_user=fhir_user)


async def _related_patient(services: Services, fhir_user: str) -> Choice | None:
    found = await services.repository.store.read("RelatedPerson", fhir_user.split("/", 1)[1])
    body = orjson.loads(found.body or b"{}") if found and not found.deleted else {}
    reference = (body.get("patient") or {}).get("reference")
    if not isinstance(reference, str) or not reference.startswith("Patient/"):
        return None
    patient_id = reference.split("/", 1)[1]
    patient = await services.repository.store.read("Patient", patient_id)
    if patient is None or patient.deleted:
        return None
    return Choice(patient_id, _label(patient_id, orjson.loads(patient.body or b"{}")))


async def choices(services: Services, known_types: frozenset[str], scope: str, client_id: str,
                  fhir_user: str | None, name: str, facts: Access = NO_FACTS) -> tuple[list[Choice], bool]:
    """Up to PAGE patients the user may pick whose name matches `name`, and whether there are more."""
    if fhir_user and fhir_user.startswith("RelatedPerson/"):
        own = await _related_patient(services, fhir_user)
        return ([own] if own and (not name or name.lower() in own.label.lower()) else []), False
    if not fhir_user or not fhir_user.startswith(CLINICIANS):
        return [], False
    params = [("_count", str(PAGE + 1))] + ([("name", name)] if name else [])
    try:
        query = parse_search("Patient", params, services.repository.registry,
                             services.repository.search_limits).query
    except FhirError:
        return [], False
    found = await search_as(services, clinician_access(scope, known_types, client_id, fhir_user, facts),
                            SearchQuery("Patient", query.filters, count=PAGE + 1))
    picked = [Choice(r.id, _label(r.id, orjson.loads(r.body or b"{}"))) for r in found[:PAGE]]
    return picked, len(found) > PAGE


async def may_pick(services: Services, known_types: frozenset[str], scope: str, client_id: str,
                   fhir_user: str | None, patient: str, facts: Access = NO_FACTS) -> bool:
    """True when the user may pick this patient (whatever the reason it may not, the answer is the same)."""
    if fhir_user and fhir_user.startswith("RelatedPerson/"):
        own = await _related_patient(services, fhir_user)
        return own is not None and own.id == patient
    if not fhir_user or not fhir_user.startswith(CLINICIANS):
        return False
    access = clinician_access(scope, known_types, client_id, fhir_user, facts)
    return await read_as(services, access, "Patient", patient) is not None
