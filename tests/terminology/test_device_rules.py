"""Device data quality: units that fit the code or a 422 naming the accepted ones; interpretation from ranges.

https://hl7.org/fhir/R4B/observationdefinition.html, https://hl7.org/fhir/R4B/observation.html#interpretation
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON, body, changes_since_start, create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio
UCUM = "http://unitsofmeasure.org"


def flag(resource: dict[str, Any]) -> str | None:
    found = resource.get("interpretation")
    return found[0]["coding"][0]["code"] if found else None


def blood_pressure(subject: str, systolic: float, diastolic: float, unit: str = "mm[Hg]") -> dict[str, Any]:
    def component(code: str, value: float) -> dict[str, Any]:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": subject},
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "effectiveDateTime": "2024-03-01T08:00:00Z",
            "component": [component("8480-6", systolic), component("8462-4", diastolic)]}


@pytest.fixture
async def subject(client: httpx.AsyncClient) -> str:
    return f"Patient/{(await create(client, patient()))['id']}"


@pytest.mark.parametrize(("code", "value", "unit", "expected"), [
    ("15074-8", 11.0, "mmol/L", "H"),  # the glucose of 11 mmol/L that starts the out-of-range pathway
    ("15074-8", 5.0, "mmol/L", "N"),
    ("15074-8", 2.5, "mmol/L", "LL"),
    ("15074-8", 18.0, "mmol/L", "HH"),
    ("2339-0", 200, "mg/dL", "H"),  # 11.1 mmol/L through the molar mass of glucose
    ("2339-0", 90, "mg/dL", "N"),  # 5.0 mmol/L
    ("2339-0", 45, "mg/dL", "LL"),  # 2.5 mmol/L
    ("8310-5", 98.6, "[degF]", "N"),  # 37.0 C
    ("8310-5", 101.3, "[degF]", "H"),  # 38.5 C
    ("8310-5", 34.0, "Cel", "LL"),
    ("8867-4", 72, "/min", "N"),
    ("8867-4", 135, "/min", "HH"),
    ("59408-5", 93, "%", "L"),
    ("59408-5", 85, "%", "LL"),
    ("72514-3", 7, "{score}", "H"),  # the pain score of 7
    ("72514-3", 2, "{score}", "N"),
    ("39156-5", 31.2, "kg/m2", "H"),
])
async def test_interpretation_is_filled_from_reference_ranges(client: httpx.AsyncClient, subject: str, code: str,
                                                              value: float, unit: str, expected: str) -> None:
    stored = await create(client, observation(subject, code=code, value=value, unit=unit))
    assert flag(stored) == expected
    read = (await client.get(f"/fhir/Observation/{stored['id']}")).json()
    assert flag(read) == expected


async def test_no_interpretation_without_a_reference_range_and_the_senders_is_kept(client: httpx.AsyncClient,
                                                                                 subject: str) -> None:
    weight = await create(client, observation(subject, code="29463-7", value=70, unit="kg"))
    assert "interpretation" not in weight
    given = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                         "code": "A"}]}
    sent = await create(client, observation(subject, code="15074-8", value=11.0, unit="mmol/L",
                                            interpretation=[given]))
    assert sent["interpretation"] == [given]
    other = await create(client, observation(subject, code="12345-6", value=3, unit="kg"))  # not a checked code
    assert "interpretation" not in other


async def test_blood_pressure_components_are_checked_and_flagged(client: httpx.AsyncClient, subject: str) -> None:
    high = await create(client, blood_pressure(subject, 150, 85))
    assert [flag(c) for c in high["component"]] == ["H", "N"]
    assert flag(high) == "H"
    critical = await create(client, blood_pressure(subject, 190, 125))
    assert flag(critical) == "HH"
    normal = await create(client, blood_pressure(subject, 118, 76))
    assert flag(normal) == "N"


@pytest.mark.parametrize(("make", "where", "accepted"), [
    (lambda s: observation(s, code="15074-8", value=126, unit="mg/dL") | {
        "valueQuantity": {"value": 126, "unit": "mg/dL", "code": "mg/dl", "system": UCUM}},
     "Observation.valueQuantity", "mmol/L, mg/dL"),
    (lambda s: observation(s, code="8480-6", value=120, unit="mmHg"), "Observation.valueQuantity", "mm[Hg]"),
    (lambda s: observation(s, code="29463-7", value=154, unit="lbs"), "Observation.valueQuantity", "kg, g, [lb_av]"),
    (lambda s: observation(s, code="8310-5", value=37, unit="Cel") | {
        "valueQuantity": {"value": 37, "unit": "Cel"}}, "Observation.valueQuantity", "Cel, [degF]"),
    (lambda s: observation(s, code="8310-5", value=37, unit="Cel") | {
        "valueQuantity": {"value": 37, "code": "Cel", "system": "http://example.org/units"}},
     "Observation.valueQuantity", "Cel, [degF]"),
    (lambda s: blood_pressure(s, 120, 80, unit="kPa"), "Observation.component[0].valueQuantity", "mm[Hg]"),
])
async def test_readings_in_units_that_do_not_fit_are_refused(client: httpx.AsyncClient, subject: str, make: Any,
                                                             where: str, accepted: str) -> None:
    response = await client.post("/fhir/Observation", content=body(make(subject)), headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "business-rule"
    assert issue["expression"] == [where]
    assert accepted in issue["diagnostics"]
    history = (await client.get("/fhir/Observation/_history", params=changes_since_start())).json()
    assert "entry" not in history


async def test_a_quantity_code_with_a_string_value_is_refused(client: httpx.AsyncClient, subject: str) -> None:
    sent = observation(subject, code="8867-4")
    del sent["valueQuantity"]
    sent["valueString"] = "seventy-two"
    response = await client.post("/fhir/Observation", content=body(sent), headers=FHIR_JSON)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Observation.valueString"]


async def test_a_transaction_with_one_bad_reading_stores_nothing(client: httpx.AsyncClient, subject: str) -> None:
    good = observation(subject, code="8867-4", value=72, unit="/min")
    bad = observation(subject, code="8867-4", value=72, unit="bpm")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": good, "request": {"method": "POST", "url": "Observation"}},
        {"resource": bad, "request": {"method": "POST", "url": "Observation"}}]}
    response = await client.post("/fhir", content=body(bundle), headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    assert "Bundle.entry[1]" in response.text and "/min" in response.text
    assert "entry" not in (await client.get("/fhir/Observation/_history", params=changes_since_start())).json()


async def test_the_ranges_are_data_that_can_be_changed(client: httpx.AsyncClient, subject: str) -> None:
    definition = (await client.get("/fhir/ObservationDefinition/loinc-8867-4")).json()
    assert flag(await create(client, observation(subject, code="8867-4", value=105, unit="/min"))) == "H"
    for interval in definition["qualifiedInterval"]:
        if interval["category"] == "reference":
            interval["range"]["high"]["value"] = 110  # this clinic's athletes
    updated = await client.put("/fhir/ObservationDefinition/loinc-8867-4", content=body(definition),
                               headers=FHIR_JSON)
    assert updated.status_code == 200
    assert flag(await create(client, observation(subject, code="8867-4", value=105, unit="/min"))) == "N"
    definition["extension"].append({"url": "http://careloop.health/fhir/StructureDefinition/permitted-unit",
                                    "valueCoding": {"system": UCUM, "code": "{beats}/s"}})
    await client.put("/fhir/ObservationDefinition/loinc-8867-4", content=body(definition), headers=FHIR_JSON)
    per_second = observation(subject, code="8867-4", value=1.5, unit="{beats}/s")
    assert flag(await create(client, per_second)) == "N"  # 90 /min
    await client.delete("/fhir/ObservationDefinition/loinc-8867-4")
    assert "interpretation" not in await create(client, observation(subject, code="8867-4", value=300, unit="bpm"))
