"""The pure parts of the audit trail, table-driven: request classification, outcomes, the query text, the chain,
the consent decision and break-glass shapes. https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from consent.access import Access
from consent.audit.chain import GENESIS, digest, link, link_of
from consent.audit.shapes import Exchange, Touched, cleaned, consent_event, outcome, request_events
from consent.decisions import DecisionRecord
from server.audit import classify


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "", ("search-system", None, None, None)),
    ("POST", "", ("batch", None, None, None)),
    ("GET", "/_history", ("history-system", None, None, None)),
    ("GET", "/Patient", ("search-type", "Patient", None, None)),
    ("POST", "/Patient/_search", ("search-type", "Patient", None, None)),
    ("POST", "/Patient", ("create", "Patient", None, None)),
    ("PUT", "/Patient", ("update", "Patient", None, None)),
    ("DELETE", "/Patient", ("delete", "Patient", None, None)),
    ("GET", "/Patient/_history", ("history-type", "Patient", None, None)),
    ("GET", "/Patient/1", ("read", "Patient", "1", None)),
    ("PUT", "/Patient/1", ("update", "Patient", "1", None)),
    ("PATCH", "/Patient/1", ("patch", "Patient", "1", None)),
    ("DELETE", "/Patient/1", ("delete", "Patient", "1", None)),
    ("GET", "/Patient/1/_history", ("history-instance", "Patient", "1", None)),
    ("GET", "/Patient/1/_history/2", ("vread", "Patient", "1", None)),
    ("GET", "/Patient/1/$everything", ("operation", "Patient", "1", "everything")),
    ("POST", "/Patient/$tier", ("operation", "Patient", None, "tier")),
    ("GET", "/$verify-audit", ("operation", None, None, "verify-audit")),
])
def test_classify(method: str, path: str, expected: tuple[str, str | None, str | None, str | None]) -> None:
    assert classify(method, path) == expected


@pytest.mark.parametrize(("status", "expected"), [(200, "0"), (201, "0"), (304, "0"), (400, "4"), (403, "4"),
                                                  (404, "4"), (500, "8"), (503, "8")])
def test_outcome(status: int, expected: str) -> None:
    assert outcome(status) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (b"GET /fhir/Patient?name=a%20b", "GET /fhir/Patient?name=a b"),
    (b"GET /fhir/Patient?name=%00%1b[31m", "GET /fhir/Patient?name=[31m"),
    (b"GET /fhir/Patient?name=\xff", "GET /fhir/Patient?name=\ufffd"),
])
def test_cleaned(raw: bytes, expected: str) -> None:
    assert cleaned(raw) == expected


def test_the_chain_links_each_event_to_the_previous_hash() -> None:
    first: dict[str, Any] = {"resourceType": "AuditEvent", "id": "a", "outcome": "0"}
    second: dict[str, Any] = {"resourceType": "AuditEvent", "id": "b", "outcome": "0",
                              "extension": [{"url": "http://example.org/other", "valueString": "kept"}]}
    one = link(first, 1, GENESIS)
    two = link(second, 2, one)
    assert link_of(first) == link_of(first) and link_of(first).hash == one  # type: ignore[union-attr]
    assert link_of(second).previous == one and digest(second) == two  # type: ignore[union-attr]
    assert second["extension"][0] == {"url": "http://example.org/other", "valueString": "kept"}
    for change in ({"outcome": "4"}, {"id": "c"}):
        assert digest({**second, **change}) != two
    assert link_of({"resourceType": "AuditEvent"}) is None


CALLER = Access(client_id="ward-app", fhir_user="Practitioner/smith", purposes=("TREAT",), roles=("clinician",),
                organization="Organization/clinic", jti="tok-1")
EXCHANGE = Exchange("req-1", "read", 200, "2026-12-07T10:00:00Z", "Observation", "o1", raw_query=b"GET /x",
                    address="10.0.0.9")


@pytest.mark.parametrize(("decision", "outcome_code"), [
    (DecisionRecord("p1", True, ("Consent/c1/_history/2",), None, "Consent c1 permits treatment"), "0"),
    (DecisionRecord("p1", False, ("Consent/c1/_history/2", "Consent/c2/_history/1"), None,
                    "Consent c2 denies research"), "4"),
    (DecisionRecord("p1", True, (), "basic-normal", "no Consent: the clinic's default permits"), "0"),
])
def test_consent_decisions_are_authz_consent_events(decision: DecisionRecord, outcome_code: str) -> None:
    event = consent_event(EXCHANGE, CALLER, decision)
    assert event["type"] == {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110113",
                             "display": "Security Alert"}
    assert event["subtype"][0]["code"] == "AuthZ-Consent" and event["action"] == "E"
    assert event["outcome"] == outcome_code and event["outcomeDesc"] == decision.reason
    codes = [a["type"]["coding"][0]["code"] for a in event["agent"]]
    assert codes == ["110150", "IRCP", "PROV", "authserver"]
    user = event["agent"][1]
    assert user["who"] == {"reference": "Practitioner/smith"} and user["policy"] == ["urn:ietf:params:oauth:jti:tok-1"]
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "TREAT" and user["role"][0]["text"] == "clinician"
    assert event["agent"][2]["who"] == {"reference": "Organization/clinic"}
    consents = [e["what"]["reference"] for e in event["entity"] if e["type"]["code"] == "Consent"]
    assert consents == list(decision.consents)
    assert {"value": "urn:ietf:params:oauth:jti:tok-1"} in [e["what"].get("identifier") for e in event["entity"]]
    assert {"reference": "Patient/p1"} in [e["what"] for e in event["entity"]]
    if decision.policy:
        assert {"value": decision.policy} in [e["what"].get("identifier") for e in event["entity"]]


def test_a_break_glass_request_records_its_reason_first() -> None:
    caller = Access(client_id="er-app", fhir_user="Practitioner/er", purposes=("BTG",), btg_reason="unconscious",
                    jti="tok-9")
    decision = DecisionRecord("p1", True, ("Consent/c1/_history/1",), None, "deny overridden", break_glass=True)
    events = request_events(EXCHANGE, caller, [Touched("Observation", "o1", 1, ("p1",))], [decision])
    assert [e["subtype"][0]["code"] for e in events] == ["break-glass", "AuthZ-Consent", "read"]
    for event in events:
        assert event["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
    assert events[0]["outcomeDesc"] == "unconscious" and events[2]["outcomeDesc"] == "unconscious"
    [user] = [a for a in events[0]["agent"] if a["requestor"]]
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "BTG"
    assert {"reference": "Patient/p1"} in [e["what"] for e in events[0]["entity"]]


def test_a_search_names_each_patient_once_and_keeps_the_raw_query() -> None:
    search = Exchange("req-2", "search-type", 200, "2026-12-07T10:00:00Z", "Observation", raw_query=b"GET /q?a=1")
    touched = [Touched("Observation", "o1", 1, ("p1",)), Touched("Observation", "o2", 1, ("p1",)),
               Touched("Observation", "o3", 1, ("p2",))]
    events = request_events(search, Access(unrestricted=True), touched, [])
    assert [[e["what"]["reference"] for e in ev["entity"] if e.get("role", {}).get("code") == "1"]
            for ev in events] == [["Patient/p1"], ["Patient/p2"]]
    for event in events:
        [query] = [e for e in event["entity"] if e.get("role", {}).get("code") == "24"]
        assert base64.b64decode(query["query"]) == b"GET /q?a=1"
