"""Audit records: a request's facts (or one supplied event) kept once, and the AuditEvents they stand for.

The per-patient BALP events of one request differ only in their patient entity, so the trail keeps the facts
the builders of consent/audit/shapes.py take (the exchange, the caller, what was touched, the consent
decisions) as one record, and materialises each event from it on read with the same builders: member k of a
record is the k-th event `request_events` makes of it, id `<seq>-<k>`. An AuditEvent a client (an audit source)
or the authorization server supplies whole is a record of one member. https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from consent.access import Access
from consent.audit.chain import CHAIN_URL, record_hash
from consent.audit.clock import instant
from consent.audit.rows import AuditRows, parts
from consent.audit.shapes import Exchange, Touched, request_events
from consent.decisions import DecisionRecord
from resources.search.index import IndexRows
from resources.store.audit_log.model import MEMBERS, Entry, NewRecord, StoredRecord

REQUEST, EVENT = "r", "e"
Facts = tuple[Exchange, Access, Sequence[Touched], Sequence[DecisionRecord]]


def request_body(facts: Facts, written_ms: int) -> bytes:
    """The compact bytes of a request's facts (made by the writer task, not in the request)."""
    exchange, access, touched, decisions = facts
    return orjson.dumps([
        REQUEST, written_ms,
        [exchange.request_id, exchange.interaction, exchange.status, exchange.recorded, exchange.resource_type,
         exchange.resource_id, exchange.operation, exchange.raw_query.decode("latin-1"), exchange.address,
         exchange.server, exchange.outcome_text],
        [access.client_id, access.fhir_user, access.unrestricted, access.purposes, access.roles, access.organization,
         access.btg_reason, access.jti, access.patient],
        [[t.type, t.id, t.vid, t.patients, t.action] for t in touched],
        [[d.patient, d.permit, d.consents, d.policy, d.reason, d.break_glass] for d in decisions]])


def event_body(event: dict[str, Any], written_ms: int) -> bytes:
    """The bytes of one whole AuditEvent (without id, version or chain link: the record gives those)."""
    return orjson.dumps([EVENT, written_ms, event])


def facts_of(body: bytes) -> tuple[int, Facts | dict[str, Any]]:
    """(written ms, the request's facts or the whole event) of a record's bytes."""
    found = orjson.loads(body)
    if found[0] == EVENT:
        return int(found[1]), dict(found[2])
    (rid, interaction, status, recorded, rtype, rid_, operation, raw, address, server, text) = found[2]
    exchange = Exchange(rid, interaction, status, recorded, rtype, rid_, operation, raw.encode("latin-1"), address,
                        server, text)
    client, user, unrestricted, purposes, roles, organization, btg, jti, patient = found[3]
    access = Access(client_id=client, fhir_user=user, unrestricted=unrestricted, purposes=tuple(purposes),
                    roles=tuple(roles), organization=organization, btg_reason=btg, jti=jti, patient=patient)
    touched = [Touched(t, i, v, tuple(p), a) for t, i, v, p, a in found[4]]
    decisions = [DecisionRecord(p, permit, tuple(c), policy, reason, glass) for p, permit, c, policy, reason, glass
                 in found[5]]
    return int(found[1]), (exchange, access, touched, decisions)


def events_of_facts(facts: Facts) -> list[dict[str, Any]]:
    """The BALP events a request's facts stand for, in member order."""
    return request_events(*facts)


def events_of(body: bytes) -> tuple[int, list[dict[str, Any]]]:
    """(written ms, the events of a record in member order), without ids or chain links."""
    written, found = facts_of(body)
    return written, [found] if isinstance(found, dict) else events_of_facts(found)


def materialise(record: StoredRecord, member: int, event: dict[str, Any], written_ms: int) -> dict[str, Any]:
    """Member `member` of a record as the AuditEvent a client reads: id, version 1, the record's chain link."""
    resource = dict(event)
    resource["id"] = event_id(record.seq, member)
    resource["meta"] = {**(event.get("meta") or {}), "versionId": "1", "lastUpdated": instant(written_ms)}
    others = [e for e in event.get("extension", ()) if e.get("url") != CHAIN_URL]
    resource["extension"] = [*others, {"url": CHAIN_URL, "extension": [
        {"url": "sequence", "valueInteger": record.n}, {"url": "previous", "valueString": record.previous},
        {"url": "hash", "valueString": record.hash}, {"url": "chain", "valueString": record.chain},
        {"url": "member", "valueInteger": member}]}]
    return resource


