"""fhirpy, unmodified, against a live server (issue 33 items 8-10): count(), patch(), sort(), include() and
history, as a Python application would use them.

https://github.com/beda-software/fhir-py
"""

from __future__ import annotations

import uuid

import pytest
from fhirpy import AsyncFHIRClient

from tests.clients.conftest import Live

pytestmark = pytest.mark.anyio


def _client(live: Live) -> AsyncFHIRClient:
    return AsyncFHIRClient(live.base, authorization=f"Bearer {live.token}")


async def _patients(client: AsyncFHIRClient, family: str) -> list[str]:
    ids = []
    for born in ("1990-01-01", "1970-01-01", "1980-01-01"):
        patient = client.resource("Patient", name=[{"family": family}], birthDate=born)
        await patient.save()
        ids.append(patient.id)
    return ids


async def test_count(live: Live) -> None:
    client = _client(live)
    family = f"Count{uuid.uuid4().hex[:8]}"
    await _patients(client, family)
    assert await client.resources("Patient").search(family=family).count() == 3


async def test_patch_sends_a_partial_resource(live: Live) -> None:
    client = _client(live)
    patient = client.resource("Patient", name=[{"family": "Patchy"}], gender="female", active=True)
    await patient.save()
    patched = await patient.patch(gender="male", active=False)
    assert patched["gender"] == "male" and patched["active"] is False
    stored = await client.reference("Patient", patient.id).to_resource()
    assert stored["gender"] == "male" and stored["name"] == [{"family": "Patchy"}]
    assert stored["meta"]["versionId"] == "2"


async def test_sort_both_ways(live: Live) -> None:
    client = _client(live)
    family = f"Sort{uuid.uuid4().hex[:8]}"
    await _patients(client, family)
    up = await client.resources("Patient").search(family=family).sort("birthdate").fetch()
    down = await client.resources("Patient").search(family=family).sort("-birthdate").fetch()
    assert [p["birthDate"] for p in up] == ["1970-01-01", "1980-01-01", "1990-01-01"]
    assert [p["birthDate"] for p in down] == ["1990-01-01", "1980-01-01", "1970-01-01"]


async def test_include(live: Live) -> None:
    client = _client(live)
    patient = client.resource("Patient", name=[{"family": "Included"}])
    await patient.save()
    encounter = client.resource("Encounter", status="finished", subject=patient.to_reference(),
                                **{"class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                             "code": "AMB"}})
    await encounter.save()
    bundle = await client.resources("Encounter").search(_id=encounter.id).include("Encounter", "subject") \
        .fetch_raw()
    found = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]}
    assert found == {("Encounter", "match"), ("Patient", "include")}


async def test_history(live: Live) -> None:
    client = _client(live)
    patient = client.resource("Patient", name=[{"family": "Historic"}])
    await patient.save()
    patient["active"] = True
    await patient.save()
    history = await client.execute(f"Patient/{patient.id}/_history", method="get")
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
