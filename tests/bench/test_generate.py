"""The benchmark's clinic population: deterministic, and valid FHIR that the server stores whole.

A benchmark that loads data the server refuses would measure error answers, so every generated resource
type goes through the real write path here.
https://hl7.org/fhir/R4B/http.html#transaction
"""

from __future__ import annotations

from collections import Counter

import httpx
import orjson
import pytest

from bench.generate import population
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio


def test_the_same_seed_gives_the_same_bundles() -> None:
    assert [orjson.dumps(b) for b in population(300)] == [orjson.dumps(b) for b in population(300)]
    assert orjson.dumps(next(population(100, seed=1))) != orjson.dumps(next(population(100, seed=2)))


def test_a_tier_has_the_clinic_record_shape() -> None:
    kinds = Counter(e["resource"]["resourceType"] for b in population(10_000) for e in b["entry"])
    assert sum(kinds.values()) == 10_000
    assert kinds["Patient"] == kinds["Consent"] == 100
    for kind in ("Encounter", "Appointment", "Communication", "Invoice", "ChargeItem", "Condition"):
        assert kinds[kind] > 50, kind
    assert kinds["Observation"] > 5_000


async def test_every_generated_resource_is_accepted(client: httpx.AsyncClient) -> None:
    for bundle in population(400):
        response = await client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON)
        assert response.status_code == 200, response.text
        statuses = Counter(e["response"]["status"] for e in response.json()["entry"])
        assert statuses == {"201 Created": 100}
    # references were resolved to the stored ids: each patient's record is in its compartment
    patient = (await client.get("/fhir/Patient", params={"_count": "1"})).json()["entry"][0]["resource"]
    record = (await client.get(f"/fhir/Patient/{patient['id']}/$everything", params={"_count": "200"})).json()
    types = {e["resource"]["resourceType"] for e in record["entry"]}
    assert {"Patient", "Consent", "Encounter", "Observation"} <= types
