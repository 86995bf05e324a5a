"""AuditEvents in the IHE Basic Audit Log Patterns shapes (SECURITY.md §4): pure builders, one per profile.

https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from consent.access import Access
from consent.decisions import DecisionRecord

AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
NETWORK_TYPE = "http://terminology.hl7.org/CodeSystem/network-type"  # R4B's AuditEventAgentNetworkType codes
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
SUBTYPE = "http://careloop.health/fhir/CodeSystem/audit-subtype"
USER_ROLE = "http://careloop.health/fhir/CodeSystem/user-role"
OPERATION = "http://careloop.health/fhir/CodeSystem/operation"
JTI_PREFIX = "urn:ietf:params:oauth:jti:"
ACTIONS = {"read": "R", "vread": "R", "history-instance": "R", "history-type": "R", "history-system": "R",
           "search-type": "E", "search-system": "E", "create": "C", "update": "U", "patch": "U", "delete": "D",
           "operation": "E", "batch": "E", "transaction": "E"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Exchange:
    """One FHIR request as the audit trail saw it."""

    request_id: str
    interaction: str  # a restful-interaction code (read, search-type, create, operation, ...)
    status: int
    recorded: str
    resource_type: str | None = None
    resource_id: str | None = None
    operation: str | None = None  # "everything" for $everything
    raw_query: bytes = b""  # the request as received: method, path and query string (and a _search form body)
    address: str | None = None
    server: str = "CareLoop"
    outcome_text: str | None = None  # the OperationOutcome diagnostics of a failure


@dataclass(frozen=True)
class Touched:
    """A resource the request returned or wrote, and the patients whose compartment holds it."""

    type: str
    id: str
    vid: int
    patients: tuple[str, ...] = ()
    action: str = ""  # create | update | delete for writes, "" for what was returned


@dataclass
class Caller:
    """The agents of an event, from the Access (empty fields when authorization is off)."""

    access: Access
    extra_roles: tuple[str, ...] = field(default_factory=tuple)


def outcome(status: int) -> str:
    """BALP outcome: 0 success, 4 minor failure (4xx, denials), 8 serious failure (5xx)."""
    return "0" if status < 400 else ("4" if status < 500 else "8")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    found = {"system": system, "code": code}
    if display:
        found["display"] = display
    return found


def _reference(value: str) -> dict[str, Any]:
    return {"reference": value} if "/" in value else {"identifier": {"value": value}}


# Agents depend on the caller, its address and the server only, and are never changed once built (events share
# them, and serialising them does not copy): built once per caller rather than per event. Bounded, cleared when full.
_AGENTS: dict[tuple[Access, str | None, str | None, str], list[dict[str, Any]]] = {}
_AGENTS_KEPT = 4096


def agents(access: Access, exchange: Exchange) -> list[dict[str, Any]]:
    """agent[client], agent[server] and agent[user] of SECURITY.md §4 (shared: never change the list returned)."""
    key = (access, access.jti, exchange.address, exchange.server)  # an Access compares without its jti
    found = _AGENTS.get(key)
    if found is None:
        if len(_AGENTS) >= _AGENTS_KEPT:
            _AGENTS.clear()
        found = _AGENTS[key] = _agents(access, exchange)
    return found


def _agents(access: Access, exchange: Exchange) -> list[dict[str, Any]]:
    purposes = [{"coding": [_coding(ACT_REASON, p)]} for p in access.purposes]
    found: list[dict[str, Any]] = []
    client: dict[str, Any] = {"type": {"coding": [_coding(DCM, "110150", "Application")]}, "requestor": False,
                              "who": {"identifier": {"system": "urn:ietf:params:oauth:client-id",
                                                     "value": access.client_id or "unknown"}}}
    if exchange.address:
        client["network"] = {"address": exchange.address, "type": "2"}
    found.append(client)
    found.append({"type": {"coding": [_coding(DCM, "110153", "Source Role ID")]}, "requestor": False,
                  "who": {"display": exchange.server}})
    user: dict[str, Any] = {"type": {"coding": [_coding(PARTICIPATION, "IRCP", "information recipient")]},
                            "requestor": True}
    if access.fhir_user:
        user["who"] = _reference(access.fhir_user)
    elif access.unrestricted:
        user["who"] = {"display": "anyone (authorization is off)"}
    else:
        user["who"] = {"identifier": {"system": "urn:ietf:params:oauth:client-id",
                                      "value": access.client_id or "unknown"}}
    if access.roles:
        user["role"] = [{"coding": [_coding(USER_ROLE, r)], "text": r} for r in access.roles]
    if purposes:
        user["purposeOfUse"] = purposes
    if access.jti:
        user["policy"] = [JTI_PREFIX + access.jti]
    if exchange.address:
        user["network"] = {"address": exchange.address, "type": "2"}
    found.append(user)
    return found


def _transaction(exchange: Exchange) -> dict[str, Any]:
    return {"type": _coding(BALP_ENTITY, "XrequestId"), "what": {"identifier": {"value": exchange.request_id}}}


def _patient(patient: str) -> dict[str, Any]:
    return {"type": _coding(ENTITY_TYPE, "1", "Person"), "role": _coding(OBJECT_ROLE, "1", "Patient"),
            "what": {"reference": f"Patient/{patient}"}}


def _data(reference: str) -> dict[str, Any]:
    return {"type": _coding(ENTITY_TYPE, "2", "System Object"), "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
            "what": {"reference": reference}}


def cleaned(raw: bytes) -> str:
    """The query a person can read: decoded, without control characters (the raw bytes stay in entity.query)."""
    return _CONTROL.sub("", unquote_plus(raw.decode("utf-8", "replace")))


def _query(exchange: Exchange) -> dict[str, Any]:
    return {"type": _coding(ENTITY_TYPE, "2", "System Object"), "role": _coding(OBJECT_ROLE, "24", "Query"),
            "query": base64.b64encode(exchange.raw_query).decode(), "description": cleaned(exchange.raw_query)}


def _base(exchange: Exchange, access: Access, subtype: list[dict[str, Any]], action: str,
          shared_agents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    # the events of one request share their agents (never changed once built): a search of 20 patients builds
    # them once, not 20 times
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": _coding(AUDIT_TYPE, "rest", "Restful Operation"), "subtype": subtype,
        "action": action, "recorded": exchange.recorded, "outcome": outcome(exchange.status),
        "agent": shared_agents if shared_agents is not None else agents(access, exchange),
        "source": {"observer": {"display": exchange.server},
                   "type": [_coding(SOURCE_TYPE, "4", "Application Server")]},
        "entity": [_transaction(exchange)]}
    if access.purposes:
        event["purposeOfEvent"] = [{"coding": [_coding(ACT_REASON, p)]} for p in access.purposes]
    if access.btg_reason:
        event["purposeOfEvent"] = [{"coding": [_coding(ACT_REASON, "BTG", "break the glass")]}]
        event["outcomeDesc"] = access.btg_reason
    if exchange.outcome_text and exchange.status >= 400:
        event["outcomeDesc"] = exchange.outcome_text
    return event


def _subtype(exchange: Exchange) -> list[dict[str, Any]]:
    found = [_coding(INTERACTION, exchange.interaction)]
    if exchange.operation:
        found.append(_coding(OPERATION, f"${exchange.operation}"))
    return found


def interaction_events(exchange: Exchange, access: Access, touched: Sequence[Touched]) -> list[dict[str, Any]]:
    """The events of one request's interaction: one per resource read or written, one per patient searched."""
    action = ACTIONS.get(exchange.interaction, "E")
    subtype = _subtype(exchange)
    if exchange.interaction.startswith("search") or exchange.interaction == "operation":
        return _per_patient(exchange, access, subtype, action, touched)
    events = []
    for item in touched:
        if exchange.interaction in ("batch", "transaction") and not item.action:
            continue  # what a batch read is in its own entries' answers; its writes are recorded one by one
        own_action = {"create": "C", "update": "U", "delete": "D"}.get(item.action, action)
        own_subtype = subtype if not item.action or exchange.interaction in ("create", "update", "patch", "delete") \
            else [_coding(INTERACTION, item.action)]
        event = _base(exchange, access, own_subtype, own_action)
        event["entity"].append(_data(f"{item.type}/{item.id}/_history/{item.vid}"))
        event["entity"].extend(_patient(p) for p in item.patients)
        events.append(event)
    if exchange.interaction in ("batch", "transaction") or not events:
        event = _base(exchange, access, subtype, action)
        if exchange.resource_type:
            target = exchange.resource_type + (f"/{exchange.resource_id}" if exchange.resource_id else "")
            event["entity"].append(_data(target))
        events.insert(0, event)
    return events


