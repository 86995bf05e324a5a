"""Two instances on one SQLite file (two apps, each with its own store object, as two processes would be): what one
writes, the other finds and extends. The search-parameter and code-system ids one assigns are learnt by the other,
instead of its search missing the entries or its write colliding with the id (a 500).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for
from tests.factories import patient
from tests.server.test_custom_search_parameters import TIER_PARAMETER, tiered

pytestmark = pytest.mark.anyio


def basic(code: str) -> dict[str, object]:
    """A Basic resource (a type the seeded store has no entries of) with a code of a new system."""
    return {"resourceType": "Basic", "code": {"coding": [{"system": "http://example.org/scaleout", "code": code}]}}


@pytest.fixture
async def pair(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with client_for(settings) as a, client_for(settings) as b:
        yield a, b


async def test_entries_written_by_one_instance_are_found_by_the_other(
        pair: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    a, b = pair
    made = await a.post("/fhir/Basic", content=body(basic("one")), headers=FHIR_JSON)
    assert made.status_code == 201
    found = (await b.get("/fhir/Basic", params={"code": "http://example.org/scaleout|one"})).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [made.json()["id"]]
    # b writes its first entries of the same parameter and system: the ids a assigned are reused
    again = await b.post("/fhir/Basic", content=body(basic("two")), headers=FHIR_JSON)
    assert again.status_code == 201, again.text
    both = (await a.get("/fhir/Basic", params={"code": "http://example.org/scaleout|one,http://example.org/scaleout|two"})
            ).json()
    assert len(both["entry"]) == 2


async def test_concurrent_first_writes_of_a_parameter_on_two_instances(
        pair: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    a, b = pair
    answers = await asyncio.gather(*(c.post("/fhir/Basic", content=body(basic(f"c{n}")), headers=FHIR_JSON)
                                     for n, c in enumerate([a, b] * 5)))
    assert [r.status_code for r in answers] == [201] * 10
    for c in (a, b):
        found = (await c.get("/fhir/Basic", params={"_count": "50", "_total": "accurate"})).json()
        assert found["total"] == 10


async def test_a_search_parameter_made_at_one_instance_is_served_by_the_other(
        pair: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    a, b = pair
    strict = {"Prefer": "handling=strict"}
    assert (await b.get("/fhir/Patient", params={"tier": "A"}, headers=strict)).status_code == 400
    made = await a.post("/fhir/SearchParameter", content=body(TIER_PARAMETER), headers=FHIR_JSON)
    assert made.status_code == 201, made.text
    gold = await a.post("/fhir/Patient", content=body(tiered("A", "Gold")), headers=FHIR_JSON)
    await a.post("/fhir/Patient", content=body(patient(family="Untiered")), headers=FHIR_JSON)
    deadline = asyncio.get_running_loop().time() + 10
    while (found := await b.get("/fhir/Patient", params={"tier": "A"}, headers=strict)).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, found.text  # B learns it from the feed
        await asyncio.sleep(0.1)
    assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [gold.json()["id"]]
