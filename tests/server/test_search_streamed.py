"""Searches driven by one typed reference are read from its index in row-id order, a page at a time.

A search such as `Observation?patient=X&code=Y&date=ge...` reads the patient's entries of the reference index in
row-id order and tests the other parameters on each entry before its resource row is read (compile._driver).
A client must see exactly what the specification asks: every match once, pages complete and in order, deleted
resources gone, and parameters that need the resource row itself (`_lastUpdated`, `_has`) still applied.
https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio
LOINC = "http://loinc.org"


async def walk(client: httpx.AsyncClient, query: str, count: int = 3) -> list[str]:
    """The ids of every page of a search, following `next` links."""
    seen: list[str] = []
    url: str | None = f"/fhir/{query}&_count={count}"
    while url:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        seen.extend(e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match")
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return seen


async def _clinic(client: httpx.AsyncClient) -> dict[str, Any]:
    """Ann with twelve glucose readings (one deleted) and three heart rates; Bob with glucose readings too."""
    ann = (await create(client, patient("Alpha", "Ann")))["id"]
    bob = (await create(client, patient("Beta", "Bob")))["id"]
    doctor = (await create(client, {"resourceType": "Practitioner", "name": [{"family": "Who"}]}))["id"]
    glucose, rates, made = [], [], []  # made: Ann's, in creation order
    for n in range(12):
        extra: dict[str, Any] = {}
        if n % 3 == 0:  # the same performer twice, relative and absolute: two index entries, one match
            extra["performer"] = [{"reference": f"Practitioner/{doctor}"},
                                  {"reference": f"http://other.example/fhir/Practitioner/{doctor}"}]
        glucose.append((await create(client, observation(f"Patient/{ann}", value=5.0 + n,
                                                          when=f"{2014 + n}-03-01T08:00:00Z", **extra)))["id"])
        made.append(glucose[-1])
        if n % 4 == 0:
            rates.append((await create(client, observation(f"Patient/{ann}", code="8867-4", value=70,
                                                           unit="/min")))["id"])
            made.append(rates[-1])
        await create(client, observation(f"Patient/{bob}", value=9.0))
    assert (await client.delete(f"/fhir/Observation/{glucose[4]}")).status_code == 200
    return {"ann": ann, "bob": bob, "doctor": doctor, "glucose": [g for g in glucose if g != glucose[4]],
            "deleted": glucose[4], "rates": rates, "all": [m for m in made if m != glucose[4]]}


async def test_pages_driven_by_a_reference_are_complete_and_in_order(client: httpx.AsyncClient) -> None:
    clinic = await _clinic(client)
    ann, glucose, rates = clinic["ann"], clinic["glucose"], clinic["rates"]
    in_order = clinic["all"]
    # row-id order is creation order: pages of three are complete, without repeats, in order
    assert await walk(client, f"Observation?patient={ann}") == in_order
    assert await walk(client, f"Observation?patient={ann}", 100) == in_order
    assert await walk(client, f"Observation?patient={ann}&code=2339-0") == glucose
    assert await walk(client, f"Observation?subject=Patient/{ann}&code={LOINC}|2339-0") == glucose
    assert await walk(client, f"Observation?patient={ann}&code=8867-4,2339-0") == in_order
    assert await walk(client, f"Observation?patient={ann}&code:not=2339-0") == rates
    assert await walk(client, f"Observation?patient={ann}&code=urn:other|2339-0") == []
    # from 2020 on: the readings of n >= 6 (n = 4 was deleted)
    assert await walk(client, f"Observation?patient={ann}&code=2339-0&date=ge2020-01-01") == glucose[5:]
    assert await walk(client, f"Observation?patient={ann}&code=2339-0&value-quantity=lt8") == glucose[:3]


async def test_a_reference_held_twice_answers_once(client: httpx.AsyncClient) -> None:
    clinic = await _clinic(client)
    by_doctor = [g for n, g in enumerate([*clinic["glucose"][:4], clinic["deleted"], *clinic["glucose"][4:]])
                 if n % 3 == 0 and g != clinic["deleted"]]
    assert await walk(client, f"Observation?performer=Practitioner/{clinic['doctor']}", 2) == by_doctor
    counted = (await client.get("/fhir/Observation", params={"performer": f"Practitioner/{clinic['doctor']}",
                                                             "_total": "accurate"})).json()
    assert counted["total"] == len(by_doctor)


async def test_parameters_on_the_resource_row_still_apply(client: httpx.AsyncClient) -> None:
    clinic = await _clinic(client)
    ann = clinic["ann"]
    assert await walk(client, f"Observation?patient={ann}&code=2339-0&_lastUpdated=ge2000-01-01") == clinic["glucose"]
    assert await walk(client, f"Observation?patient={ann}&code=2339-0&_lastUpdated=lt2000-01-01") == []
    organization = (await create(client, {"resourceType": "Organization", "name": "Clinic"}))["id"]
    members = [(await create(client, patient("Gamma", f"G{n}", managingOrganization={
        "reference": f"Organization/{organization}"})))["id"] for n in range(4)]
    await create(client, observation(f"Patient/{members[1]}"))
    await create(client, observation(f"Patient/{members[3]}", code="8867-4", value=70, unit="/min"))
    has = f"Patient?organization=Organization/{organization}&_has:Observation:patient:code=2339-0"
    assert await walk(client, has, 1) == [members[1]]
    assert await walk(client, f"Patient?organization=Organization/{organization}", 1) == members
