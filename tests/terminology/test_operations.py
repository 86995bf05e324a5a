"""$lookup, $validate-code, $expand, $subsumes and $translate over HTTP, on the specification's own content.

https://hl7.org/fhir/R4B/terminology-service.html
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, issue_code

pytestmark = pytest.mark.anyio
SCT = "http://snomed.info/sct"
GENDER_CS = "http://hl7.org/fhir/administrative-gender"
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"


def param(parameters: dict[str, Any], name: str) -> Any:
    """The value of the first part with this name."""
    for part in parameters["parameter"]:
        if part["name"] == name:
            return next(v for k, v in part.items() if k.startswith("value"))
    raise KeyError(name)


def parts(parameters: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in parameters["parameter"] if p["name"] == name]


# -- $lookup -----------------------------------------------------------------------------------------
async def test_lookup_a_code_of_the_specification(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/CodeSystem/$lookup", params={"system": GENDER_CS, "code": "female"})
    assert response.status_code == 200
    found = response.json()
    assert found["resourceType"] == "Parameters"
    assert param(found, "display") == "Female"
    assert param(found, "name") == "AdministrativeGender"
    assert param(found, "version") == "4.3.0"


async def test_lookup_reports_the_is_a_hierarchy(client: httpx.AsyncClient) -> None:
    found = (await client.get("/fhir/CodeSystem/$lookup", params={"system": SCT, "code": "73211009"})).json()
    assert param(found, "display") == "Diabetes mellitus"
    props = {(p["part"][0]["valueCode"], p["part"][1]["valueCode"]) for p in parts(found, "property")}
    assert ("parent", "362969004") in props
    assert {("child", "44054006"), ("child", "46635009")} <= props


async def test_lookup_by_post_with_a_coding_and_on_an_instance(client: httpx.AsyncClient) -> None:
    sent = {"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": "http://loinc.org", "code": "8480-6"}}]}
    response = await client.post("/fhir/CodeSystem/$lookup", content=body(sent), headers=FHIR_JSON)
    assert response.status_code == 200
    assert param(response.json(), "display") == "Systolic blood pressure"
    on_instance = await client.get("/fhir/CodeSystem/administrative-gender/$lookup", params={"code": "other"})
    assert param(on_instance.json(), "display") == "Other"


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"system": GENDER_CS, "code": "robot"}, 404, "code-invalid"),
    ({"system": "http://example.org/no-such-system", "code": "x"}, 404, "not-found"),
    ({"system": GENDER_CS}, 400, "required"),
    ({"code": "female"}, 400, "required"),
])
async def test_lookup_failures(client: httpx.AsyncClient, params: dict[str, str], status: int, code: str) -> None:
    response = await client.get("/fhir/CodeSystem/$lookup", params=params)
    assert response.status_code == status, response.text
    assert issue_code(response) == code


# -- $validate-code ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "result"), [
    ({"url": GENDER_VS, "system": GENDER_CS, "code": "male"}, True),
    ({"url": GENDER_VS, "system": GENDER_CS, "code": "robot"}, False),
    ({"url": GENDER_VS, "system": "http://example.org/other", "code": "male"}, False),  # right code, wrong system
    ({"url": "http://hl7.org/fhir/ValueSet/observation-status", "code": "corrected"}, True),
    ({"url": "http://hl7.org/fhir/ValueSet/observation-status", "code": "entered-in-error"}, True),
    ({"url": "http://careloop.health/fhir/ValueSet/chronic-conditions", "system": SCT, "code": "44054006"}, True),
    ({"url": "http://careloop.health/fhir/ValueSet/chronic-conditions", "system": SCT, "code": "254837009"}, False),
])
async def test_validate_code_in_a_value_set(client: httpx.AsyncClient, params: dict[str, str], result: bool) -> None:
    response = await client.get("/fhir/ValueSet/$validate-code", params=params)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert param(answer, "result") is result
    if not result:
        assert params["code"] in param(answer, "message")


async def test_validate_code_checks_the_display(client: httpx.AsyncClient) -> None:
    wrong = (await client.get("/fhir/ValueSet/$validate-code", params={
        "url": GENDER_VS, "system": GENDER_CS, "code": "male", "display": "Man"})).json()
    assert param(wrong, "result") is False
    assert param(wrong, "display") == "Male"
    right = (await client.get("/fhir/ValueSet/$validate-code", params={
        "url": GENDER_VS, "system": GENDER_CS, "code": "male", "display": "male"})).json()
    assert param(right, "result") is True


async def test_validate_code_on_a_code_system_and_with_a_codeable_concept(client: httpx.AsyncClient) -> None:
    known = (await client.get("/fhir/CodeSystem/$validate-code", params={"url": SCT, "code": "59621000"})).json()
    assert param(known, "result") is True and param(known, "display") == "Essential hypertension"
    unknown = (await client.get("/fhir/CodeSystem/$validate-code", params={"url": SCT, "code": "1"})).json()
    assert param(unknown, "result") is False
    sent = {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": "http://careloop.health/fhir/ValueSet/severe-conditions"},
        {"name": "codeableConcept", "valueCodeableConcept": {"coding": [
            {"system": "http://example.org/local", "code": "stroke"}, {"system": SCT, "code": "230690007"}]}}]}
    response = await client.post("/fhir/ValueSet/$validate-code", content=body(sent), headers=FHIR_JSON)
    assert param(response.json(), "result") is True


async def test_validate_code_needs_a_value_set_and_a_code(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/ValueSet/$validate-code", params={"code": "male"})
    assert response.status_code == 400 and issue_code(response) == "required"
    response = await client.get("/fhir/ValueSet/$validate-code", params={"url": GENDER_VS})
    assert response.status_code == 400 and issue_code(response) == "required"
    response = await client.get("/fhir/ValueSet/$validate-code", params={"url": "http://x.org/none", "code": "a"})
    assert response.status_code == 404


# -- $expand -----------------------------------------------------------------------------------------
async def test_expand_with_filter_count_and_offset(client: httpx.AsyncClient) -> None:
    url = "http://hl7.org/fhir/ValueSet/observation-status"
    whole = (await client.get("/fhir/ValueSet/$expand", params={"url": url})).json()
    codes = [c["code"] for c in whole["expansion"]["contains"]]
    assert whole["expansion"]["total"] == 8 == len(codes)
    assert {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error",
            "unknown"} == set(codes)
    page = (await client.get("/fhir/ValueSet/$expand", params={"url": url, "count": "3", "offset": "2"})).json()
    assert [c["code"] for c in page["expansion"]["contains"]] == codes[2:5]
    assert page["expansion"]["total"] == 8 and page["expansion"]["offset"] == 2
    filtered = (await client.get("/fhir/ValueSet/$expand", params={"url": url, "filter": "error"})).json()
    assert [c["code"] for c in filtered["expansion"]["contains"]] == ["entered-in-error"]


async def test_expand_is_a_filters_and_exclusions(client: httpx.AsyncClient) -> None:
    chronic = (await client.get("/fhir/ValueSet/$expand", params={
        "url": "http://careloop.health/fhir/ValueSet/chronic-conditions"})).json()
    codes = {c["code"] for c in chronic["expansion"]["contains"]}
    assert {"73211009", "44054006", "46635009", "38341003", "59621000"} <= codes
    assert "363346000" not in codes and "62914000" not in codes
    inline = {"resourceType": "ValueSet", "status": "active", "compose": {
        "include": [{"system": SCT, "filter": [{"property": "concept", "op": "descendent-of", "value": "49601007"}]}],
        "exclude": [{"system": SCT, "filter": [{"property": "concept", "op": "is-a", "value": "62914000"}]}]}}
    sent = {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": inline}]}
    response = await client.post("/fhir/ValueSet/$expand", content=body(sent), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    codes = {c["code"] for c in response.json()["expansion"]["contains"]}
    assert "49601007" not in codes  # descendent-of leaves the code itself out
    assert {"38341003", "59621000", "22298006"} <= codes
    assert not codes & {"62914000", "230690007", "266257000"}


async def test_expand_with_regex_and_equals_filters(client: httpx.AsyncClient) -> None:
    regex = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [
        {"system": "http://loinc.org", "filter": [{"property": "code", "op": "regex", "value": "8[0-9]{3}-[0-9]"}]}]}}
    sent = {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": regex}]}
    codes = {c["code"] for c in (await client.post("/fhir/ValueSet/$expand", content=body(sent),
                                                   headers=FHIR_JSON)).json()["expansion"]["contains"]}
    assert codes == {"8480-6", "8462-4", "8867-4", "8310-5", "8302-2"}
    equals = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [
        {"system": "http://loinc.org", "filter": [{"property": "code", "op": "=", "value": "4548-4"}]}]}}
    sent = {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": equals}]}
    found = (await client.post("/fhir/ValueSet/$expand", content=body(sent), headers=FHIR_JSON)).json()
    assert [c["code"] for c in found["expansion"]["contains"]] == ["4548-4"]


async def test_expand_a_stored_value_set_by_id_and_one_that_imports_others(client: httpx.AsyncClient) -> None:
    by_id = await client.get("/fhir/ValueSet/careloop-tier/$expand")
    assert [c["code"] for c in by_id.json()["expansion"]["contains"]] == ["A", "B", "C"]
    readings = (await client.get("/fhir/ValueSet/$expand", params={
        "url": "http://careloop.health/fhir/ValueSet/device-readings"})).json()
    assert readings["expansion"]["total"] == 24


@pytest.mark.parametrize(("params", "status", "code"), [
    ({}, 400, "required"),
    ({"url": "http://example.org/ValueSet/none"}, 404, "not-found"),
    ({"url": "http://hl7.org/fhir/ValueSet/observation-codes"}, 400, "not-supported"),  # all of LOINC
    ({"url": "http://hl7.org/fhir/ValueSet/observation-status", "count": "-1"}, 400, "value"),
    ({"url": "http://hl7.org/fhir/ValueSet/observation-status", "offset": "x"}, 400, "value"),
])
async def test_expand_failures(client: httpx.AsyncClient, params: dict[str, str], status: int, code: str) -> None:
    response = await client.get("/fhir/ValueSet/$expand", params=params)
    assert response.status_code == status, response.text
    assert issue_code(response) == code


async def test_expand_refuses_an_expansion_over_the_limit(tmp_path: Path, seeded_database: Path) -> None:
    shutil.copyfile(seeded_database, tmp_path / "small.db")
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "small.db"), validation_workers=0, expansion_limit=5)
    async with client_for(settings) as c:
        response = await c.get("/fhir/ValueSet/$expand",
                               params={"url": "http://hl7.org/fhir/ValueSet/observation-status"})
        assert response.status_code == 400 and issue_code(response) == "too-costly"


# -- $subsumes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b", "outcome"), [
    ("73211009", "44054006", "subsumes"),
    ("44054006", "73211009", "subsumed-by"),
    ("64572001", "59621000", "subsumes"),  # across three levels
    ("44054006", "44054006", "equivalent"),
    ("44054006", "59621000", "not-subsumed"),
])
async def test_subsumes_in_snomed(client: httpx.AsyncClient, a: str, b: str, outcome: str) -> None:
    response = await client.get("/fhir/CodeSystem/$subsumes", params={"system": SCT, "codeA": a, "codeB": b})
    assert response.status_code == 200, response.text
    assert param(response.json(), "outcome") == outcome


async def test_subsumes_in_a_specification_hierarchy_and_errors(client: httpx.AsyncClient) -> None:
    # condition-clinical nests its concepts in the R4B content: active subsumes relapse
    response = await client.get("/fhir/CodeSystem/$subsumes", params={
        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "codeA": "active", "codeB": "relapse"})
    assert param(response.json(), "outcome") == "subsumes"
    bad = await client.get("/fhir/CodeSystem/$subsumes", params={"system": SCT, "codeA": "73211009", "codeB": "0"})
    assert bad.status_code == 404 and issue_code(bad) == "code-invalid"
    missing = await client.get("/fhir/CodeSystem/$subsumes", params={"system": SCT, "codeA": "73211009"})
    assert missing.status_code == 400 and issue_code(missing) == "required"


# -- $translate --------------------------------------------------------------------------------------
async def test_translate_a_condition_to_a_health_status(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/ConceptMap/$translate", params={"system": SCT, "code": "44054006"})
    assert response.status_code == 200
    answer = response.json()
    assert param(answer, "result") is True
    match = parts(answer, "match")[0]["part"]
    concept = next(p["valueCoding"] for p in match if p["name"] == "concept")
    assert concept["code"] == "chronic"
    assert concept["system"] == "http://careloop.health/fhir/CodeSystem/health-status"
    severe = await client.get("/fhir/ConceptMap/condition-to-health-status/$translate",
                              params={"system": SCT, "code": "230690007"})
    assert parts(severe.json(), "match")[0]["part"][1]["valueCoding"]["code"] == "severe"


async def test_translate_in_reverse_and_without_a_match(client: httpx.AsyncClient) -> None:
    reverse = (await client.get("/fhir/ConceptMap/$translate", params={
        "system": "http://careloop.health/fhir/CodeSystem/health-status", "code": "sub-healthy",
        "reverse": "true"})).json()
    assert [p["part"][1]["valueCoding"]["code"] for p in parts(reverse, "match")] == ["15777000"]
    none = (await client.get("/fhir/ConceptMap/$translate", params={"system": SCT, "code": "195967001x"})).json()
    assert param(none, "result") is False and "195967001x" in param(none, "message")
    missing = await client.get("/fhir/ConceptMap/$translate", params={"code": "44054006"})
    assert missing.status_code == 400 and issue_code(missing) == "required"


# -- the registry at the edge ------------------------------------------------------------------------
async def test_unknown_operations_and_wrong_bodies(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/fhir/Patient/$lookup")
    assert unknown.status_code == 404 and issue_code(unknown) == "not-supported"
    bad_body = await client.post("/fhir/CodeSystem/$lookup", content=body({"resourceType": "Patient"}),
                                 headers=FHIR_JSON)
    assert bad_body.status_code == 400 and issue_code(bad_body) == "structure"
    gone = await client.get("/fhir/CodeSystem/no-such-id/$lookup", params={"code": "x"})
    assert gone.status_code == 404


async def test_capability_statement_lists_the_operations(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    by_type = {r["type"]: {o["name"] for o in r.get("operation", [])} for r in statement["rest"][0]["resource"]}
    every_type = {"meta", "meta-add", "meta-delete", "validate"}  # the Resource-level operations (issue 32)
    assert by_type["CodeSystem"] == {"lookup", "validate-code", "subsumes"} | every_type
    assert by_type["ValueSet"] == {"validate-code", "expand"} | every_type
    assert by_type["ConceptMap"] == {"translate"} | every_type