def event_id(seq: int, member: int) -> str:
    """The id of a record's member."""
    return f"{seq}-{member}"


def parse_id(id_: str) -> tuple[int, int] | None:
    """(seq, member) of an AuditEvent id, None when it is not one."""
    seq, dash, member = id_.partition("-")
    if not dash or not seq.isdigit() or not member.isdigit() or len(id_) > 40:
        return None
    return int(seq), int(member)


def _narrow(rows: IndexRows) -> Iterable[tuple[str, str, str]]:
    for table in _TABLES:
        for row in getattr(rows, table):
            found = _entry(table, row)
            if found is not None:
                yield found


def _entry(table: str, row: Any) -> tuple[str, str, str] | None:
    """One index row as the log's (param, value, sys) entry; None for what is matched in memory only."""
    if table == "tokens":
        param, system, code, _ = row
        return (param, code, system or "") if code is not None else None  # a display's text alone: :text
    if table == "strings":
        return row[0], row[1], row[2]
    if table == "references":
        param, target_type, target_id, url = row
        if target_id:
            return param, target_id, target_type or ""
        return (param, url, "@url") if url else None
    if table == "uris":
        return row[0], row[1], ""
    if table == "compartments":
        return "_compartment", row, ""
    return None  # dates: the record's own instant; AuditEvent has no number, quantity or composite parameter


_TABLES = ("tokens", "strings", "references", "uris", "compartments")


_PARTS: dict[bytes, frozenset[tuple[str, str, str]]] = {}
_PARTS_KEPT = 50_000  # parts remembered (a caller's agents, a frame, a patient's entity); cleared when full


def _narrow_part(part: dict[str, Any], rows: AuditRows) -> frozenset[tuple[str, str, str]]:
    # the entries of a part seen before (the same caller, the same patient) are one dict look-up away
    key = orjson.dumps(part)
    found = _PARTS.get(key)
    if found is None:
        if len(_PARTS) >= _PARTS_KEPT:
            _PARTS.clear()
        found = _PARTS[key] = frozenset(
            e for table, row in rows.part_rows(part) if (e := _entry(table, row)) is not None)
    return found


def _member_sets(events: Sequence[dict[str, Any]], rows: AuditRows) -> list[set[tuple[str, str, str]]]:
    # the events of one record share their frame (type, subtype, agents, source, purpose) and most entities: a
    # part equal to the one at its place in the previous event reuses its entries (a search of 20 patients looks
    # up its frame once and one patient entity per member)
    previous: list[tuple[dict[str, Any], frozenset[tuple[str, str, str]]]] = []
    found = []
    for event in events:
        own: set[tuple[str, str, str]] = set()
        current = []
        for at, part in enumerate(parts(event)):
            if len(part) == 2 and "recorded" in part:
                continue  # the record's instant is a column of its own, not an entry
            if at < len(previous) and (previous[at][0] is part or previous[at][0] == part):
                narrow = previous[at][1]
            else:
                narrow = _narrow_part(part, rows)
            current.append((part, narrow))
            own |= narrow
        previous = current
        found.append(own)
    return found


def new_record(chain: str, n: int, previous: str, kind: str, payload: Any, recorded: int, written: int,
               rows: AuditRows) -> NewRecord:
    """Record `n` of a chain after `previous`: a request's facts (REQUEST) or one whole event (EVENT)."""
    if kind == REQUEST:
        body, events = request_body(payload, written), events_of_facts(payload)
    else:
        body, events = event_body(payload, written), [payload]
    digest = record_hash(chain, n, recorded, len(events), previous, body)
    return NewRecord(chain, n, recorded, len(events), previous, digest, body, entries(events, rows))


def entries(events: Sequence[dict[str, Any]], rows: AuditRows) -> list[Entry]:
    """The index entries of a record's events: what all share once (member -1), the rest per member."""
    per = _member_sets(events, rows)
    if len(per) == 1:
        return [(p, v, s, MEMBERS) for p, v, s in per[0]]
    common = set.intersection(*per) if per else set()
    found: list[Entry] = [(p, v, s, MEMBERS) for p, v, s in common]
    if len(per) > 1:
        for member, own in enumerate(per):
            found.extend((p, v, s, member) for p, v, s in own - common)
    return found


def narrowed(rows: IndexRows) -> set[tuple[str, str, str]]:
    """An event's index rows as the log's (param, value, sys) entries."""
    return set(_narrow(rows))
