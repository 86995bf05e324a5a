"""The last day of the calendar is a date like any other: stored, indexed and searchable, never a 500.

https://hl7.org/fhir/R4B/search.html#date
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import create
from tests.factories import patient

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("birth", ["9999", "9999-12", "9999-12-31"])
async def test_the_last_day_of_the_calendar_is_stored_and_found(client: httpx.AsyncClient, birth: str) -> None:
    made = await create(client, patient(family="Edge", birthDate=birth))
    for query in (f"birthdate={birth}", "birthdate=ge9999-12-31", "birthdate=gt9999-06", "birthdate=sa9000"):
        found = await client.get(f"/fhir/Patient?{query}")
        assert found.status_code == 200, (query, found.text)
        assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [made["id"]], query


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999-14:00",
                                    "9999-12-31T23:59-05:00", "0001-01-01T00:00:00+14:00"])
async def test_instants_at_the_calendar_edges_search_without_error(client: httpx.AsyncClient, moment: str) -> None:
    for prefix in ("", "lt", "ge", "ap", "eb"):
        found = await client.get("/fhir/Observation", params={"date": prefix + moment})
        assert found.status_code == 200, (prefix, moment, found.text)