def _per_patient(exchange: Exchange, access: Access, subtype: list[dict[str, Any]], action: str,
                 touched: Sequence[Touched]) -> list[dict[str, Any]]:
    patients = list(dict.fromkeys(p for item in touched for p in item.patients))
    events = []
    shared, query = agents(access, exchange), _query(exchange)
    for patient in patients or [None]:
        event = _base(exchange, access, subtype, action, shared)
        event["entity"].append(query)
        if exchange.operation and exchange.resource_type:
            target = exchange.resource_type + (f"/{exchange.resource_id}" if exchange.resource_id else "")
            event["entity"].append(_data(target))
        if patient is not None:
            event["entity"].append(_patient(patient))
        events.append(event)
    return events


def consent_event(exchange: Exchange, access: Access, decision: DecisionRecord) -> dict[str, Any]:
    """AuthZ-Consent: one consent decision (permit or deny), the Consents used and the token (BALP AuthZconsent)."""
    roles = [{"coding": [_coding(USER_ROLE, r)], "text": r} for r in access.roles]
    user: dict[str, Any] = {"type": {"coding": [_coding(PARTICIPATION, "IRCP", "information recipient")]},
                            "requestor": True, "who": _reference(access.fhir_user or access.client_id or "unknown")}
    if roles:
        user["role"] = roles
    if access.purposes:
        user["purposeOfUse"] = [{"coding": [_coding(ACT_REASON, p)]} for p in access.purposes]
    if access.jti:
        user["policy"] = [JTI_PREFIX + access.jti]
    client: dict[str, Any] = {"type": {"coding": [_coding(DCM, "110150", "Application")]}, "requestor": False,
                              "who": {"identifier": {"system": "urn:ietf:params:oauth:client-id",
                                                     "value": access.client_id or "unknown"}}}
    if exchange.address:
        client["network"] = {"address": exchange.address, "type": "2"}
    found = [client, user]
    if access.organization:
        found.append({"type": {"coding": [_coding(ROLE_CLASS, "PROV", "healthcare provider")]}, "requestor": False,
                      "who": _reference(access.organization)})
    found.append({"type": {"coding": [_coding(SECURITY_ROLE, "authserver", "authorization server")]},
                  "requestor": False, "who": {"display": exchange.server}})
    entity = [_transaction(exchange), _patient(decision.patient)]
    entity.extend({"type": _coding(RESOURCE_TYPES, "Consent"), "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
                   "what": {"reference": c}} for c in decision.consents)
    if decision.policy:
        entity.append({"type": _coding(ENTITY_TYPE, "4", "Other"), "what": {"identifier": {"value": decision.policy}},
                       "description": "implicit consent policy"})
    if access.jti:
        entity.append({"type": _coding(BALP_ENTITY, "OAuthToken"),
                       "what": {"identifier": {"value": JTI_PREFIX + access.jti}}})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": _coding(DCM, "110113", "Security Alert"),
        "subtype": [_coding(SUBTYPE, "AuthZ-Consent")], "action": "E", "recorded": exchange.recorded,
        "outcome": "0" if decision.permit else "4", "outcomeDesc": decision.reason, "agent": found,
        "source": {"observer": {"display": exchange.server},
                   "type": [_coding(SOURCE_TYPE, "4", "Application Server")]}, "entity": entity}
    if decision.break_glass or access.btg_reason:
        event["purposeOfEvent"] = [{"coding": [_coding(ACT_REASON, "BTG", "break the glass")]}]
    elif access.purposes:
        event["purposeOfEvent"] = [{"coding": [_coding(ACT_REASON, p)]} for p in access.purposes]
    return event


