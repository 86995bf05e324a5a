"""Patient/$match on a built set of near-duplicates: twins, typos, swapped day/month, maiden names, pinyin.

https://hl7.org/fhir/R4B/patient-operation-match.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from operations.match_names import fold, name_parts, phone_digits, swapped_date
from operations.match_score import compare, shipped_rules
from server.settings import Settings
from tests.auth.conftest import open_world
from tests.auth.test_security_cases import patient_token
from tests.conftest import FHIR_JSON, body, client_for, create

pytestmark = pytest.mark.anyio

NATIONAL = "urn:oid:2.16.156.10011.1.1"
MRN = "urn:careloop:test:mrn"  # not unique by configuration: used to tell the stored people apart
GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def person(key: str, family: str, given: str, born: str, gender: str, phone: str | None = None,
           address: dict[str, Any] | None = None, national: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": MRN, "value": key}],
                             "name": [{"family": family, "given": [given]}], "birthDate": born, "gender": gender}
    if national:
        found["identifier"].append({"system": NATIONAL, "value": national})
    if phone:
        found["telecom"] = [{"system": "phone", "value": phone}]
    if address:
        found["address"] = [address]
    return found


HOME = {"line": ["1 Garden Road"], "city": "Hangzhou", "postalCode": "310000"}
STORED = [
    person("zhang", "张", "伟", "1980-03-15", "male", "13800138000", {"line": ["建国路88号"], "city": "北京"}),
    person("twin-a", "Li", "Na", "1990-07-04", "female", "13911112222", HOME, national="330100199007040021"),
    person("twin-b", "Li", "Xue", "1990-07-04", "female", "13911112222", HOME, national="330100199007040048"),
    person("mary", "Johnson", "Mary", "1975-11-02", "female", "+1 617 555 0100",
           {"line": ["12 Elm St"], "city": "Boston", "postalCode": "02110"}),
    person("robert", "Brown", "Robert", "1962-05-09", "male", "020 7946 0958"),
    person("wang", "Wang", "Fang", "1985-02-10", "female"),
    person("chen", "Chen", "Jie", "1970-01-01", "male"),
]


def probe(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **fields}


# (what it is, the Patient asked about, the expected graded matches as {stored key: grade})
CASES: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("same identifier, other name", probe(identifier=[{"system": MRN, "value": "chen"}],
                                           name=[{"family": "Someone", "given": ["Else"]}]), {"chen": "certain"}),
    ("pinyin for characters, phone with +86", probe(name=[{"family": "Zhang", "given": ["Wei"]}],
                                                     birthDate="1980-03-15", gender="male",
                                                     telecom=[{"system": "phone", "value": "+86 138-0013-8000"}]),
     {"zhang": "probable"}),
    ("surname first, as one text", probe(name=[{"text": "Zhang Wei"}], birthDate="1980-03-15", gender="male"),
     {"zhang": "probable"}),
    ("characters for pinyin, day and month swapped", probe(name=[{"family": "王", "given": ["芳"]}],
                                                           birthDate="1985-10-02", gender="female"),
     {"wang": "possible"}),
    ("a typo in the given name, same phone", probe(name=[{"family": "Brown", "given": ["Robret"]}],
                                                   birthDate="1962-05-09", gender="male",
                                                   telecom=[{"system": "phone", "value": "02079460958"}]),
     {"robert": "probable"}),
    ("a typo in the birth date", probe(name=[{"family": "Brown", "given": ["Robert"]}], birthDate="1962-05-08",
                                       gender="male"), {"robert": "possible"}),
    ("maiden name, same phone and address", probe(name=[{"family": "Smith", "given": ["Mary"]}],
                                                  birthDate="1975-11-02", gender="female",
                                                  telecom=[{"system": "phone", "value": "617-555-0100"}],
                                                  address=[{"line": ["12 Elm St"], "city": "Boston"}]),
     {"mary": "probable"}),
    ("a twin with her national ID", person("", "Li", "Na", "1990-07-04", "female", "13911112222", HOME,
                                           national="330100199007040021"),
     {"twin-a": "certain", "twin-b": "certainly-not"}),
    ("a twin without an ID: everything agrees for one, the other is a look-alike",
     probe(name=[{"family": "Li", "given": ["Na"]}], birthDate="1990-07-04", gender="female",
           telecom=[{"system": "phone", "value": "139 1111 2222"}], address=[HOME]),
     {"twin-a": "certain", "twin-b": "possible"}),
    ("same name, another person", probe(name=[{"family": "Li", "given": ["Na"]}], birthDate="2001-01-01",
                                        gender="male"), {}),
]


def _ask(resource: dict[str, Any], **extra: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "resource", "resource": resource}]
    for name, value in extra.items():
        parts.append({"name": name, "valueBoolean" if isinstance(value, bool) else "valueInteger": value})
    return {"resourceType": "Parameters", "parameter": parts}


def _graded(bundle: dict[str, Any]) -> dict[str, str]:
    found = {}
    for entry in bundle.get("entry") or []:
        key = next(i["value"] for i in entry["resource"]["identifier"] if i["system"] == MRN)
        grades = [x["valueCode"] for x in entry["search"]["extension"] if x["url"] == GRADE]
        assert entry["search"]["mode"] == "match" and 0 <= entry["search"]["score"] <= 1
        found[key] = grades[0]
    return found


@pytest.fixture
async def matcher(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    unique = settings.model_copy(update={"patient_unique_identifier_systems": [NATIONAL]})
    async with client_for(unique) as client:
        for resource in STORED:
            await create(client, resource)
        yield client


async def test_match_grades_the_near_duplicate_set(matcher: httpx.AsyncClient) -> None:
    for what, asked, expected in CASES:
        response = await matcher.post("/fhir/Patient/$match", content=body(_ask(asked)), headers=FHIR_JSON)
        assert response.status_code == 200, (what, response.text)
        found = response.json()
        assert found["type"] == "searchset"
        assert _graded(found) == expected, what
        scores = [e["search"]["score"] for e in found.get("entry") or []]
        if len({e["search"]["extension"][0]["valueCode"] for e in found.get("entry") or []}) == 1:
            assert scores == sorted(scores, reverse=True), what


async def test_only_certain_matches_and_count(matcher: httpx.AsyncClient) -> None:
    twin = CASES[-2][1]
    only = (await matcher.post("/fhir/Patient/$match", content=body(_ask(twin, onlyCertainMatches=True)),
                               headers=FHIR_JSON)).json()
    assert _graded(only) == {"twin-a": "certain"}
    one = (await matcher.post("/fhir/Patient/$match", content=body(_ask(twin, count=1)), headers=FHIR_JSON)).json()
    assert _graded(one) == {"twin-a": "certain"} and one["total"] == 1


async def test_bad_input_is_named(matcher: httpx.AsyncClient) -> None:
    missing = await matcher.post("/fhir/Patient/$match", content=body({"resourceType": "Parameters"}),
                                 headers=FHIR_JSON)
    assert missing.status_code == 400 and missing.json()["issue"][0]["expression"] == ["resource"]
    wrong = await matcher.post("/fhir/Patient/$match", content=body(_ask({"resourceType": "Observation"})),
                               headers=FHIR_JSON)
    assert wrong.status_code == 400 and wrong.json()["issue"][0]["expression"] == ["resource"]
    count = await matcher.post("/fhir/Patient/$match", content=body(_ask(probe(), count=0)), headers=FHIR_JSON)
    assert count.status_code == 400 and count.json()["issue"][0]["expression"] == ["count"]
    instance = await matcher.post("/fhir/Patient/x/$match", content=body(_ask(probe())), headers=FHIR_JSON)
    assert instance.status_code == 404
    statement = (await matcher.get("/fhir/metadata")).json()
    ops = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")["operation"]
    assert {"name": "match", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match"} in ops


async def test_a_patient_matches_only_within_what_they_may_see(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        bob_alike = probe(name=[{"family": "Beta", "given": ["Bob"]}], identifier=[{"system": "urn:mrn",
                                                                                    "value": "B-2"}])
        admin = await world.client.post("/fhir/Patient/$match", content=body(_ask(bob_alike)),
                                        headers=world.admin)
        assert [e["resource"]["id"] for e in admin.json()["entry"]] == [world.ids["bob"]]
        token = await patient_token(world, "alice")
        alice = await world.client.post("/fhir/Patient/$match", content=body(_ask(bob_alike)),
                                        headers={**world.bearer(token), **FHIR_JSON})
        assert alice.status_code == 200 and alice.json()["total"] == 0 and not alice.json().get("entry")


@pytest.mark.parametrize(("text", "folded"), [("张伟", "zhangwei"), ("Zhāng", "zhang"), ("O'Brien", "obrien"),
                                              ("Müller-Lüdenscheidt", "mullerludenscheidt"), ("", "")])
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


@pytest.mark.parametrize(("name", "parts"), [({"family": "张", "given": ["伟"]}, ("zhang", "wei")),
                                             ({"text": "欧阳娜娜"}, ("ou", "yangnana")),
                                             ({"text": "Mary Ann Smith"}, ("smith", "maryann")),
                                             ({"given": ["Cher"]}, ("", "cher")), ({}, None)])
def test_name_parts(name: dict[str, Any], parts: tuple[str, str] | None) -> None:
    assert name_parts(name) == parts


@pytest.mark.parametrize(("value", "digits"), [("+86 138-0013-8000", "13800138000"), ("0086 13800138000",
                                                                                      "13800138000"),
                                               ("(617) 555-0100", "6175550100"), ("020 7946 0958", "2079460958")])
def test_phone_digits(value: str, digits: str) -> None:
    assert phone_digits(value) == digits


@pytest.mark.parametrize(("date", "swapped"), [("1985-02-10", "1985-10-02"), ("1985-02-13", None),
                                               ("1985-02-02", None), ("1985-02", None)])
def test_swapped_date(date: str, swapped: str | None) -> None:
    assert swapped_date(date) == swapped


@pytest.mark.parametrize(("a", "b", "grade"), [
    (person("", "Li", "Na", "1990-07-04", "female"), person("", "Li", "Na", "1990-07-04", "male"), None),
    (person("", "Li", "Na", "1990-07-04", "female"), person("", "Li", "Na", "1990-07-04", "female"), "probable"),
    (person("x", "Li", "Na", "1990-07-04", "female"), person("x", "Wu", "Bo", "2000-01-01", "male"), "certain"),
    (person("", "Li", "Na", "1990-07-04", "female", national="1"),
     person("", "Li", "Na", "1990-07-04", "female", national="2"), "certainly-not"),
])
def test_compare(a: dict[str, Any], b: dict[str, Any], grade: str | None) -> None:
    a["identifier"] = [i for i in a["identifier"] if i["value"]]
    b["identifier"] = [i for i in b["identifier"] if i["value"]]
    assert compare(a, b, shipped_rules(), frozenset({NATIONAL})).grade == grade
