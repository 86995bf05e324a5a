"""Required bindings: codes outside their required value set are refused with 400 code-invalid, nothing stored.

https://hl7.org/fhir/R4B/terminologies.html#required
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from terminology.bindings import RequiredBindings
from tests.conftest import FHIR_JSON, body, changes_since_start, create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio
OBSERVATION_STATUSES = ("registered", "preliminary", "final", "amended", "corrected", "cancelled",
                        "entered-in-error", "unknown")


def test_the_table_covers_the_specifications_required_bindings() -> None:
    bindings = RequiredBindings()
    assert bindings.value_set_count >= 200
    bindings.check("Observation", observation("Patient/1"))  # valid: no error


@pytest.mark.parametrize("status", OBSERVATION_STATUSES)
async def test_every_code_of_the_value_set_is_accepted(client: httpx.AsyncClient, status: str) -> None:
    stored = await create(client, observation("Patient/1", status=status))
    assert stored["status"] == status


@pytest.mark.parametrize(("resource", "where", "code"), [
    (observation("Patient/1", status="done"), "Observation.status", "done"),
    (patient(gender="robot"), "Patient.gender", "robot"),
    (patient(telecom=[{"system": "phone", "value": "1"}, {"system": "pager2", "value": "2"}]),
     "Patient.telecom[1].system", "pager2"),
    (patient(name=[{"use": "alias", "family": "X"}]), "Patient.name[0].use", "alias"),
    (patient(link=[{"other": {"reference": "Patient/2"}, "type": "merged"}]), "Patient.link[0].type", "merged"),
    (observation("Patient/1") | {"valueQuantity": {"value": 5, "comparator": "~", "code": "mmol/L",
                                                   "system": "http://unitsofmeasure.org"}},
     "Observation.valueQuantity.comparator", "~"),
    (observation("Patient/1") | {"contained": [{"resourceType": "Patient", "id": "p", "gender": "M"}]},
     "Observation.contained[0].gender", "M"),
    (patient(identifier=[{"use": "primary", "value": "1"}]), "Patient.identifier[0].use", "primary"),
])
async def test_codes_outside_required_value_sets_are_refused(client: httpx.AsyncClient, resource: dict[str, Any],
                                                             where: str, code: str) -> None:
    response = await client.post(f"/fhir/{resource['resourceType']}", content=body(resource), headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "code-invalid"
    assert issue["expression"] == [where]
    assert code in issue["diagnostics"]
    history = (await client.get("/fhir/_history", params=changes_since_start())).json()
    assert "entry" not in history


async def test_every_wrong_code_is_reported_at_once(client: httpx.AsyncClient) -> None:
    resource = patient(gender="robot", link=[{"other": {"reference": "Patient/2"}, "type": "merged"}])
    response = await client.post("/fhir/Patient", content=body(resource), headers=FHIR_JSON)
    assert [i["expression"] for i in response.json()["issue"]] == [["Patient.gender"], ["Patient.link[0].type"]]


async def test_updates_patches_and_transactions_are_checked_too(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient(gender="female"))
    put = await client.put(f"/fhir/Patient/{stored['id']}", content=body({**stored, "gender": "F"}),
                           headers=FHIR_JSON)
    assert put.status_code == 400
    patch = await client.patch(f"/fhir/Patient/{stored['id']}", content=body(
        [{"op": "replace", "path": "/gender", "value": "woman"}]),
        headers={"content-type": "application/json-patch+json"})
    assert patch.status_code == 400 and patch.json()["issue"][0]["code"] == "code-invalid"
    assert (await client.get(f"/fhir/Patient/{stored['id']}")).json()["meta"]["versionId"] == "1"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("Patient/1", status="finished"),
         "request": {"method": "POST", "url": "Observation"}}]}
    response = await client.post("/fhir", content=body(bundle), headers=FHIR_JSON)
    assert response.status_code == 400
    assert "Bundle.entry[1]" in response.text and "finished" in response.text
