"""Search on the parameters the foundation needs (identifiers above all) and the shared semantics.

https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON, body, create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio
MRN = "urn:oid:1.2.36.146.595.217.0.1"


async def ids(client: httpx.AsyncClient, query: str) -> set[str]:
    response = await client.get(f"/fhir/{query}")
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


@pytest.fixture
async def people(client: httpx.AsyncClient) -> dict[str, Any]:
    made = {
        "ann": await create(client, patient(family="Smith", given="Ann", mrn="A1", gender="female",
                                            birthDate="1970-04-01", active=True)),
        "bob": await create(client, patient(family="Smyth", given="Bob", mrn="B2", gender="male",
                                            birthDate="1985-11-30")),
        "zoe": await create(client, patient(family="Zoë-Müller", given="Zoe", gender="female",
                                            birthDate="2001", telecom=[{"system": "email", "value": "z@x.org"}])),
    }
    ann = made["ann"]["id"]
    made["glucose"] = await create(client, observation(f"Patient/{ann}", value=6.3, when="2024-03-01T08:00:00Z"))
    made["high"] = await create(client, observation(f"Patient/{ann}", value=11.2, when="2024-03-02T08:00:00+02:00"))
    made["bp"] = await create(client, observation(f"Patient/{made['bob']['id']}", code="85354-9", value=120,
                                                  unit="mm[Hg]", when="2023-12-31"))
    return made


def pick(people: dict[str, Any], *names: str) -> set[str]:
    return {people[n]["id"] for n in names}


CASES = [
    ("Patient?identifier=A1", ("ann",)),
    (f"Patient?identifier={MRN}|A1", ("ann",)),
    ("Patient?identifier=urn:other|A1", ()),
    (f"Patient?identifier={MRN}|", ("ann", "bob")),
    ("Patient?identifier=|A1", ()),
    ("Patient?identifier=A1,B2", ("ann", "bob")),
    ("Patient?identifier:not=A1", ("bob", "zoe")),
    ("Patient?gender=female", ("ann", "zoe")),
    ("Patient?gender=female&identifier=A1", ("ann",)),
    ("Patient?active=true", ("ann",)),
    ("Patient?family=smi", ("ann",)),
    ("Patient?family=SM", ("ann", "bob")),
    ("Patient?family:exact=Smith", ("ann",)),
    ("Patient?family:exact=smith", ()),
    ("Patient?family:contains=yt", ("bob",)),
    ("Patient?family=zoe-muller", ("zoe",)),
    ("Patient?name=bob", ("bob",)),
    ("Patient?email=z@x.org", ("zoe",)),
    ("Patient?birthdate=1970-04-01", ("ann",)),
    ("Patient?birthdate=1970", ("ann",)),
    ("Patient?birthdate=ge1985-11-30", ("bob", "zoe")),
    ("Patient?birthdate=gt1985-11-30", ("zoe",)),
    ("Patient?birthdate=lt1985", ("ann",)),
    ("Patient?birthdate=le1985-11-30", ("ann", "bob")),
    ("Patient?birthdate=ne1970-04-01", ("bob", "zoe")),
    ("Patient?birthdate=sa2000", ("zoe",)),
    ("Patient?birthdate=eb1971", ("ann",)),
    ("Patient?birthdate=2001-06-01", ()),
    ("Patient?birthdate=ge2001-06-01", ("zoe",)),
    ("Patient?birthdate:missing=true", ()),
    ("Patient?active:missing=true", ("bob", "zoe")),
    ("Observation?code=2339-0", ("glucose", "high")),
    ("Observation?code=http://loinc.org|85354-9", ("bp",)),
    ("Observation?value-quantity=gt10", ("high", "bp")),
    ("Observation?value-quantity=6.3", ("glucose",)),
    ("Observation?value-quantity=6", ("glucose",)),
    ("Observation?value-quantity=6.30", ("glucose",)),
    ("Observation?value-quantity=6.31", ()),
    ("Observation?value-quantity=lt100|http://unitsofmeasure.org|mmol/L", ("glucose", "high")),
    ("Observation?date=2024-03-01", ("glucose",)),
    ("Observation?date=2024-03-02T06:00:00Z", ("high",)),
    ("Observation?date=ge2024-01-01", ("glucose", "high")),
    ("Observation?date=2023", ("bp",)),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_search_case(client: httpx.AsyncClient, people: dict[str, Any], query: str,
                           expected: tuple[str, ...]) -> None:
    assert await ids(client, query) == pick(people, *expected)


async def test_reference_forms(client: httpx.AsyncClient, people: dict[str, Any]) -> None:
    ann = people["ann"]["id"]
    expected = pick(people, "glucose", "high")
    assert await ids(client, f"Observation?subject=Patient/{ann}") == expected
    assert await ids(client, f"Observation?patient={ann}") == expected
    assert await ids(client, f"Observation?subject:Patient={ann}") == expected
    assert await ids(client, f"Observation?patient=http://testserver/fhir/Patient/{ann}") == expected
    assert await ids(client, "Observation?subject=Patient/nobody") == set()


async def test_id_and_last_updated(client: httpx.AsyncClient, people: dict[str, Any]) -> None:
    ann, bob = people["ann"]["id"], people["bob"]["id"]
    assert await ids(client, f"Patient?_id={ann},{bob}") == {ann, bob}
    stamp = people["bob"]["meta"]["lastUpdated"]
    assert await ids(client, f"Patient?_lastUpdated=ge{stamp}") == pick(people, "bob", "zoe")
    assert await ids(client, "Patient?_lastUpdated=lt2000-01-01") == set()


async def test_paging_has_no_gaps_or_duplicates(client: httpx.AsyncClient) -> None:
    for n in range(23):
        await create(client, patient(family=f"Page{n:02d}"))
    seen: list[str] = []
    url: str | None = "/fhir/Patient?family=page&_count=5"
    pages = 0
    while url:
        bundle = (await client.get(url)).json()
        seen.extend(e["resource"]["id"] for e in bundle.get("entry", []))
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith("http://testserver/fhir/Patient?")
        url = links.get("next")
        pages += 1
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23


async def test_total_and_summary_count(client: httpx.AsyncClient, people: dict[str, Any]) -> None:
    default = (await client.get("/fhir/Patient")).json()
    assert "total" not in default
    accurate = (await client.get("/fhir/Patient", params={"_total": "accurate", "_count": "1"})).json()
    assert accurate["total"] == 3
    assert len(accurate["entry"]) == 1
    count = (await client.get("/fhir/Patient", params={"_summary": "count"})).json()
    assert count["total"] == 3
    assert "entry" not in count


async def test_elements_in_search(client: httpx.AsyncClient, people: dict[str, Any]) -> None:
    bundle = (await client.get("/fhir/Patient", params={"_elements": "gender", "identifier": "A1"})).json()
    assert set(bundle["entry"][0]["resource"]) == {"resourceType", "id", "meta", "gender"}


async def test_post_search(client: httpx.AsyncClient, people: dict[str, Any]) -> None:
    response = await client.post("/fhir/Patient/_search", content=b"identifier=A1",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert {e["resource"]["id"] for e in response.json()["entry"]} == pick(people, "ann")


async def test_unknown_parameter_is_reported_or_refused(client: httpx.AsyncClient, people: dict[str, Any]) -> None:
    lenient = (await client.get("/fhir/Patient", params={"shoe-size": "42"})).json()
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "shoe-size" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert len([e for e in lenient["entry"] if e["search"]["mode"] == "match"]) == 3
    strict = await client.get("/fhir/Patient", params={"shoe-size": "42"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


BAD = [
    "Patient?birthdate=2023-02-30", "Patient?birthdate=yesterday", "Patient?birthdate=xx2020",
    "Observation?value-quantity=abc", "Observation?value-quantity=gt", "Patient?_count=-1", "Patient?_count=many",
    "Patient?family:fuzzy=x", "Patient?gender:exact=male", "Patient?active:missing=perhaps",
    "Patient?_total=some", "Patient?_summary=perhaps", "Patient?_cursor=abc",
    "Observation?subject=Patient/a/b/c",
]


@pytest.mark.parametrize("query", BAD)
async def test_bad_search_is_400_naming_the_parameter(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/fhir/{query}")
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    name = query.split("?")[1].split("=")[0].split(":")[0]
    assert name in response.text


async def test_huge_count_is_capped(client: httpx.AsyncClient, people: dict[str, Any]) -> None:
    response = await client.get("/fhir/Patient", params={"_count": "99999999"})
    assert response.status_code == 200


async def test_too_many_or_values_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Patient", params={"identifier": ",".join(str(n) for n in range(500))})
    assert response.status_code == 400
    assert "Too many values" in response.text


async def test_search_reflects_updates_and_deletes(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient(mrn="U1"))
    await client.put(f"/fhir/Patient/{stored['id']}", headers=FHIR_JSON,
                     content=body({**patient(mrn="U2"), "id": stored["id"]}))
    assert await ids(client, "Patient?identifier=U1") == set()
    assert await ids(client, "Patient?identifier=U2") == {stored["id"]}
    await client.delete(f"/fhir/Patient/{stored['id']}")
    assert await ids(client, "Patient?identifier=U2") == set()


async def test_identifier_of_type_and_meta_parameters(client: httpx.AsyncClient) -> None:
    mr = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
    stored = await create(client, patient(
        identifier=[{"type": mr, "system": "urn:hospital", "value": "777"}],
        meta={"profile": ["http://careloop.example/StructureDefinition/clinic-patient"],
              "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
              "source": "urn:device:cuff-9"}))
    await create(client, patient(identifier=[{"system": "urn:hospital", "value": "777"}]))
    of_type = "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|777"
    assert await ids(client, of_type) == {stored["id"]}
    assert await ids(client, "Patient?_profile=http://careloop.example/StructureDefinition/clinic-patient") == {
        stored["id"]}
    assert await ids(client, "Patient?_security=R") == {stored["id"]}
    assert await ids(client, "Patient?_source=urn:device:cuff-9") == {stored["id"]}
    bad = await client.get("/fhir/Patient", params={"identifier:of-type": "MR|777"})
    assert bad.status_code == 400
