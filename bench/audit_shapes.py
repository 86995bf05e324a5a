"""AuditEvents in the IHE BALP shapes of SECURITY.md §4, built for tests and the generated g3 trail.

The server's own recorder (issue 29, items 1-4) writes these shapes; the compliance queries, the access
report and retention are tested and measured on events of the same shape, made here.
https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consent.audit.shapes import (  # the code systems the server's own recorder writes
    ACT_REASON,
    AUDIT_TYPE,
    BALP_ENTITY,
    DCM,
    ENTITY_TYPE,
    INTERACTION,
    JTI_PREFIX,
    OBJECT_ROLE,
    PARTICIPATION,
    RESOURCE_TYPES,
    ROLE_CLASS,
    SECURITY_ROLE,
)
from resources.search.dates import format_instant

AUTHZ = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
JTI = JTI_PREFIX
SERVER = "Device/careloop"

# interaction -> (action, subtype code, role of the data entity: 4 domain resource, 3 report, 20 job)
KINDS = {"read": ("R", "read"), "vread": ("R", "vread"), "search": ("E", "search-type"),
         "create": ("C", "create"), "update": ("U", "update"), "patch": ("U", "patch"),
         "delete": ("D", "delete")}


@dataclass(frozen=True)
class Who:
    """The caller of one request: its app (client), its user, why it asked and with which token."""

    client: str
    user: str | None = None  # fhirUser (Practitioner/P, Patient/P) or the token's sub
    role: str | None = None  # e.g. clinician
    purposes: tuple[str, ...] = ("TREAT",)
    jti: str | None = None
    address: str = "10.0.0.1"
    organization: str | None = None


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    found = {"system": system, "code": code}
    if display:
        found["display"] = display
    return found


def _purposes(codes: Sequence[str]) -> list[dict[str, Any]]:
    return [{"coding": [_coding(ACT_REASON, code)]} for code in codes]


def _agents(who: Who) -> list[dict[str, Any]]:
    # the token id travels in the requesting agent's policy (BALP: agent.policy is the token's identifier)
    policy = [JTI + who.jti] if who.jti else []
    client: dict[str, Any] = {"type": {"coding": [_coding(DCM, "110150", "Application")]},
                              "who": {"identifier": {"value": who.client}}, "requestor": who.user is None,
                              "network": {"address": who.address, "type": "2"}}
    agents = [client, {"type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
                       "who": {"reference": SERVER}, "requestor": False}]
    if who.user is not None:
        user: dict[str, Any] = {"type": {"coding": [_coding(PARTICIPATION, "IRCP", "information recipient")]},
                                "who": {"reference": who.user}, "requestor": True}
        if who.role:
            user["role"] = [{"text": who.role}]
        if who.purposes:
            user["purposeOfUse"] = _purposes(who.purposes)
        if policy:
            user["policy"] = policy
        agents.append(user)
    else:
        if who.purposes:
            client["purposeOfUse"] = _purposes(who.purposes)
        if policy:
            client["policy"] = policy
    if who.organization:
        agents.append({"type": {"coding": [_coding(ROLE_CLASS, "PROV", "healthcare provider")]},
                       "who": {"reference": who.organization}, "requestor": False})
    return agents


def _transaction(request_id: str) -> dict[str, Any]:
    return {"type": _coding(BALP_ENTITY, "XrequestId"), "what": {"identifier": {"value": request_id}}}


def _patient_entity(patient: str) -> dict[str, Any]:
    return {"type": _coding(ENTITY_TYPE, "1", "Person"), "role": _coding(OBJECT_ROLE, "1", "Patient"),
            "what": {"reference": f"Patient/{patient}"}}


def rest_event(kind: str, who: Who, recorded_ms: int, request_id: str, *, patient: str | None = None,
               data: Sequence[str] = (), query: str | None = None, outcome: str = "0",
               outcome_desc: str | None = None, btg_reason: str | None = None) -> dict[str, Any]:
    """A Read/Query/Create/Update/Delete event, the Patient* variant when `patient` is given."""
    action, subtype = KINDS[kind]
    entities = [_transaction(request_id)]
    for what in data:
        entities.append({"type": _coding(ENTITY_TYPE, "2", "System Object"),
                         "role": _coding(OBJECT_ROLE, "4", "Domain Resource"), "what": {"reference": what}})
    if query is not None:
        entities.append({"type": _coding(ENTITY_TYPE, "2", "System Object"),
                         "role": _coding(OBJECT_ROLE, "24", "Query"),
                         "query": base64.b64encode(query.encode()).decode(), "description": query})
    if patient is not None:
        entities.append(_patient_entity(patient))
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": _coding(AUDIT_TYPE, "rest", "RESTful Operation"),
        "subtype": [_coding(INTERACTION, subtype)], "action": action, "recorded": format_instant(recorded_ms),
        "outcome": outcome, "agent": _agents(who), "source": {"observer": {"reference": SERVER}},
        "entity": entities}
    _reason(event, who, outcome_desc, btg_reason)
    return event


def consent_event(who: Who, recorded_ms: int, request_id: str, patient: str, *, permit: bool,
                  consents: Sequence[str] = (), reason: str | None = None,
                  btg_reason: str | None = None) -> dict[str, Any]:
    """An AuthZ-Consent decision (BALP AuthZconsent): permit or deny, naming the Consents used and the token."""
    entities = [_transaction(request_id), _patient_entity(patient)]
    for consent in consents:
        entities.append({"type": _coding(RESOURCE_TYPES, "Consent"), "role": _coding(OBJECT_ROLE, "4"),
                         "what": {"reference": consent}})
    if who.jti:
        entities.append({"type": _coding(BALP_ENTITY, "token"),
                         "what": {"identifier": {"value": JTI + who.jti}}})
    agents = _agents(who)
    agents.append({"type": {"coding": [_coding(SECURITY_ROLE, "authserver", "authorization server")]},
                   "who": {"reference": SERVER}, "requestor": False})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": _coding(DCM, "110113", "Security Alert"),
        "subtype": [_coding(AUTHZ, "AuthZ-Consent")], "action": "E", "recorded": format_instant(recorded_ms),
        "outcome": "0" if permit else "4", "agent": agents, "source": {"observer": {"reference": SERVER}},
        "entity": entities}
    _reason(event, who, reason, btg_reason)
    return event


def _reason(event: dict[str, Any], who: Who, outcome_desc: str | None, btg_reason: str | None) -> None:
    # break-glass: purposeOfEvent BTG and the reason the user gave in outcomeDesc (SECURITY.md §4, our additions)
    if btg_reason is not None or "BTG" in who.purposes:
        event["purposeOfEvent"] = _purposes(["BTG"])
        event["outcomeDesc"] = btg_reason or outcome_desc or "break-glass"
    elif outcome_desc:
        event["outcomeDesc"] = outcome_desc
