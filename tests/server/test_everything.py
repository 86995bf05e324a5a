"""Patient/$everything: the patient's compartment as one searchset, with _type and _since.

https://hl7.org/fhir/R4B/patient-operation-everything.html
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio


async def test_everything_returns_the_compartment(client: httpx.AsyncClient) -> None:
    ann = await create(client, patient(family="Ann"))
    other = await create(client, patient(family="Other"))
    mine = [await create(client, observation(f"Patient/{ann['id']}", value=v)) for v in (5.0, 6.0)]
    encounter = await create(client, {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                                      "subject": {"reference": f"Patient/{ann['id']}"}})
    await create(client, observation(f"Patient/{other['id']}"))
    await create(client, {"resourceType": "Practitioner", "name": [{"family": "Outside"}]})
    response = await client.get(f"/fhir/Patient/{ann['id']}/$everything")
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["type"] == "searchset" and bundle["total"] == 4
    assert {e["resource"]["id"] for e in bundle["entry"]} == {ann["id"], encounter["id"], *(o["id"] for o in mine)}
    only = await client.get(f"/fhir/Patient/{ann['id']}/$everything", params={"_type": "Observation"})
    assert {e["resource"]["resourceType"] for e in only.json()["entry"]} == {"Observation"}
    later = await client.get(f"/fhir/Patient/{ann['id']}/$everything", params={"_since": "2999-01-01"})
    assert later.json()["total"] == 1  # the patient itself is always there


async def test_everything_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/fhir/Patient/no-such-patient/$everything")
    assert missing.status_code == 404
    ann = await create(client, patient())
    bad = await client.get(f"/fhir/Patient/{ann['id']}/$everything", params={"_since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["_since"]
    type_level = await client.get("/fhir/Patient/$everything")
    assert type_level.status_code == 404
    statement = (await client.get("/fhir/metadata")).json()
    patient_ops = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")["operation"]
    assert {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"} \
        in patient_ops


async def test_everything_follows_deletes_and_every_compartment_type(client: httpx.AsyncClient) -> None:
    ann = await create(client, patient(family="Ann"))
    subject = {"reference": f"Patient/{ann['id']}"}
    kept = [
        await create(client, {"resourceType": "Invoice", "status": "issued", "subject": subject}),
        await create(client, {"resourceType": "Communication", "status": "completed", "subject": subject}),
        await create(client, {"resourceType": "Appointment", "status": "booked", "participant": [
            {"actor": subject, "status": "accepted"}]}),
    ]
    gone = await create(client, {"resourceType": "Condition", "subject": subject,
                                 "code": {"text": "later withdrawn"}})
    assert (await client.delete(f"/fhir/Condition/{gone['id']}")).status_code == 200
    bundle = (await client.get(f"/fhir/Patient/{ann['id']}/$everything")).json()
    assert {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]} == {
        ("Patient", ann["id"]), *((r["resourceType"], r["id"]) for r in kept)}
    # a resource that moves into the compartment by an update is found; one that moves out is not
    moved = {**kept[0], "subject": {"reference": "Patient/someone-else"}}
    assert (await client.put(f"/fhir/Invoice/{moved['id']}", json=moved)).status_code == 200
    again = (await client.get(f"/fhir/Patient/{ann['id']}/$everything")).json()
    assert kept[0]["id"] not in {e["resource"]["id"] for e in again["entry"]}
    assert again["total"] == 3


async def test_everything_lists_the_patient_once_and_not_the_patients_linked_to_them(
        client: httpx.AsyncClient) -> None:
    # a Patient that links to Ann is in Ann's compartment (CompartmentDefinition: Patient.link), but the record
    # is Ann's: the only Patient in it is Ann herself, whichever way the store narrows the types
    ann = await create(client, patient(family="Ann"))
    await create(client, {**patient(family="Linked"), "link": [
        {"other": {"reference": f"Patient/{ann['id']}"}, "type": "seealso"}]})
    note = await create(client, observation(f"Patient/{ann['id']}"))
    whole = (await client.get(f"/fhir/Patient/{ann['id']}/$everything")).json()
    assert [(e["resource"]["resourceType"], e["resource"]["id"]) for e in whole["entry"]] == [
        ("Patient", ann["id"]), ("Observation", note["id"])]
    assert whole["total"] == 2
    typed = (await client.get(f"/fhir/Patient/{ann['id']}/$everything",
                              params={"_type": "Patient,Observation"})).json()
    assert [e["resource"]["id"] for e in typed["entry"]] == [ann["id"], note["id"]]