def break_glass_event(exchange: Exchange, access: Access, patients: Sequence[str]) -> dict[str, Any]:
    """The break-glass record of a request: purpose BTG, the stated reason, the patients reached."""
    event = _base(exchange, access, [_coding(SUBTYPE, "break-glass")], "E")
    event["type"] = _coding(DCM, "110113", "Security Alert")
    event["purposeOfEvent"] = [{"coding": [_coding(ACT_REASON, "BTG", "break the glass")]}]
    event["outcomeDesc"] = access.btg_reason or ""
    event["agent"] = [{**agent, "purposeOfUse": [{"coding": [_coding(ACT_REASON, "BTG", "break the glass")]}]}
                      if agent.get("requestor") else agent for agent in event["agent"]]  # a copy: agents are shared
    event["entity"].extend(_patient(p) for p in patients)
    return event


def request_events(exchange: Exchange, access: Access, touched: Sequence[Touched],
                   decisions: Sequence[DecisionRecord]) -> list[dict[str, Any]]:
    """Every event of one request: break-glass first, then the consent decisions, then the interaction."""
    events: list[dict[str, Any]] = []
    if access.btg_reason:
        patients = list(dict.fromkeys([p for t in touched for p in t.patients] + [d.patient for d in decisions]))
        events.append(break_glass_event(exchange, access, patients))
    events.extend(consent_event(exchange, access, d) for d in decisions)
    events.extend(interaction_events(exchange, access, touched))
    return events


