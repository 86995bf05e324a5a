"""REST behaviours that broke real client libraries (issue 33, items 8-11, 13, 14), seen as a client sees them.

https://hl7.org/fhir/R4B/search.html#modifyingresults and https://www.rfc-editor.org/rfc/rfc7396
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create, issue_code
from tests.factories import patient
from tests.subscriptions.conftest import subscription

pytestmark = pytest.mark.anyio

STRICT = {"Prefer": "handling=strict"}


async def _three_patients(client: httpx.AsyncClient, family: str) -> list[str]:
    for born in ("1990-01-01", "1970-01-01", "1980-01-01"):
        await create(client, patient(family=family, birthDate=born))
    return ["1970-01-01", "1980-01-01", "1990-01-01"]


def _births(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["birthDate"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def _warnings(bundle: dict[str, Any]) -> list[str]:
    return [issue["diagnostics"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
            for issue in e["resource"]["issue"]]


# item 8: result parameters with a modifier

@pytest.mark.parametrize(("modifier", "descending"), [("desc", True), ("asc", False)])
async def test_legacy_sort_modifiers_order_the_results(client: httpx.AsyncClient, modifier: str,
                                                       descending: bool) -> None:
    ordered = await _three_patients(client, "Sorted")
    for headers in ({}, STRICT):
        answer = await client.get("/fhir/Patient", params={"family": "Sorted", f"_sort:{modifier}": "birthdate"},
                                  headers=headers)
        assert answer.status_code == 200, answer.text
        assert _births(answer.json()) == (ordered[::-1] if descending else ordered)


@pytest.mark.parametrize("key", ["_count:x", "_summary:x", "_include:foo", "_sort:sideways", "_total:x",
                                 "_elements:x"])
async def test_unknown_modifiers_on_result_parameters(client: httpx.AsyncClient, key: str) -> None:
    value = {"_count:x": "1", "_summary:x": "true", "_include:foo": "Patient:general-practitioner",
             "_sort:sideways": "birthdate", "_total:x": "accurate", "_elements:x": "name"}[key]
    await _three_patients(client, "Modified")
    strict = await client.get("/fhir/Patient", params={"family": "Modified", key: value}, headers=STRICT)
    assert strict.status_code == 400
    assert issue_code(strict) == "not-supported"
    assert key in strict.json()["issue"][0]["diagnostics"]
    lenient = await client.get("/fhir/Patient", params={"family": "Modified", key: value})
    assert lenient.status_code == 200
    assert any(key in warning for warning in _warnings(lenient.json()))
    assert len(_births(lenient.json())) == 3  # the parameter was ignored, as the warning says


# item 9: _count=0 asks for the count

async def test_count_zero_answers_the_total(client: httpx.AsyncClient) -> None:
    await _three_patients(client, "Counted")
    for params in ({"family": "Counted", "_count": "0"},
                   {"family": "Counted", "_count": "0", "_totalMethod": "count"}):
        answer = await client.get("/fhir/Patient", params=params)
        assert answer.status_code == 200, answer.text
        assert answer.json()["total"] == 3
        assert _births(answer.json()) == []


# item 10: JSON Merge Patch

@pytest.mark.parametrize("media", ["application/merge-patch+json", "application/json"])
async def test_merge_patch(client: httpx.AsyncClient, media: str) -> None:
    stored = await create(client, patient(family="Merge", gender="female", birthDate="1970-04-01"))
    url = f"/fhir/Patient/{stored['id']}"
    merge = {"gender": "male", "birthDate": None, "name": [{"family": "Merged"}], "active": True}
    patched = await client.patch(url, content=body(merge), headers={"Content-Type": media, "If-Match": 'W/"1"'})
    assert patched.status_code == 200, patched.text
    assert patched.headers["etag"] == 'W/"2"'
    read = (await client.get(url)).json()
    assert read["gender"] == "male" and read["active"] is True and "birthDate" not in read
    assert read["name"] == [{"family": "Merged"}]  # arrays are replaced whole (RFC 7396)
    assert read["meta"]["versionId"] == "2"
    stale = await client.patch(url, content=body({"gender": "other"}),
                               headers={"Content-Type": media, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    invalid = await client.patch(url, content=body({"gender": "robot"}), headers={"Content-Type": media})
    assert invalid.status_code == 400 and "gender" in str(invalid.json())
    moved = await client.patch(url, content=body({"id": "elsewhere"}), headers={"Content-Type": media})
    assert moved.status_code == 400
    not_object = await client.patch(url, content=b'"text"', headers={"Content-Type": "application/merge-patch+json"})
    assert not_object.status_code == 400 and issue_code(not_object) == "structure"
    assert (await client.get(url)).json()["meta"]["versionId"] == "2"


async def test_merge_patch_conditional(client: httpx.AsyncClient) -> None:
    await create(client, patient(family="CondMerge", mrn="merge-1"))
    answer = await client.patch("/fhir/Patient", params={"identifier": "urn:oid:1.2.36.146.595.217.0.1|merge-1"},
                                content=body({"active": False}),
                                headers={"Content-Type": "application/merge-patch+json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["active"] is False


# item 11: an unencoded + in _format

async def test_format_with_unencoded_plus(client: httpx.AsyncClient) -> None:
    answer = await client.get("/fhir/metadata?_format=application/fhir+json")
    assert answer.status_code == 200, answer.text
    search = await client.get("/fhir/Patient?_format=application/fhir+json&_count=1")
    assert search.status_code == 200


# item 13: the setting that allows a loopback rest-hook

async def test_loopback_endpoint_names_the_setting(client: httpx.AsyncClient) -> None:
    answer = await client.post("/fhir/Subscription", content=body(subscription("http://127.0.0.1:9999/hook")),
                               headers=FHIR_JSON)
    assert answer.status_code == 422
    assert "CARELOOP_SUBSCRIPTION_ALLOWED_NETWORKS" in answer.json()["issue"][0]["diagnostics"]


# item 14: error wording in FHIR terms

async def test_wrong_case_type_suggests_the_type(client: httpx.AsyncClient) -> None:
    answer = await client.get("/fhir/patient")
    assert answer.status_code == 404
    assert "Patient" in answer.json()["issue"][0]["diagnostics"]
    unknown = await client.get("/fhir/Zebra/1")
    assert unknown.status_code == 404 and "Zebra" in unknown.json()["issue"][0]["diagnostics"]


async def test_search_date_that_is_not_a_date(client: httpx.AsyncClient) -> None:
    answer = await client.get("/fhir/Patient", params={"birthdate": "yesterday"})
    assert answer.status_code == 400
    text = answer.json()["issue"][0]["diagnostics"]
    assert "'yesterday' is not a date" in text and "YYYY-MM-DD" in text and "prefix" in text
    assert "Unknown prefix" not in text
    still_prefix = await client.get("/fhir/Patient", params={"birthdate": "xx2020"})
    assert still_prefix.status_code == 400


LIBRARY_WORDING = ("Extra inputs are not permitted", "does not match spec regex", "Input should be",
                   "Field required", "validation error", "pydantic")

BAD_PATIENTS = [
    ({"foo": 1}, "Patient.foo", "not an element of Patient"),
    ({"birthDate": "1970-13-45"}, "Patient.birthDate", "YYYY-MM-DD"),
    ({"birthDate": "01/04/1970"}, "Patient.birthDate", "YYYY-MM-DD"),
    ({"deceasedDateTime": "2020-01-01T10:00"}, "Patient.deceasedDateTime", "YYYY-MM-DDThh:mm:ss+zz:zz"),
    ({"gender": "x"}, "Patient.gender", "female, male, other, unknown"),
    ({"active": "yes"}, "Patient.active", "true or false"),
    ({"multipleBirthInteger": "two"}, "Patient.multipleBirthInteger", "integer"),
    ({"name": {"family": "x"}}, "Patient.name", "array"),
    ({"name": [{"family": ["a"]}]}, "Patient.name[0].family", "string"),
    ({"telecom": [{"system": "pager-ish", "value": "1"}]}, "Patient.telecom[0].system",
     "email, fax, other, pager, phone"),
]


@pytest.mark.parametrize(("change", "expression", "expected"), BAD_PATIENTS)
async def test_validation_messages_name_element_and_form(client: httpx.AsyncClient, change: dict[str, Any],
                                                         expression: str, expected: str) -> None:
    answer = await client.post("/fhir/Patient", content=body({"resourceType": "Patient", **change}),
                               headers=FHIR_JSON)
    assert answer.status_code == 400, answer.text
    issues = answer.json()["issue"]
    mine = [i for i in issues if i.get("expression") == [expression]]
    assert mine, issues
    assert expected in mine[0]["diagnostics"], mine[0]
    assert expression in mine[0]["diagnostics"]
    for issue in issues:
        assert not any(w.lower() in issue["diagnostics"].lower() for w in LIBRARY_WORDING), issue


async def test_missing_required_element_is_named(settings: Settings) -> None:
    async with client_for(settings) as client:
        answer = await client.post("/fhir/Observation", content=body({"resourceType": "Observation",
                                                                      "status": "final"}), headers=FHIR_JSON)
    assert answer.status_code == 400
    issue = next(i for i in answer.json()["issue"] if i.get("expression") == ["Observation.code"])
    assert "Observation.code" in issue["diagnostics"] and "required" in issue["diagnostics"]
