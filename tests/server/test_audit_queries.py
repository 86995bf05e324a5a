"""The compliance officers' AuditEvent queries of SECURITY.md §4, each answering exactly the events it should."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bench.audit_shapes import ACT_REASON, Who, consent_event, rest_event
from tests.conftest import FHIR_JSON, body

pytestmark = pytest.mark.anyio

DAY = 86_400_000
JAN = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DR = Who("ehr-app", "Practitioner/dr1", "clinician", ("TREAT",), "jti-dr1", organization="Organization/clinic")
NURSE = Who("ehr-app", "Practitioner/nurse", "clinician", ("TREAT",), "jti-nurse")
BTG = Who("ehr-app", "Practitioner/er", "clinician", ("BTG",), "jti-er")
APP = Who("diary-app", None, None, ("PATRQT",), "jti-app")

# name -> event; the expectations below name events by these keys
TRAIL: dict[str, dict[str, Any]] = {
    "dr-read-p1": rest_event("read", DR, JAN + 2 * DAY, "r1", patient="p1", data=["Observation/o1/_history/1"]),
    "dr-permit-p1": consent_event(DR, JAN + 2 * DAY, "r1", "p1", permit=True, consents=["Consent/c1/_history/1"]),
    "nurse-deny-p1": consent_event(NURSE, JAN + 5 * DAY, "r2", "p1", permit=False, consents=["Consent/c1/_history/1"],
                                   reason="denied by patient consent"),
    "er-btg-p1": consent_event(BTG, JAN + 9 * DAY, "r3", "p1", permit=True, consents=["Consent/c1/_history/1"],
                               btg_reason="unconscious in ED"),
    "er-read-p1": rest_event("read", BTG, JAN + 9 * DAY, "r3", patient="p1", data=["Condition/x1/_history/1"],
                             btg_reason="unconscious in ED"),
    "dr-delete-p2": rest_event("delete", DR, JAN + 3 * DAY, "r4", patient="p2", data=["Observation/o7/_history/2"]),
    "app-search-p1-feb": rest_event("search", APP, JAN + 40 * DAY, "r5", patient="p1",
                                    data=["Observation/o1/_history/1"], query="Observation?patient=p1"),
    "dr-fail-p2": rest_event("read", DR, JAN + 4 * DAY, "r6", patient="p2", data=["Observation/o8/_history/1"],
                             outcome="8", outcome_desc="store unavailable"),
    "other-consent-p2": consent_event(NURSE, JAN + 6 * DAY, "r7", "p2", permit=False,
                                      consents=["Consent/c2/_history/3"]),
}


@pytest.fixture
async def trail(client: httpx.AsyncClient) -> dict[str, str]:
    """The events stored through the API (authorization off); their ids by name."""
    ids = {}
    for name, event in TRAIL.items():
        response = await client.post("/fhir/AuditEvent", content=body(event), headers=FHIR_JSON)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    return ids


async def _found(client: httpx.AsyncClient, query: str) -> list[str]:
    response = await client.get(f"/fhir/AuditEvent?{query}")
    assert response.status_code == 200, response.text
    return [entry["resource"]["id"] for entry in response.json().get("entry", [])]


CASES = [
    ("who saw p1 in January, newest first",
     "patient=Patient/p1&date=ge2026-01-01&date=lt2026-02-01&_sort=-date",
     ["er-btg-p1", "er-read-p1", "nurse-deny-p1", "dr-read-p1", "dr-permit-p1"]),
    ("what dr1 did", "agent=Practitioner/dr1&date=ge2026-01-01", ["dr-read-p1", "dr-permit-p1", "dr-delete-p2",
                                                                   "dr-fail-p2"]),
    ("decisions based on Consent c1", "entity=Consent/c1", ["dr-permit-p1", "nurse-deny-p1", "er-btg-p1"]),
    ("denials and failures", "outcome=4,8", ["nurse-deny-p1", "dr-fail-p2", "other-consent-p2"]),
    ("consent denials", "subtype=AuthZ-Consent&outcome=4", ["nurse-deny-p1", "other-consent-p2"]),
    ("deletions", "action=D", ["dr-delete-p2"]),
    ("everything done with one token", "policy=urn:ietf:params:oauth:jti:jti-dr1",
     ["dr-read-p1", "dr-permit-p1", "dr-delete-p2", "dr-fail-p2"]),
    ("a token used by an app without a user", "policy=urn:ietf:params:oauth:jti:jti-app", ["app-search-p1-feb"]),
    ("break-glass (purpose, CareLoop's SearchParameter)", f"purpose={ACT_REASON}|BTG", ["er-btg-p1", "er-read-p1"]),
    ("break-glass by code alone", "purpose=BTG&patient=p1", ["er-btg-p1", "er-read-p1"]),
    ("purpose of an agent only (the app's PATRQT)", "purpose=PATRQT", ["app-search-p1-feb"]),
    ("searches of p1 in February", "patient=p1&date=ge2026-02-01&subtype=search-type", ["app-search-p1-feb"]),
]


@pytest.mark.parametrize(("what", "query", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_compliance_query(client: httpx.AsyncClient, trail: dict[str, str], what: str, query: str,
                                expected: list[str]) -> None:
    found = await _found(client, query)
    names = {v: k for k, v in trail.items()}
    if "_sort" in query:  # the order is part of the answer
        assert [names[i] for i in found] == expected
        return
    assert sorted(names[i] for i in found) == sorted(expected)


async def test_patient_query_sorted_by_date_pages_in_order(client: httpx.AsyncClient, trail: dict[str, str]) -> None:
    # two at a time: the pages together are the whole answer, newest first, each event once
    # before today: the trail stored here, not the server's own record of these very searches
    seen, url = [], "/fhir/AuditEvent?patient=p1&date=lt2026-07-01&_sort=-date&_count=2"
    while url:
        response = await client.get(url)
        assert response.status_code == 200
        page = response.json()
        seen += [(e["resource"]["recorded"], e["resource"]["id"]) for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), "")
    assert len(seen) == len({i for _, i in seen}) == 6
    assert [r for r, _ in seen] == sorted((r for r, _ in seen), reverse=True)


async def test_purpose_parameter_is_declared(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    purpose = next(p for p in audit["searchParam"] if p["name"] == "purpose")
    assert purpose["type"] == "token"
    assert purpose["definition"] == "http://careloop.health/fhir/SearchParameter/AuditEvent-purpose"


async def test_unknown_audit_parameter_is_refused(client: httpx.AsyncClient, trail: dict[str, str]) -> None:
    response = await client.get("/fhir/AuditEvent?purpse=BTG", headers={"Prefer": "handling=strict"})
    assert response.status_code == 400
