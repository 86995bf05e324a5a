"""Patient/[id]/$access-report: who accessed which of a patient's data, when, why, under which consent.

Read from the audit trail (`AuditEvent?patient=...&date=...`, BALP shapes of SECURITY.md §4) and grouped by
accessor: the requesting agent of each event (the user, else the app). The consent decisions of a request
(AuthZ-Consent events with the same X-Request-Id) are folded into the accesses of that request, so each
access names the Consents and the break-glass override that allowed it. Only auditors (and unrestricted
callers) and the patient themself (right of access) may ask. https://hl7.org/fhir/R4B/auditevent.html
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from consent.access import Access, BoundGuard
from operations.context import OperationCall
from operations.parameters import parameters, part
from resources.errors import Forbidden, Invalid, Unprocessable
from resources.guard import GUARD, Guard
from resources.ids import now_ms
from resources.search.dates import date_range, format_instant
from resources.search.parse import parse_search

NAME = "access-report"
PARAMETERS = ("start", "end")
MAX_EVENTS = 10_000  # one report is one answer: past this, the caller narrows start/end
AUTHZ = "AuthZ-Consent"
BTG = "BTG"
_PAGE = 1000


def may_report(access: Access | None, patient: str) -> bool:
    """Whether a caller may see a patient's access report: an auditor, or the patient (right of access).

    No access at all (authorization off, the server's own work) and unrestricted access may; so may a user
    with the auditor role, a backend (system) client granted AuditEvent read and search, and the patient
    themself: a token whose fhirUser is the patient. A patient context alone is not enough, since a
    clinician's app launched for the patient has one too; nor does it count when it names someone else.
    """
    if access is None or access.unrestricted or "auditor" in access.roles:
        return True
    if access.fhir_user == f"Patient/{patient}" and access.patient in (None, patient):
        return True
    return any(scope.context == "system" and not scope.query and scope.applies("AuditEvent", "r")
               and scope.applies("AuditEvent", "s") for scope in access.scopes)


def _access_of(guard: Guard | None) -> Access | None:
    if guard is None:
        return None
    if isinstance(guard, BoundGuard):
        return guard.access
    return Access()  # a guard that says nothing of its caller: no special rights (fail closed)


def _window(call: OperationCall) -> tuple[str | None, str | None]:
    for given in call.input.parts:
        if given["name"] not in PARAMETERS:
            raise Invalid(f"Unknown parameter '{given['name']}' for ${NAME}; it takes start and end",
                          code="not-supported", expression=(given["name"],))
    bounds = []
    for name in PARAMETERS:
        value = call.input.text(name)
        if value is not None and date_range(value) is None:
            raise Invalid(f"Parameter '{name}' must be a FHIR date or dateTime, not '{value}'", code="value",
                          expression=(name,))
        bounds.append(value)
    start, end = bounds
    if start is not None and end is not None:
        low, high = date_range(start), date_range(end)
        assert low is not None and high is not None
        if low[0] > high[1]:
            raise Invalid("Parameter 'start' is after 'end'", code="value", expression=("start", "end"))
    return start, end


async def run(call: OperationCall) -> dict[str, Any]:
    """The report as a Parameters resource (rendered as HTML by access_report_html when asked)."""
    assert call.id is not None
    guard = GUARD.get()
    if not may_report(_access_of(guard), call.id):
        raise Forbidden(f"${NAME} is for auditors and for the patient themself", code="forbidden")
    start, end = _window(call)
    events = await _events(call, start, end)
    groups = accessors(events)
    return parameters(
        part("patient", "Reference", {"reference": f"Patient/{call.id}"}),
        part("start", "DateTime", start), part("end", "DateTime", end),
        part("generated", "Instant", format_instant(now_ms())),
        part("events", "Integer", len(events)),
        *(_accessor_part(group) for group in groups))


async def _events(call: OperationCall, start: str | None, end: str | None) -> list[dict[str, Any]]:
    """The patient's AuditEvents in the window, oldest first; read with the guard off (the caller was checked)."""
    repository = call.context.repository
    params = [("patient", f"Patient/{call.id}"), ("_sort", "date")]
    if start is not None:
        params.append(("date", f"ge{start}"))
    if end is not None:
        params.append(("date", f"le{end}"))
    query = parse_search("AuditEvent", params, repository.registry, strict=True).query
    found: list[dict[str, Any]] = []
    token = GUARD.set(None)
    try:
        cursor: int | None = None
        while True:
            page = await repository.search(replace(query, count=_PAGE, cursor=cursor))
            found.extend(orjson.loads(r.body) for r in page.resources if r.body)
            if len(found) > MAX_EVENTS:
                raise Unprocessable(f"More than {MAX_EVENTS} audit events in this window; ask for a shorter "
                                    f"one (start, end)", code="too-costly")
            if page.next_cursor is None:
                return found
            cursor = int(page.next_cursor)
    finally:
        GUARD.reset(token)


@dataclass
class Entry:
    """One access: a request's data events with the consent decisions made for it."""

    when: str
    request: str | None
    action: str | None = None
    interaction: dict[str, Any] | None = None
    what: list[dict[str, Any]] = field(default_factory=list)
    query: str | None = None
    purposes: list[dict[str, Any]] = field(default_factory=list)
    consents: list[dict[str, Any]] = field(default_factory=list)
    decision: str | None = None  # permit | deny, when the consent engine decided
    break_glass: bool = False
    reason: str | None = None
    outcome: str | None = None


@dataclass
class Accessor:
    """Everyone the trail names as the requester of accesses, with the apps and roles they acted through."""

    who: dict[str, Any]
    clients: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


def _codings(concepts: Iterable[Any]) -> list[dict[str, Any]]:
    return [c for concept in concepts if isinstance(concept, dict) for c in concept.get("coding") or []
            if isinstance(c, dict)]


def _requestor(event: dict[str, Any]) -> dict[str, Any]:
    agents = [a for a in event.get("agent") or [] if isinstance(a, dict)]
    return next((a for a in agents if a.get("requestor")), agents[0] if agents else {})


def _who_key(who: dict[str, Any]) -> str:
    ident = who.get("identifier") or {}
    return str(who.get("reference") or ident.get("value") or who.get("display") or "unknown")


def _client(event: dict[str, Any]) -> str | None:
    for agent in event.get("agent") or []:
        if any(c.get("code") == "110150" for c in _codings([agent.get("type")])):
            who = agent.get("who") or {}
            return str(_who_key(who))
    return None


def _is_decision(event: dict[str, Any]) -> bool:
    return any(c.get("code") == AUTHZ for c in event.get("subtype") or [] if isinstance(c, dict))


def _request_id(event: dict[str, Any]) -> str | None:
    for entity in event.get("entity") or []:
        if (entity.get("type") or {}).get("code") == "XrequestId":
            return (entity.get("what") or {}).get("identifier", {}).get("value")
    return None


def _purposes(event: dict[str, Any]) -> list[dict[str, Any]]:
    found = _codings(event.get("purposeOfEvent") or []) + _codings(_requestor(event).get("purposeOfUse") or [])
    unique: dict[tuple[Any, Any], dict[str, Any]] = {}
    for coding in found:
        unique.setdefault((coding.get("system"), coding.get("code")), coding)
    return list(unique.values())


def _data(event: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """The data the event touched, the Consents it names and the query it ran."""
    what, consents, query = [], [], None
    for entity in event.get("entity") or []:
        kind = entity.get("type") or {}
        if kind.get("code") == "Consent" or str((entity.get("what") or {}).get("reference", "")).startswith(
                "Consent/"):
            consents.append(entity["what"])
        elif kind.get("code") == "2" and (entity.get("role") or {}).get("code") == "24":
            query = entity.get("description")
        elif kind.get("code") == "2" and isinstance(entity.get("what"), dict):
            what.append(entity["what"])
    return what, consents, query


def accessors(events: list[dict[str, Any]]) -> list[Accessor]:
    """Events grouped by accessor, in order of first access; decisions folded into their request's accesses."""
    by_key: dict[str, Accessor] = {}
    requests: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    order: list[tuple[str, str]] = []
    for n, event in enumerate(events):
        agent = _requestor(event)
        key = _who_key(agent.get("who") or {})
        accessor = by_key.setdefault(key, Accessor(agent.get("who") or {"display": key}))
        client = _client(event)
        if client and client not in accessor.clients and client != key:
            accessor.clients.append(client)
        for role in agent.get("role") or []:
            text = role.get("text") or next((c.get("code") for c in _codings([role])), None)
            if text and text not in accessor.roles:
                accessor.roles.append(text)
        # events without a request id stand alone
        request = (key, _request_id(event) or f"\x00{n}")
        if request not in requests:
            order.append(request)
        requests[request].append(event)
    for request in order:
        by_key[request[0]].entries.extend(_entries(requests[request]))
    return list(by_key.values())


def _entries(events: list[dict[str, Any]]) -> list[Entry]:
    decisions = [e for e in events if _is_decision(e)]
    accesses = [e for e in events if not _is_decision(e)] or decisions[:1]
    consents = [c for d in decisions for c in _data(d)[1]]
    denied = any(d.get("outcome") not in (None, "0") for d in decisions)
    entries = []
    for event in accesses:
        what, named, query = _data(event)
        purposes = _purposes(event)
        break_glass = any(c.get("code") == BTG for c in purposes) or any(
            c.get("code") == BTG for d in decisions for c in _purposes(d))
        reasons = [e.get("outcomeDesc") for e in (event, *decisions) if e.get("outcomeDesc")]
        entries.append(Entry(
            when=str(event.get("recorded")), request=_request_id(event), action=event.get("action"),
            interaction=next((c for c in event.get("subtype") or [] if isinstance(c, dict)), None), what=what,
            query=query, purposes=purposes, consents=_unique(named + consents),
            decision=("deny" if denied else "permit") if decisions else None, break_glass=break_glass,
            reason=reasons[0] if reasons else None, outcome=event.get("outcome")))
    return entries


def _unique(refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for ref in refs:
        seen.setdefault(str(ref.get("reference")), ref)
    return list(seen.values())


def _accessor_part(accessor: Accessor) -> dict[str, Any]:
    parts = [part("who", "Reference", accessor.who), *(part("client", "String", c) for c in accessor.clients),
             *(part("role", "String", r) for r in accessor.roles),
             part("count", "Integer", len(accessor.entries)), *(_entry_part(e) for e in accessor.entries)]
    return {"name": "accessor", "part": [p for p in parts if p is not None]}


def _entry_part(entry: Entry) -> dict[str, Any]:
    parts = [part("when", "Instant", entry.when), part("action", "Code", entry.action),
             part("interaction", "Coding", entry.interaction),
             *(part("what", "Reference", w) for w in entry.what), part("query", "String", entry.query),
             *(part("purpose", "Coding", p) for p in entry.purposes),
             *(part("consent", "Reference", c) for c in entry.consents),
             part("decision", "Code", entry.decision), part("break-glass", "Boolean", entry.break_glass),
             part("reason", "String", entry.reason), part("outcome", "Code", entry.outcome),
             part("request", "String", entry.request)]
    return {"name": "access", "part": [p for p in parts if p is not None]}
