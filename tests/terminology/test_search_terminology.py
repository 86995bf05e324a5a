"""Search that uses terminology: :in, :not-in, :above, :below on tokens, and quantities compared across units.

https://hl7.org/fhir/R4B/search.html#modifiers, https://hl7.org/fhir/R4B/search.html#quantity
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio
SCT = "http://snomed.info/sct"
CL = "http://careloop.health/fhir"


def condition(subject: str, code: str, clinical: str = "active") -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": {"reference": subject},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": clinical}]},
            "code": {"coding": [{"system": SCT, "code": code}]}}


@pytest.fixture
async def conditions(client: httpx.AsyncClient) -> dict[str, str]:
    who = await create(client, patient())
    ref = f"Patient/{who['id']}"
    made = {}
    for name, code, clinical in (("t2dm", "44054006", "active"), ("dm", "73211009", "relapse"),
                                 ("htn", "59621000", "active"), ("stroke", "230690007", "remission"),
                                 ("breast", "254837009", "resolved"), ("local", "x-123", "active")):
        body = condition(ref, code, clinical)
        if name == "local":
            body["code"] = {"coding": [{"system": "http://clinic.example/codes", "code": code}]}
        made[name] = (await create(client, body))["id"]
    return made


async def found(client: httpx.AsyncClient, query: str) -> set[str]:
    response = await client.get(f"/fhir/{query}")
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


@pytest.mark.parametrize(("query", "expected"), [
    (f"Condition?code:below={SCT}|73211009", {"t2dm", "dm"}),
    (f"Condition?code:below={SCT}|49601007", {"htn", "stroke"}),
    (f"Condition?code:below={SCT}|64572001", {"t2dm", "dm", "htn", "stroke", "breast"}),
    (f"Condition?code:below={SCT}|44054006", {"t2dm"}),
    (f"Condition?code:above={SCT}|44054006", {"t2dm", "dm"}),  # T2DM and its ancestor diabetes
    (f"Condition?code:above={SCT}|59621000", {"htn"}),
    (f"Condition?code:in={CL}/ValueSet/chronic-conditions", {"t2dm", "dm", "htn"}),
    (f"Condition?code:in={CL}/ValueSet/severe-conditions", {"stroke", "breast"}),
    (f"Condition?code:in={CL}/ValueSet/severe-conditions,{CL}/ValueSet/chronic-conditions",
     {"t2dm", "dm", "htn", "stroke", "breast"}),
    (f"Condition?code:not-in={CL}/ValueSet/chronic-conditions", {"stroke", "breast", "local"}),
    ("Condition?clinical-status:below=http://terminology.hl7.org/CodeSystem/condition-clinical|active",
     {"t2dm", "dm", "htn", "local"}),
    ("Condition?clinical-status:in=http://hl7.org/fhir/ValueSet/condition-clinical", {
        "t2dm", "dm", "htn", "stroke", "breast", "local"}),
    (f"Condition?code:in={CL}/ValueSet/chronic-conditions&clinical-status=active", {"t2dm", "htn"}),
])
async def test_terminology_modifiers(client: httpx.AsyncClient, conditions: dict[str, str], query: str,
                                     expected: set[str]) -> None:
    assert await found(client, query) == {conditions[n] for n in expected}


async def test_modifiers_in_chains_and_reverse_chains(client: httpx.AsyncClient,
                                                      conditions: dict[str, str]) -> None:
    chronic = f"{CL}/ValueSet/chronic-conditions"
    patients = await found(client, f"Patient?_has:Condition:subject:code:in={chronic}")
    assert len(patients) == 1
    via_chain = await found(client, f"Condition?subject._has:Condition:subject:code:below={SCT}|62914000")
    assert via_chain == set(conditions.values())


@pytest.mark.parametrize(("query", "code", "words"), [
    ("Condition?code:in=http://example.org/ValueSet/none", "not-found", "not known"),
    (f"Condition?code:below={SCT}|0000", "code-invalid", "0000"),
    ("Condition?code:below=http://example.org/none|1", "not-supported", "not known"),
    ("Condition?code:below=73211009", "value", "system|code"),
    ("Condition?code:in=http://hl7.org/fhir/ValueSet/observation-codes", "not-supported", "subset"),
])
async def test_modifier_errors_name_the_parameter(client: httpx.AsyncClient, query: str, code: str,
                                                  words: str) -> None:
    response = await client.get(f"/fhir/{query}")
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == code and words in issue["diagnostics"]
    assert issue.get("expression") == ["code"] or "code" in issue["diagnostics"]


@pytest.fixture
async def readings(client: httpx.AsyncClient) -> dict[str, str]:
    who = await create(client, patient())
    ref = f"Patient/{who['id']}"
    made = {}
    for name, code, value, unit in (
            ("glucose-mass", "2339-0", 126, "mg/dL"), ("glucose-molar", "15074-8", 7.0, "mmol/L"),
            ("glucose-high", "2339-0", 200, "mg/dL"), ("weight-lb", "29463-7", 154, "[lb_av]"),
            ("weight-kg", "29463-7", 70, "kg"), ("temp-f", "8310-5", 98.6, "[degF]"),
            ("temp-c", "8310-5", 38.5, "Cel")):
        made[name] = (await create(client, observation(ref, code=code, value=value, unit=unit)))["id"]
    return made


@pytest.mark.parametrize(("query", "expected"), [
    # 126 mg/dL of glucose is 6.99 mmol/L: found by either unit
    ("Observation?value-quantity=7|http://unitsofmeasure.org|mmol/L", {"glucose-mass", "glucose-molar"}),
    ("Observation?value-quantity=126|http://unitsofmeasure.org|mg/dL", {"glucose-mass", "glucose-molar"}),
    ("Observation?value-quantity=gt10|http://unitsofmeasure.org|mmol/L", {"glucose-high"}),  # 200 mg/dL = 11.1
    ("Observation?value-quantity=gt1.5|http://unitsofmeasure.org|g/L", {"glucose-high"}),
    ("Observation?value-quantity=70|http://unitsofmeasure.org|kg", {"weight-lb", "weight-kg"}),  # 154 lb = 69.85
    ("Observation?value-quantity=lt100000|http://unitsofmeasure.org|g", {"weight-lb", "weight-kg"}),
    ("Observation?value-quantity=37|http://unitsofmeasure.org|Cel", {"temp-f"}),
    ("Observation?value-quantity=gt100|http://unitsofmeasure.org|[degF]", {"temp-c"}),  # 38.5 C = 101.3 F
    ("Observation?value-quantity=154||[lb_av]", {"weight-lb", "weight-kg"}),
    ("Observation?value-quantity=126", {"glucose-mass"}),  # without a unit, numbers compare as sent
    ("Observation?value-quantity=70", {"weight-kg"}),
])
async def test_quantities_compare_across_units(client: httpx.AsyncClient, readings: dict[str, str], query: str,
                                               expected: set[str]) -> None:
    assert await found(client, query) == {readings[n] for n in expected}


async def test_sorting_by_quantity_uses_the_values_as_sent(client: httpx.AsyncClient,
                                                          readings: dict[str, str]) -> None:
    # descending sorts by each resource's largest value: the converted copies (69853 g, 70000 g) would put
    # 70 kg first; the values as sent put 154 lb first
    response = await client.get("/fhir/Observation", params={"code": "29463-7", "_sort": "-value-quantity"})
    order = [e["resource"]["valueQuantity"]["value"] for e in response.json()["entry"]]
    assert order == [154, 70]