def server_event(subtype: str, display: str, status: int, recorded: str, *, client_id: str | None = None,
                 user: str | None = None, address: str | None = None, detail: str | None = None,
                 request_id: str | None = None, server: str = "CareLoop") -> dict[str, Any]:
    """An authorization server event: token issued, refused or revoked, a failed sign-in, a launch created."""
    login = subtype in ("signin-failed", "token-issued", "token-refused")
    agent: list[dict[str, Any]] = [
        {"type": {"coding": [_coding(DCM, "110150", "Application")]}, "requestor": user is None,
         "who": {"identifier": {"system": "urn:ietf:params:oauth:client-id", "value": client_id or "unknown"}}},
        {"type": {"coding": [_coding(SECURITY_ROLE, "authserver", "authorization server")]}, "requestor": False,
         "who": {"display": server}}]
    if user is not None:
        agent.append({"type": {"coding": [_coding(PARTICIPATION, "IRCP", "information recipient")]},
                      "requestor": True, "who": _reference(user)})
    if address:
        agent[0]["network"] = {"address": address, "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": _coding(DCM, "110114", "User Authentication"),
        "subtype": ([_coding(DCM, "110122", "Login")] if login else []) + [_coding(SUBTYPE, subtype, display)],
        "action": "E", "recorded": recorded, "outcome": outcome(status), "agent": agent,
        "source": {"observer": {"display": server}, "type": [_coding(SOURCE_TYPE, "4", "Application Server")]}}
    if detail:
        event["outcomeDesc"] = detail
    if request_id:
        event["entity"] = [{"type": _coding(BALP_ENTITY, "XrequestId"), "what": {"identifier": {"value": request_id}}}]
    return event
