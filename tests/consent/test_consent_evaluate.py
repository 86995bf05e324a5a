"""Consent/$evaluate through HTTP: decisions with their basis, refused input, and who may call it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.settings import Settings
from tests.auth.conftest import open_world
from tests.conftest import FHIR_JSON, client_for, issue_code
from tests.consent.builders import LAB, PURPOSE, consent, prov

pytestmark = pytest.mark.anyio
TREAT = {"system": PURPOSE, "code": "TREAT"}
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _obs(patient: str, category: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient}"},
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}, "effectiveDateTime": "2026-05-01"}


async def _setup(client: httpx.AsyncClient) -> dict[str, str]:
    ids = {"patient": await _create(client, {"resourceType": "Patient"})}
    ids["lab"] = await _create(client, _obs(ids["patient"], "laboratory"))
    ids["vital"] = await _create(client, _obs(ids["patient"], "vital-signs"))
    labs = consent(prov("permit", period={"start": "2026-01-01"}, children=(prov("deny", cls=(LAB,), children=(
        prov("permit", actor=("Practitioner/gp",)),)),)), patient=ids["patient"])
    ids["consent"] = await _create(client, {k: v for k, v in labs.items() if k not in ("id", "meta")})
    return ids


def _ask(ids: dict[str, str], *extra: dict[str, Any], actor: str = "Practitioner/other") -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{ids['patient']}"}},
        {"name": "actor", "valueReference": {"reference": actor}},
        {"name": "purpose", "valueCoding": TREAT}, {"name": "time", "valueDateTime": "2026-06-01T12:00:00Z"},
        *extra]}


def _out(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    parts = answer.json()["parameter"]
    out: dict[str, Any] = {"basis": []}
    for found in parts:
        if found["name"] == "basis":
            out["basis"].append({p["name"]: next(v for k, v in p.items() if k.startswith("value"))
                                 for p in found["part"]})
        else:
            out.setdefault(found["name"], []).append(next(v for k, v in found.items() if k.startswith("value")))
    return out


async def _evaluate(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/fhir/Consent/$evaluate", json=body, headers=FHIR_JSON)


async def test_decisions_with_their_basis(client: httpx.AsyncClient) -> None:
    ids = await _setup(client)
    versioned = f"Consent/{ids['consent']}/_history/1"
    lab = _out(await _evaluate(client, _ask(ids, {"name": "resource", "valueReference": {
        "reference": f"Observation/{ids['lab']}"}})))
    assert lab["decision"] == ["deny"] and "policy" not in lab
    assert lab["consent"] == [{"reference": versioned}]
    assert [(b["consent"]["reference"], b["path"], b["type"]) for b in lab["basis"]] == [
        (versioned, "provision.provision[0]", "deny")]
    assert "laboratory" in lab["basis"][0]["why"] and lab["why"][0].startswith("denied by " + versioned)
    vital = _out(await _evaluate(client, _ask(ids, {"name": "resource", "valueReference": {
        "reference": f"Observation/{ids['vital']}"}})))
    assert vital["decision"] == ["permit"] and vital["basis"][0]["path"] == "provision"
    gp = _out(await _evaluate(client, _ask(ids, {"name": "resource", "valueReference": {
        "reference": f"Observation/{ids['lab']}"}}, actor="Practitioner/gp")))
    assert gp["decision"] == ["permit"] and gp["basis"][0]["path"] == "provision.provision[0].provision[0]"
    # an inline resource is decided the same way
    inline = _out(await _evaluate(client, _ask(ids, {"name": "resource", "resource": _obs(ids["patient"],
                                                                                          "laboratory")})))
    assert inline["decision"] == ["deny"]
    # no resource: the answer depends on it, and every provision that can take part is listed
    unsure = _out(await _evaluate(client, _ask(ids)))
    assert unsure["decision"] == ["conditional"] and [b["path"] for b in unsure["basis"]] == [
        "provision", "provision.provision[0]"]
    # before the consent's period the implicit policy decides
    before = _ask(ids, {"name": "resource", "valueReference": {"reference": f"Observation/{ids['lab']}"}})
    before["parameter"][3] = {"name": "time", "valueDateTime": "2025-12-31"}
    early = _out(await _evaluate(client, before))
    assert early["decision"] == ["permit"] and early["policy"] == ["basic-normal"] and early["basis"] == []
    assert early["valid-until"] == ["2026-01-01T00:00:00.000Z"]


async def test_answer_uses_only_what_the_definition_declares(client: httpx.AsyncClient) -> None:
    ids = await _setup(client)
    definition = (await client.get("/fhir/OperationDefinition/Consent-evaluate")).json()
    declared = {p["name"]: {q["name"] for q in p.get("part", [])} for p in definition["parameter"]}
    inputs = {p["name"] for p in definition["parameter"] if p["use"] == "in"}
    assert inputs == {"patient", "actor", "purpose", "action", "resource", "time", "actor-kind", "third-party",
                      "break-glass"}
    answer = (await _evaluate(client, _ask(ids))).json()
    for found in answer["parameter"]:
        assert found["name"] in declared
        assert {p["name"] for p in found.get("part", [])} <= declared[found["name"]]
    required = {p["name"] for p in definition["parameter"] if p["use"] == "out" and p["min"] >= 1}
    assert required <= {p["name"] for p in answer["parameter"]}


async def test_get_with_query_parameters(client: httpx.AsyncClient) -> None:
    ids = await _setup(client)
    answer = await client.get("/fhir/Consent/$evaluate", params={
        "patient": ids["patient"], "actor": "Practitioner/other", "purpose": "TREAT", "time": "2026-06-01",
        "resource": f"Observation/{ids['lab']}"})
    assert _out(answer)["decision"] == ["deny"]
    by_client = await client.get("/fhir/Consent/$evaluate", params={
        "patient": f"Patient/{ids['patient']}", "actor": "http://careloop.health/fhir/sid/client-id|app1",
        "purpose": f"{PURPOSE}|TREAT", "action": "collect", "time": "2026-06-01"})
    # an app collecting: not a clinician, so the consent's permit (for access and everything) decides
    assert _out(by_client)["decision"] == ["conditional"]


BAD: list[tuple[str, list[dict[str, Any]], int, str, str]] = [
    ("unknown parameter", [{"name": "purpos", "valueCoding": TREAT}], 400, "not-supported", "purpos"),
    ("patient missing", [], 400, "required", "patient"),
    ("patient not a Patient", [{"name": "patient", "valueReference": {"reference": "Group/1"}}], 400, "value",
     "patient"),
    ("actor missing", [{"name": "patient", "valueReference": {"reference": "Patient/1"}}], 400, "required",
     "actor"),
    ("actor empty", [{"name": "patient", "valueReference": {"reference": "Patient/1"}},
                     {"name": "actor", "valueReference": {"display": "someone"}}], 400, "value", "actor"),
    ("purpose without system", [{"name": "patient", "valueReference": {"reference": "Patient/1"}},
                                {"name": "actor", "valueReference": {"reference": "Practitioner/1"}},
                                {"name": "purpose", "valueCoding": {"code": "TREAT"}}], 400, "value", "purpose"),
    ("action unknown", [{"name": "patient", "valueReference": {"reference": "Patient/1"}},
                        {"name": "actor", "valueReference": {"reference": "Practitioner/1"}},
                        {"name": "action", "valueCode": "read"}], 400, "value", "action"),
    ("time not a date", [{"name": "patient", "valueReference": {"reference": "Patient/1"}},
                         {"name": "actor", "valueReference": {"reference": "Practitioner/1"}},
                         {"name": "time", "valueDateTime": "yesterday"}], 400, "value", "time"),
    ("actor-kind unknown", [{"name": "patient", "valueReference": {"reference": "Patient/1"}},
                            {"name": "actor", "valueReference": {"reference": "Practitioner/1"}},
                            {"name": "actor-kind", "valueCode": "boss"}], 400, "value", "actor-kind"),
    ("resource not stored", [{"name": "patient", "valueReference": {"reference": "Patient/1"}},
                             {"name": "actor", "valueReference": {"reference": "Practitioner/1"}},
                             {"name": "resource", "valueReference": {"reference": "Observation/nope"}}], 404,
     "not-found", "resource"),
    ("resource of no type", [{"name": "patient", "valueReference": {"reference": "Patient/1"}},
                             {"name": "actor", "valueReference": {"reference": "Practitioner/1"}},
                             {"name": "resource", "valueReference": {"reference": "Nothing/1"}}], 400, "value",
     "resource"),
]


@pytest.mark.parametrize(("parts", "status", "code", "expression"), [r[1:] for r in BAD], ids=[r[0] for r in BAD])
async def test_bad_input(client: httpx.AsyncClient, parts: list[dict[str, Any]], status: int, code: str,
                         expression: str) -> None:
    answer = await _evaluate(client, {"resourceType": "Parameters", "parameter": parts})
    assert answer.status_code == status, answer.text
    assert issue_code(answer) == code and answer.json()["issue"][0]["expression"] == [expression]


async def test_invalid_inline_resource_is_refused(client: httpx.AsyncClient) -> None:
    ids = await _setup(client)
    answer = await _evaluate(client, _ask(ids, {"name": "resource", "resource": {"resourceType": "Observation",
                                                                                   "status": 7}}))
    assert answer.status_code == 400 and issue_code(answer) != "exception"


async def test_configured_policy_decides(tmp_path: Path, seeded_database: Path) -> None:
    target = tmp_path / "careloop.db"
    target.write_bytes(seeded_database.read_bytes())
    settings = Settings(auth="off", sqlite_path=str(target), validation_workers=0,
                        consent_policy={"implicit": "deny"})
    async with client_for(settings) as client:
        patient = await _create(client, {"resourceType": "Patient"})
        answer = _out(await _evaluate(client, _ask({"patient": patient}, actor="Practitioner/gp")))
        assert answer["decision"] == ["deny"]
        assert answer["policy"] == ["deny"]
    bad = Settings(auth="off", sqlite_path=str(target), validation_workers=0, consent_policy={"implicit": "open"})
    application = create_app(bad)
    with pytest.raises(SystemExit, match="CARELOOP_CONSENT_POLICY: implicit must be one of"):
        async with application.router.lifespan_context(application):
            pass


async def test_only_auditors_and_support_may_call(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        scope = "launch/patient patient/*.rs"
        client_id, _ = world.app_client(scope)
        token = (await world.authorize(client_id, scope, "alice"))["access_token"]
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{world.ids['alice']}"}}]}
        for headers in (world.bearer(token), world.admin):
            answer = await world.client.post("/fhir/Consent/$evaluate", json=body, headers={**headers, **FHIR_JSON})
            assert answer.status_code == 403 and issue_code(answer) == "forbidden"
            assert "auditor or support" in answer.json()["issue"][0]["diagnostics"]
        # a compliance officer signed in with the auditor role (users add --role auditor) may
        world.auth.store.add_user("officer", "secret", f"Practitioner/{world.ids['practitioner']}",
                                  roles=("auditor",))
        user_scope = "openid fhirUser user/Consent.rs"
        app_id, _ = world.app_client(user_scope)
        officer = (await world.authorize(app_id, user_scope, "officer"))["access_token"]
        asked = {"resourceType": "Parameters", "parameter": [*body["parameter"], {
            "name": "actor", "valueReference": {"reference": f"Practitioner/{world.ids['practitioner']}"}}, {
            "name": "purpose", "valueCoding": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                               "code": "TREAT"}}]}
        answer = await world.client.post("/fhir/Consent/$evaluate", json=asked,
                                         headers={**world.bearer(officer), **FHIR_JSON})
        assert answer.status_code == 200, answer.text
        assert any(p["name"] == "decision" for p in answer.json()["parameter"])
