"""The rows assembled from an AuditEvent's parts are exactly the rows of the whole event, for every shape.

https://hl7.org/fhir/R4B/auditevent.html#search
"""

from __future__ import annotations

from typing import Any

import pytest

from consent.access import Access
from consent.audit.chain import GENESIS, link
from consent.audit.rows import AuditRows
from consent.audit.shapes import Exchange, Touched, request_events, server_event
from consent.decisions import DecisionRecord
from resources.models import resource_types
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry

CALLER = Access(client_id="app", fhir_user="Practitioner/p", purposes=("TREAT", "BTG"), roles=("clinician",),
                organization="Organization/o", btg_reason="emergency", jti="t1")
EXCHANGES = [Exchange("r1", "read", 200, "2026-12-07T10:00:00.123Z", "Observation", "o1", address="10.1.1.1"),
             Exchange("r2", "search-type", 200, "2026-12-07T10:00:01Z", "Observation", raw_query=b"GET /q?x=1"),
             Exchange("r3", "operation", 404, "2026-12-07T10:00:02Z", "Patient", "p1", "everything",
                      outcome_text="gone"),
             Exchange("r4", "transaction", 200, "2026-12-07T10:00:03Z")]
TOUCHED = [Touched("Observation", "o1", 2, ("p1",)), Touched("Observation", "o2", 1, ("p2",), "create"),
           Touched("Patient", "p3", 1, ("p3",))]


def events() -> list[dict[str, Any]]:
    found = []
    for exchange in EXCHANGES:
        found.extend(request_events(exchange, CALLER, TOUCHED, [DecisionRecord("p1", False, ("Consent/c/_history/1",),
                                                                                None, "denied")]))
    found.append(server_event("token-issued", "issued", 200, "2026-12-07T10:00:04Z", client_id="c", user="u",
                              address="10.0.0.1", request_id="r5"))
    found.append({"resourceType": "AuditEvent", "meta": {"tag": [{"system": "urn:t", "code": "x"}]},
                  "extension": [{"url": "urn:other", "valueString": "v"}], "type": {"code": "x"},
                  "recorded": "2026-01-01T00:00:00Z", "agent": [{"requestor": True, "who": {"display": "gw"}}],
                  "source": {"observer": {"display": "gateway"}}})
    for n, event in enumerate(found):
        event["id"] = f"e{n}"
        event["meta"] = {**event.get("meta", {}), "versionId": "1", "lastUpdated": "2026-12-07T10:00:05Z"}
        link(event, n + 1, GENESIS)
    return found


@pytest.mark.parametrize("event", events(), ids=lambda e: e["id"])
def test_rows_of_the_parts_are_the_rows_of_the_event(event: dict[str, Any]) -> None:
    indexer = Indexer(default_registry(resource_types()), load_patient_compartment())
    whole = indexer.extract("AuditEvent", event)
    assembled = AuditRows(indexer)
    for _ in range(2):  # assembled from extracted parts, then from remembered ones
        rows = assembled.rows(event)
        for name in ("tokens", "strings", "references", "dates", "numbers", "quantities", "uris", "composites"):
            assert sorted(map(str, getattr(rows, name))) == sorted(map(str, getattr(whole, name))), name
        assert sorted(rows.compartments) == sorted(whole.compartments)


def varied() -> list[dict[str, Any]]:
    """Generated BALP events (reads, searches, writes, consent decisions, break-glass) and odd entity shapes."""
    from bench.audit_trail import events as generated

    found = list(generated(300, 40, seed=11))
    odd_whats: list[dict[str, Any]] = [
        {"reference": "Patient/p-9"}, {"reference": "Observation/o.1/_history/7"},
        {"reference": "http://other.example/fhir/Patient/p9"}, {"reference": "#contained"},
        {"reference": "Patient/p9", "identifier": {"system": "urn:s", "value": "v-9"}},
        {"identifier": {"value": "careloop-audit-placeholder-value-and-more"}},
        {"identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0f3c"}}, {"display": "a thing"},
        {"reference": "Patient/careloop-audit-placeholder-id"}]
    for n, what in enumerate(odd_whats):
        found.append({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": f"2026-12-0{n % 9 + 1}",
                      "agent": [{"requestor": True, "who": {"reference": "Practitioner/x"}}],
                      "source": {"observer": {"display": "s"}},
                      "entity": [{"what": what, "type": {"code": "1"}, "name": f"n{n}"}, {"what": what}]})
    for n, event in enumerate(found):
        event["id"] = f"v{n}"
        link(event, n + 1, GENESIS)
    return found


def test_rows_of_varied_events_are_the_rows_of_a_whole_extraction() -> None:
    """Templates (placeholders put back) and remembered parts cannot drift from the generic indexer."""
    indexer = Indexer(default_registry(resource_types()), load_patient_compartment())
    assembled = AuditRows(indexer)
    for _ in range(2):
        for event in varied():
            whole = indexer.extract("AuditEvent", event)
            rows = assembled.rows(event)
            for name in ("tokens", "strings", "references", "dates", "numbers", "quantities", "uris", "composites"):
                assert sorted(map(str, getattr(rows, name))) == sorted(map(str, getattr(whole, name))), (
                    name, event["id"])
            assert sorted(rows.compartments) == sorted(whole.compartments), event["id"]
