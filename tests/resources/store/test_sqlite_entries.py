"""A search's entries (type/id and body, for a searchset) are exactly its page's resources, in the same order.

`Patient/$everything` reads its record through `Store.entries`, which reads two columns instead of a search
page's six; this checks both paths against each other on a generated clinic population in a real file.
https://hl7.org/fhir/R4B/patient-operation-everything.html
"""

from __future__ import annotations

import httpx
import orjson
import pytest

from bench.generate import population
from resources.models import resource_types
from resources.search.parse import SearchLimits, parse_search
from resources.search.query import SYSTEM, Filter, ReferenceValue, SearchQuery
from resources.search.registry import default_registry
from resources.store.sqlite.store import SqliteStore
from server.settings import Settings
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio


async def test_entries_are_the_search_pages_resources(client: httpx.AsyncClient, settings: Settings) -> None:
    for bundle in population(600):
        assert (await client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON)).status_code == 200
    patients = [e["resource"]["id"] for e in
                (await client.get("/fhir/Patient", params={"_count": "4", "_elements": "id"})).json()["entry"]]
    registry = default_registry(resource_types())
    queries = []
    for patient in patients:
        compartment = Filter("_compartment", "compartment", None, (ReferenceValue("Patient", patient),))
        queries.append(SearchQuery(SYSTEM, (compartment,), count=10_001, types=("Encounter", "Observation")))
        queries.append(SearchQuery(SYSTEM, (compartment,), count=7))
        queries.append(parse_search("Observation", [("patient", patient), ("code", "2339-0,8867-4")], registry,
                                    SearchLimits()).query)
    queries.append(parse_search("Patient", [("_sort", "-birthdate"), ("_count", "9")], registry).query)
    store = SqliteStore(settings.sqlite_path)
    await store.open()
    try:
        seen = 0
        for query in queries:
            page = await store.search(query)
            entries = await store.entries(query)
            assert entries == [(f"{r.type}/{r.id}".encode(), r.body) for r in page.resources]
            seen += len(entries)
        assert seen > 100  # the population has records to compare
    finally:
        await store.close()
