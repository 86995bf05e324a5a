"""Patient/[id]/$access-report: who saw the patient's data, as Parameters and as a printable page (issue 29)."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import orjson
import pytest

from bench.audit_shapes import Who, consent_event, rest_event
from consent.access import Access
from consent.scopes import parse_scopes
from operations.access_report import accessors, may_report
from resources.guard import GUARD
from server.responses import prefers_html
from tests.auth.conftest import World

pytestmark = pytest.mark.anyio

DAY = 86_400_000
JAN = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PATIENT_APP = "launch/patient openid fhirUser patient/*.rs"
CLINICIAN = "openid fhirUser user/*.rs"
EVIL = "<script>alert('x')</script>&<b>"


def _scopes(text: str) -> tuple[Any, ...]:
    return tuple(parse_scopes(text, frozenset({"AuditEvent", "Observation", "Patient"}))[0])


ACCESS_CASES = [
    ("authorization off", None, True),
    ("unrestricted", Access(unrestricted=True), True),
    ("auditor role", Access(_scopes("user/Patient.rs"), roles=("auditor",), fhir_user="Practitioner/a"), True),
    ("the patient in their own context", Access(_scopes("patient/*.rs"), patient="p1", fhir_user="Patient/p1"),
     True),
    ("the patient by fhirUser", Access(_scopes("user/Observation.rs"), fhir_user="Patient/p1"), True),
    ("another patient", Access(_scopes("patient/*.rs"), patient="p2", fhir_user="Patient/p2"), False),
    ("the patient in another patient's context", Access(_scopes("patient/*.rs"), patient="p2",
                                                        fhir_user="Patient/p1"), False),
    ("a patient context without fhirUser", Access(_scopes("patient/*.rs"), patient="p1"), False),
    ("a clinician", Access(_scopes("user/*.rs"), fhir_user="Practitioner/dr", roles=("clinician",)), False),
    ("a clinician in p1's context", Access(_scopes("patient/*.rs"), patient="p1", fhir_user="Practitioner/dr"),
     False),
    ("backend with AuditEvent.rs", Access(_scopes("system/AuditEvent.rs"), client_id="siem"), True),
    ("backend with system/*.cruds", Access(_scopes("system/*.cruds"), client_id="admin"), True),
    ("backend with AuditEvent.r only", Access(_scopes("system/AuditEvent.r"), client_id="x"), False),
    ("backend with a filtered AuditEvent scope", Access(_scopes("system/AuditEvent.rs?action=R"), client_id="x"),
     False),
    ("user scope on AuditEvent without the role", Access(_scopes("user/AuditEvent.rs"), fhir_user="Practitioner/d"),
     False),
]


@pytest.mark.parametrize(("what", "access", "allowed"), ACCESS_CASES, ids=[c[0] for c in ACCESS_CASES])
def test_who_may_report(what: str, access: Access | None, allowed: bool) -> None:
    assert may_report(access, "p1") is allowed


HTML_CASES = [
    (None, False), ("", False), ("application/fhir+json", False), ("*/*", False), ("text/html", True),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # a browser
    ("application/fhir+json, text/html", False), ("text/html, application/fhir+json", True),
    ("application/json;q=0.5, text/html;q=0.9", True), ("text/html;q=0", False), ("text/html;q=abc", False),
]


@pytest.mark.parametrize(("accept", "html"), HTML_CASES)
def test_when_a_page_is_wanted(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


DR = Who("ehr-app", "Practitioner/dr1", "clinician", ("TREAT",), "t1")
ER = Who("ehr-app", "Practitioner/er", "clinician", ("BTG",), "t2")
APP = Who("diary-app", None, None, ("PATRQT",), "t3")
NURSE = Who("ehr-app", "Practitioner/nurse", "clinician", ("TREAT",), "t4")


def _trail(patient: str) -> list[dict[str, Any]]:
    """A clinician, an app and a break-glass user seeing the patient; a refused nurse; one event outside January."""
    return [
        rest_event("read", DR, JAN + DAY, "r1", patient=patient, data=[f"Observation/{patient}-o1/_history/1"]),
        consent_event(DR, JAN + DAY, "r1", patient, permit=True, consents=["Consent/c1/_history/1"]),
        rest_event("search", APP, JAN + 2 * DAY, "r2", patient=patient, data=[f"Observation/{patient}-o1/_history/1",
                   f"Observation/{patient}-o2/_history/1"], query=f"Observation?patient={patient}"),
        consent_event(ER, JAN + 3 * DAY, "r3", patient, permit=True, consents=["Consent/c1/_history/1"],
                      btg_reason=EVIL),
        rest_event("read", ER, JAN + 3 * DAY, "r3", patient=patient, data=[f"Condition/{patient}-c/_history/1"],
                   btg_reason=EVIL),
        consent_event(NURSE, JAN + 4 * DAY, "r4", patient, permit=False, consents=["Consent/c1/_history/1"],
                      reason="denied by patient consent"),
        rest_event("read", DR, JAN + 5 * DAY, "r5", patient=patient, data=[f"Observation/{patient}-o3/_history/1"]),
        rest_event("read", DR, JAN + 40 * DAY, "r6", patient=patient, data=[f"Observation/{patient}-o4/_history/1"]),
    ]


def _parts(parameter: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in parameter.get("part") or parameter.get("parameter") or [] if p["name"] == name]


def _value(parameter: dict[str, Any], name: str) -> Any:
    found = _parts(parameter, name)
    assert len(found) == 1, (name, parameter)
    return next(v for k, v in found[0].items() if k.startswith("value"))


def test_accessors_group_by_requester_and_fold_decisions_into_their_request() -> None:
    groups = accessors(_trail("p1")[:-1])
    assert [g.who.get("reference") or g.who["identifier"]["value"] for g in groups] == [
        "Practitioner/dr1", "diary-app", "Practitioner/er", "Practitioner/nurse"]
    dr, app, er, nurse = groups
    assert dr.clients == ["ehr-app"] and dr.roles == ["clinician"] and len(dr.entries) == 2
    first = dr.entries[0]
    assert (first.action, first.decision, first.break_glass) == ("R", "permit", False)
    assert [c["reference"] for c in first.consents] == ["Consent/c1/_history/1"]
    assert dr.entries[1].decision is None  # no consent decision was recorded for r5
    assert app.entries[0].query == "Observation?patient=p1" and len(app.entries[0].what) == 2
    assert er.entries[0].break_glass and er.entries[0].reason == EVIL
    assert (nurse.entries[0].decision, nurse.entries[0].outcome, nurse.entries[0].what) == ("deny", "4", [])


async def _store(world: World, events: list[dict[str, Any]]) -> None:
    # the server's own writes: no guard (the recorder of items 1-4 writes this way)
    token = GUARD.set(None)
    try:
        for event in events:
            await world.app.state.services.repository.create("AuditEvent", event)
    finally:
        GUARD.reset(token)


async def _report(world: World, token: str, patient: str, query: str = "", **headers: str) -> Any:
    return await world.client.get(f"/fhir/Patient/{patient}/$access-report{query}",
                                  headers={**world.bearer(token), **headers})


async def _patient_token(world: World, username: str) -> str:
    client_id, _ = world.app_client(PATIENT_APP)
    token: str = (await world.authorize(client_id, PATIENT_APP, username))["access_token"]
    return token


async def test_report_for_a_patient_seen_by_a_clinician_an_app_and_a_break_glass_user(world: World) -> None:
    alice = world.ids["alice"]
    await _store(world, _trail(alice) + _trail(world.ids["bob"]))
    token = await world.backend_token("system/AuditEvent.rs")
    response = await _report(world, token, alice, "?start=2026-01-01&end=2026-01-31")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["resourceType"] == "Parameters"
    assert _value(report, "patient") == {"reference": f"Patient/{alice}"}
    assert _value(report, "events") == 7  # January only, alice only
    groups = {(_value(a, "who").get("reference") or _value(a, "who")["identifier"]["value"]): a
              for a in _parts(report, "accessor")}
    assert list(groups) == ["Practitioner/dr1", "diary-app", "Practitioner/er", "Practitioner/nurse"]
    dr = groups["Practitioner/dr1"]
    assert _value(dr, "count") == 2 and _value(dr, "client") == "ehr-app" and _value(dr, "role") == "clinician"
    read = _parts(dr, "access")[0]
    assert _value(read, "when") == "2026-01-02T00:00:00.000Z"
    assert _value(read, "what") == {"reference": f"Observation/{alice}-o1/_history/1"}
    assert _value(read, "purpose")["code"] == "TREAT"
    assert _value(read, "consent") == {"reference": "Consent/c1/_history/1"}
    assert (_value(read, "decision"), _value(read, "break-glass"), _value(read, "request")) == ("permit", False, "r1")
    app = _parts(groups["diary-app"], "access")[0]
    assert _value(app, "query") == f"Observation?patient={alice}" and len(_parts(app, "what")) == 2
    assert _value(app, "purpose")["code"] == "PATRQT"
    btg = _parts(groups["Practitioner/er"], "access")[0]
    assert _value(btg, "break-glass") is True and _value(btg, "reason") == EVIL
    assert _value(btg, "purpose")["code"] == "BTG"
    refused = _parts(groups["Practitioner/nurse"], "access")[0]
    assert (_value(refused, "decision"), _value(refused, "outcome")) == ("deny", "4")
    # the answer uses only what the OperationDefinition declares
    definition = (await world.client.get("/fhir/OperationDefinition/Patient-access-report",
                                         headers=world.admin)).json()
    declared = {p["name"]: {q["name"]: {r["name"] for r in q.get("part", [])} for q in p.get("part", [])}
                for p in definition["parameter"] if p["use"] == "out"}
    for given in report["parameter"]:
        assert given["name"] in declared
        for sub in given.get("part", []):
            assert sub["name"] in declared[given["name"]]
            assert {x["name"] for x in sub.get("part", [])} <= declared[given["name"]][sub["name"]]


async def test_the_patient_sees_their_own_report_and_no_one_elses(world: World) -> None:
    alice, bob = world.ids["alice"], world.ids["bob"]
    await _store(world, _trail(alice) + _trail(bob))
    token = await _patient_token(world, "alice")
    # up to mid-year: the trail written here, not the server's own record of this test's requests (today)
    own = await _report(world, token, alice, "?end=2026-07-01")
    assert own.status_code == 200, own.text
    assert _value(own.json(), "events") == 8
    other = await _report(world, token, bob)
    assert other.status_code == 403 and other.json()["issue"][0]["code"] == "forbidden"


@pytest.mark.parametrize("scope", [CLINICIAN, "system/Observation.rs system/Patient.rs", "system/AuditEvent.r"])
async def test_others_are_refused(world: World, scope: str) -> None:
    alice = world.ids["alice"]
    await _store(world, _trail(alice))
    if scope.startswith("system/"):
        token = await world.backend_token(scope)
    else:
        client_id, _ = world.app_client(scope)
        token = (await world.authorize(client_id, scope, "drsmith"))["access_token"]
    for patient in (alice, "no-such-patient"):  # the same answer whether or not the patient exists
        response = await _report(world, token, patient)
        assert response.status_code == 403, response.text
        assert response.json()["issue"][0]["code"] == "forbidden"
    unauthenticated = await world.client.get(f"/fhir/Patient/{alice}/$access-report")
    assert unauthenticated.status_code == 401


async def test_a_clinician_in_the_patients_context_is_not_the_patient(world: World) -> None:
    alice = world.ids["alice"]
    await _store(world, _trail(alice))
    for scope in (f"launch/patient openid fhirUser {PATIENT_APP.split()[-1]}", "launch/patient patient/*.rs"):
        client_id, _ = world.app_client(scope)
        token = (await world.authorize(client_id, scope, "drsmith", patient=alice))["access_token"]
        response = await _report(world, token, alice)
        assert response.status_code == 403, (scope, response.text)


@pytest.mark.parametrize(("query", "code"), [
    ("?start=2026-01-01&patient=x", "not-supported"), ("?from=2026-01-01", "not-supported"),
    ("?start=2026-13-01", "value"), ("?end=yesterday", "value"), ("?start=2026-02-01&end=2026-01-01", "value"),
    ("?start=2026-01-01&start=2026-01-02", "value")])
async def test_bad_parameters_are_refused(world: World, query: str, code: str) -> None:
    response = await _report(world, await world.backend_token("system/AuditEvent.rs"), world.ids["alice"], query)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["code"] == code


async def test_post_with_parameters_and_an_unknown_patient(world: World) -> None:
    token = await world.backend_token("system/AuditEvent.rs")
    body = {"resourceType": "Parameters", "parameter": [{"name": "start", "valueDateTime": "2026-01-01"}]}
    response = await world.client.post("/fhir/Patient/nobody/$access-report", content=orjson.dumps(body),
                                       headers={**world.bearer(token), "content-type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    assert _value(response.json(), "events") == 0 and _parts(response.json(), "accessor") == []


class _Page(HTMLParser):
    """The parts of a page the tests look at: elements met, table rows as text, headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self.headings: list[str] = []
        self.classes: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.classes += [v or "" for k, v in attrs if k == "class"]
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell, self._heading):
            if sink is not None:
                sink.append(data)


async def test_printable_page_when_asked_for_html(world: World) -> None:
    alice = world.ids["alice"]
    await _store(world, _trail(alice))
    token = await world.backend_token("system/AuditEvent.rs")
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = await _report(world, token, alice, "?start=2026-01-01&end=2026-01-31", accept=browser)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in response.headers["content-security-policy"]
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    page = _Page()
    page.feed(response.text)
    page.close()
    assert "script" not in page.tags and "link" not in page.tags  # nothing third-party, nothing to run
    assert page.headings == ["Practitioner/dr1", "diary-app", "Practitioner/er", "Practitioner/nurse"]
    cells = [row for row in page.rows if row and row[0] != "When"]
    assert len(cells) == 5
    btg = next(row for row in cells if row[2] == f"Condition/{alice}-c/_history/1")
    assert btg[6] == f"yes: {EVIL}"  # the reason shown as the text it was, not as markup
    assert "btg" in page.classes
    assert any(row[5] == "deny" and row[7].startswith("refused") for row in cells)
    # JSON still for everyone else
    plain = await _report(world, token, alice)
    assert plain.headers["content-type"].startswith("application/fhir+json")
