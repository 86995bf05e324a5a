"""Chained parameters, _has, _include/_revinclude (with :iterate) and _sort.

https://hl7.org/fhir/R4B/search.html#chaining and https://hl7.org/fhir/R4B/search.html#include
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from subscriptions.pathways import PATHWAY_EVENT
from tests.conftest import FHIR_JSON, body, changes_since_start, create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio


@pytest.fixture
async def clinic(client: httpx.AsyncClient) -> dict[str, Any]:
    org = await create(client, {"resourceType": "Organization", "name": "North Clinic"})
    ann = await create(client, patient(family="Smith", given="Ann", mrn="A1",
                                       managingOrganization={"reference": f"Organization/{org['id']}"}))
    bob = await create(client, patient(family="Jones", given="Bob", mrn="B2", birthDate="1980-01-01"))
    cid = await create(client, patient(family="Adams", given="Cid", birthDate="1990-01-01"))
    glucose = await create(client, observation(f"Patient/{ann['id']}", value=6.1, when="2024-01-02T00:00:00Z"))
    high = await create(client, observation(f"Patient/{ann['id']}", value=12.5, when="2024-01-05T00:00:00Z"))
    bp = await create(client, observation(f"Patient/{bob['id']}", code="85354-9", value=130, unit="mm[Hg]",
                                          when="2024-01-03T00:00:00Z"))
    return {"org": org, "ann": ann, "bob": bob, "cid": cid, "glucose": glucose, "high": high, "bp": bp}


async def matches(client: httpx.AsyncClient, query: str) -> list[str]:
    response = await client.get(f"/fhir{query}" if query.startswith("?") else f"/fhir/{query}")
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]


def ids(clinic: dict[str, Any], *names: str) -> set[str]:
    return {clinic[n]["id"] for n in names}


async def test_chain_on_reference(client: httpx.AsyncClient, clinic: dict[str, Any]) -> None:
    assert set(await matches(client, "Observation?subject:Patient.name=smith")) == ids(clinic, "glucose", "high")
    assert set(await matches(client, "Observation?patient.identifier=B2")) == ids(clinic, "bp")
    assert set(await matches(client, "Observation?subject.family=adams")) == set()


async def test_chain_two_levels(client: httpx.AsyncClient, clinic: dict[str, Any]) -> None:
    query = "Observation?patient.organization.name=north"
    assert set(await matches(client, query)) == ids(clinic, "glucose", "high")


async def test_has_reverse_chain(client: httpx.AsyncClient, clinic: dict[str, Any]) -> None:
    assert set(await matches(client, "Patient?_has:Observation:patient:code=2339-0")) == ids(clinic, "ann")
    assert set(await matches(client, "Patient?_has:Observation:subject:value-quantity=gt100")) == ids(clinic, "bob")
    nested = "Organization?_has:Patient:organization:_has:Observation:patient:code=2339-0"
    assert set(await matches(client, nested)) == ids(clinic, "org")


@pytest.mark.parametrize("query", [
    "Observation?status.name=x",  # chain through a token parameter
    "Observation?subject.shoe=1",  # unknown parameter of the target
    "Patient?_has:Observation:code:status=final",  # _has through a non-reference
    "Patient?_has:Observation",  # malformed _has
    "Observation?subject.organization.partof.name.x=1",  # too deep
    "Patient?_sort=shoe", "Patient?_sort=_has",
    "Observation?_include=Observation:status", "Observation?_include=Unicorn:subject",
    "Observation?_include=Patient:organization",
])
async def test_bad_chains_sorts_and_includes(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/fhir/{query}")
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_include_and_revinclude(client: httpx.AsyncClient, clinic: dict[str, Any]) -> None:
    bundle = (await client.get("/fhir/Observation", params={"code": "2339-0",
                                                           "_include": "Observation:patient"})).json()
    modes = {(e["resource"]["resourceType"], e["resource"]["id"]): e["search"]["mode"] for e in bundle["entry"]}
    assert modes == {("Observation", clinic["glucose"]["id"]): "match", ("Observation", clinic["high"]["id"]): "match",
                     ("Patient", clinic["ann"]["id"]): "include"}
    rev = (await client.get("/fhir/Patient", params={"_id": clinic["ann"]["id"],
                                                    "_revinclude": "Observation:patient"})).json()
    included = {e["resource"]["id"] for e in rev["entry"] if e["search"]["mode"] == "include"}
    assert included == ids(clinic, "glucose", "high")


async def test_include_iterate_and_wildcard(client: httpx.AsyncClient, clinic: dict[str, Any]) -> None:
    bundle = (await client.get("/fhir/Observation", params=[
        ("_id", clinic["glucose"]["id"]), ("_include", "Observation:subject"),
        ("_include:iterate", "Patient:organization")])).json()
    kinds = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert kinds == ["Observation", "Organization", "Patient"]
    star = (await client.get("/fhir/Observation", params={"_id": clinic["bp"]["id"],
                                                         "_include": "Observation:*"})).json()
    assert {e["resource"]["id"] for e in star["entry"]} == ids(clinic, "bp", "bob")


async def test_sort(client: httpx.AsyncClient, clinic: dict[str, Any]) -> None:
    by_family = await matches(client, "Patient?_sort=family")
    assert by_family == [clinic[n]["id"] for n in ("cid", "bob", "ann")]
    newest_first = await matches(client, "Observation?_sort=-date")
    assert newest_first == [clinic[n]["id"] for n in ("high", "bp", "glucose")]
    missing_last = await matches(client, "Patient?_sort=birthdate")
    assert missing_last == [clinic[n]["id"] for n in ("bob", "cid", "ann")]
    two_keys = await matches(client, "Observation?_sort=code,-value-quantity")
    assert two_keys == [clinic[n]["id"] for n in ("high", "glucose", "bp")]


async def test_sorted_paging_has_no_gaps(client: httpx.AsyncClient) -> None:
    for n in range(11):
        await client.post("/fhir/Patient", content=body(patient(family=f"Sorted{10 - n:02d}")), headers=FHIR_JSON)
    seen: list[str] = []
    url: str | None = "/fhir/Patient?family=sorted&_sort=family&_count=4"
    while url:
        page = (await client.get(url)).json()
        seen.extend(e["resource"]["name"][0]["family"] for e in page.get("entry", []))
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert seen == [f"Sorted{n:02d}" for n in range(11)]


async def test_composite_pairs_code_and_value_of_the_same_component(client: httpx.AsyncClient) -> None:
    def component(code: str, value: float) -> dict[str, Any]:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}

    high = await create(client, {"resourceType": "Observation", "status": "final",
                                 "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                                 "component": [component("8480-6", 150), component("8462-4", 85)]})
    normal = await create(client, {"resourceType": "Observation", "status": "final",
                                   "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                                   "component": [component("8480-6", 118), component("8462-4", 142)]})
    query = "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140"
    assert await matches(client, query) == [high["id"]]
    assert set(await matches(client, "Observation?component-code-value-quantity=8462-4$gt140")) == {normal["id"]}
    assert await matches(client, "Observation?combo-code-value-quantity=8480-6$150||mm[Hg]") == [high["id"]]
    bad = await client.get("/fhir/Observation", params={"component-code-value-quantity": "8480-6"})
    assert bad.status_code == 400


async def test_system_search(client: httpx.AsyncClient, clinic: dict[str, Any]) -> None:
    tagged = await create(client, patient(meta={"tag": [{"system": "urn:careloop", "code": "vip"}]}))
    tagged_obs = await create(client, observation(f"Patient/{tagged['id']}",
                                                  meta={"tag": [{"system": "urn:careloop", "code": "vip"}]}))
    assert set(await matches(client, "?_tag=urn:careloop|vip")) == {tagged["id"], tagged_obs["id"]}
    assert set(await matches(client, "?_tag=vip&_type=Patient")) == {tagged["id"]}
    since = (await client.get("/fhir", params={"_count": "100", "_lastUpdated": f"ge{changes_since_start()['_since']}"})
             ).json()
    written = [e["resource"] for e in since["entry"]]
    # what this test wrote, plus the follow-up Tasks the shipped pathways made from it (each with its Provenance)
    assert len([r for r in written if r["resourceType"] not in ("Task", "Provenance")]) == 9
    assert all(r["identifier"][0]["system"] == PATHWAY_EVENT for r in written if r["resourceType"] == "Task")
    assert all(r["agent"][0]["who"]["identifier"]["value"] == "careloop-pathway-engine"
               for r in written if r["resourceType"] == "Provenance")
    assert set(await matches(client, f"?_id={clinic['org']['id']}")) == {clinic["org"]["id"]}
    both = await matches(client, "?_type=Patient,Observation&_count=100")
    assert len(both) == 8
    response = await client.get("/fhir", params={"_type": "Unicorn"})
    assert response.status_code == 400
    response = await client.get("/fhir", params={"family": "smith"})
    assert "Unknown search parameter" in response.text
