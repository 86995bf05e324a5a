"""$validate: every R4B example is valid; mutated resources get each of their issues named, 200, nothing stored.

https://hl7.org/fhir/R4B/resource-operation-validate.html
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import FHIR_JSON, body, create
from tests.factories import observation, patient
from tests.server.test_examples import EXAMPLES, UNEVALUABLE

pytestmark = pytest.mark.anyio

PROFILE = "http://careloop.health/fhir/StructureDefinition/checkup-patient"


def _ask(resource: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": resource}, *({"name": k, "valueString": v} for k, v in extra.items())]}


async def _validate(client: httpx.AsyncClient, resource: dict[str, Any], url: str | None = None,
                    **extra: str) -> list[dict[str, Any]]:
    response = await client.post(url or f"/fhir/{resource['resourceType']}/$validate",
                                 content=body(_ask(resource, **extra)), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


async def test_every_r4b_example_is_valid(client: httpx.AsyncClient) -> None:
    failures = []
    for path in EXAMPLES:
        example = orjson.loads(path.read_bytes())
        errors = await _validate(client, example)
        where = [e.get("expression", [""])[0] for e in errors]
        if path.name in UNEVALUABLE:  # every nested provision without a type is named, the first as a write names it
            if not where or where[0] != UNEVALUABLE[path.name] or any(e["code"] != "processing" for e in errors):
                failures.append(f"{path.name}: {errors}")
        elif where:
            failures.append(f"{path.name}: {errors}")
    assert not failures, "\n".join(failures[:10])


async def test_mutated_resources_have_each_issue_named(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    bad_gender = await _validate(client, patient(gender="robot"))
    assert [e["expression"] for e in bad_gender] == [["Patient.gender"]]
    no_status = {k: v for k, v in observation("Patient/x").items() if k != "status"}
    assert ["Observation.status"] in [e["expression"] for e in await _validate(client, no_status)]
    unknown = await _validate(client, patient(colour="blue"))
    assert [e["expression"] for e in unknown] == [["Patient.colour"]]
    both = await _validate(client, {**patient(birthDate="1990-13-45"), "colour": "blue"})
    assert sorted(e["expression"][0] for e in both) == ["Patient.birthDate", "Patient.colour"]
    # modes: an update needs the id, and at instance level the id of the URL
    update = await _validate(client, patient(), mode="update")
    assert [e["expression"] for e in update] == [["Patient.id"]]
    other = await _validate(client, {**patient(), "id": "someone-else"}, f"/fhir/Patient/{stored['id']}/$validate")
    assert [e["expression"] for e in other] == [["Patient.id"]]
    fine = await client.post(f"/fhir/Patient/{stored['id']}/$validate", content=body(_ask(stored)),
                             headers=FHIR_JSON)
    assert fine.json()["issue"] == [{"severity": "information", "code": "informational",
                                     "diagnostics": "No issues: the resource would be accepted"}]
    delete = await client.get(f"/fhir/Patient/{stored['id']}/$validate", params={"mode": "delete"})
    assert delete.status_code == 200 and delete.json()["issue"][0]["severity"] == "information"
    assert (await client.get("/fhir/Patient/nobody/$validate", params={"mode": "delete"})).status_code == 404
    assert (await client.get("/fhir/Patient/$validate", params={"mode": "delete"})).status_code == 400
    assert (await client.post("/fhir/Patient/$validate", content=body(_ask(patient(), mode="merge")),
                              headers=FHIR_JSON)).status_code == 400
    wrong_type = await client.post("/fhir/Observation/$validate", content=body(_ask(patient())), headers=FHIR_JSON)
    assert wrong_type.status_code == 400 and wrong_type.json()["issue"][0]["expression"] == ["resource"]
    # nothing was stored
    found = (await client.get("/fhir/Patient", params={"_total": "accurate"})).json()
    assert found["total"] == 1


async def test_a_consent_write_rule_is_a_validation_issue(client: httpx.AsyncClient) -> None:
    ann = await create(client, patient())
    marketing = {"resourceType": "Communication", "status": "preparation",
                 "category": [{"coding": [{"system": "http://careloop.health/fhir/CodeSystem/communication-category",
                                           "code": "marketing"}]}], "subject": {"reference": f"Patient/{ann['id']}"}}
    errors = await _validate(client, marketing)
    assert [(e["code"], e["expression"]) for e in errors] == [("forbidden", ["Communication.category"])]


def _element(path: str, low: int, high: str, **extra: Any) -> dict[str, Any]:
    return {"id": path, "path": path, "min": low, "max": high, **extra}


async def test_a_stored_profile_checks_cardinality_and_fixed_and_pattern_values(client: httpx.AsyncClient) -> None:
    definition = {"resourceType": "StructureDefinition", "url": PROFILE, "name": "CheckupPatient",
                  "status": "active", "kind": "resource", "abstract": False, "type": "Patient",
                  "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient", "derivation": "constraint",
                  "snapshot": {"element": [
                      _element("Patient", 0, "*"),
                      _element("Patient.identifier", 1, "*"),
                      _element("Patient.name", 0, "1"),
                      _element("Patient.name.family", 1, "1"),
                      _element("Patient.gender", 0, "1", fixedCode="female"),
                      _element("Patient.maritalStatus", 0, "1", patternCodeableConcept={"coding": [
                          {"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"}]}),
                      _element("Patient.deceased[x]", 0, "0"),
                      _element("Patient.identifier:national", 0, "1"),  # a slice: not checked (documented)
                  ]}}
    await create(client, definition)
    good = {**patient(gender="female"), "identifier": [{"value": "1"}]}
    assert await _validate(client, good, profile=PROFILE) == []
    bad = {"resourceType": "Patient", "gender": "male", "deceasedBoolean": False,
           "name": [{"given": ["A"]}, {"family": "B"}],
           "maritalStatus": {"coding": [{"system": "http://example.org/status", "code": "M"}]}}
    errors = await _validate(client, bad, profile=PROFILE)
    assert sorted((e["code"], e["expression"][0]) for e in errors) == [
        ("required", "Patient.identifier"), ("required", "Patient.name[0].family"), ("structure", "Patient.deceased"),
        ("structure", "Patient.name"), ("value", "Patient.gender"), ("value", "Patient.maritalStatus")]
    core = await _validate(client, bad, profile="http://hl7.org/fhir/StructureDefinition/Patient")
    assert core == []
    unknown = await client.post("/fhir/Patient/$validate", content=body(_ask(good, profile="http://nowhere/x")),
                                headers=FHIR_JSON)
    assert unknown.status_code == 400 and unknown.json()["issue"][0]["expression"] == ["profile"]
