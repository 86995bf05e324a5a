"""One record per patient: creating a Patient whose identifier already belongs to one is refused or merged.

DOMAIN.md §5; https://hl7.org/fhir/R4B/http.html#ccreate
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create
from tests.factories import patient

pytestmark = pytest.mark.anyio

NATIONAL = "urn:oid:2.16.156.10011.1.1"  # a person's one national ID number
MRN = "urn:oid:1.2.36.146.595.217.0.1"  # tests.factories' MRN system: not configured, so not unique here


def _with_id(value: str, system: str = NATIONAL, **extra: Any) -> dict[str, Any]:
    return patient(identifier=[{"system": system, "value": value}], **extra)


async def _count(client: httpx.AsyncClient, value: str) -> int:
    found = await client.get("/fhir/Patient", params={"identifier": f"{NATIONAL}|{value}", "_total": "accurate"})
    return int(found.json()["total"])


def _transaction(*resources: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-0000-0000-00000000000{i}", "resource": r,
         "request": {"method": "POST", "url": r["resourceType"]}} for i, r in enumerate(resources)]}


async def test_refuse_mode_answers_409_naming_the_existing_record(settings: Settings) -> None:
    unique = settings.model_copy(update={"patient_unique_identifier_systems": [NATIONAL]})
    async with client_for(unique) as client:
        first = await create(client, _with_id("110101199001011234"))
        again = await client.post("/fhir/Patient", content=body(_with_id("110101199001011234", given="Other")),
                                  headers=FHIR_JSON)
        assert again.status_code == 409
        issues = again.json()["issue"]
        assert issues[0]["code"] == "duplicate" and issues[0]["expression"] == ["Patient.identifier"]
        assert f"Patient/{first['id']}" in issues[0]["diagnostics"]
        assert {"severity": "information", "code": "duplicate", "diagnostics": f"Patient/{first['id']}"} in issues
        assert await _count(client, "110101199001011234") == 1
        # another value, or the same value in a system not configured as unique, is a new patient
        await create(client, _with_id("110101199001015678"))
        await create(client, _with_id("110101199001011234", system=MRN))
        # transactions are atomic: the duplicate refuses the whole bundle, the Observation is not written either
        bundle = _transaction(_with_id("110101199001011234"), {
            "resourceType": "Observation", "status": "final", "code": {"text": "weight"},
            "subject": {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}})
        refused = await client.post("/fhir", content=body(bundle), headers=FHIR_JSON)
        assert refused.status_code == 409 and "Bundle.entry[0]" in refused.json()["issue"][0]["diagnostics"]
        assert (await client.get("/fhir/Observation", params={"code:text": "weight"})).json().get("entry") is None
        # in a batch only that entry fails
        batch = (await client.post("/fhir", content=body(_transaction(
            _with_id("110101199001011234"), _with_id("110101199001019999"), kind="batch")),
            headers=FHIR_JSON)).json()
        assert [e["response"]["status"][:3] for e in batch["entry"]] == ["409", "201"]
        # one bundle creating the same person twice
        twice = await client.post("/fhir", content=body(_transaction(_with_id("220"), _with_id("220"))),
                                  headers=FHIR_JSON)
        assert twice.status_code == 409 and "Bundle.entry[0]" in twice.json()["issue"][0]["diagnostics"]
        assert await _count(client, "220") == 0


async def test_merge_mode_answers_the_existing_record_as_a_conditional_create(settings: Settings) -> None:
    merging = settings.model_copy(update={"patient_unique_identifier_systems": [NATIONAL],
                                          "patient_duplicate_mode": "merge"})
    async with client_for(merging) as client:
        first = await create(client, _with_id("330"))
        again = await client.post("/fhir/Patient", content=body(_with_id("330", given="Changed")),
                                  headers=FHIR_JSON)
        assert again.status_code == 200 and again.json()["id"] == first["id"]
        assert again.json()["name"] == first["name"] and again.json()["meta"]["versionId"] == "1"
        bundle = (await client.post("/fhir", content=body(_transaction(_with_id("330"), _with_id("440"))),
                                    headers=FHIR_JSON)).json()
        assert [e["response"]["status"][:3] for e in bundle["entry"]] == ["200", "201"]
        assert bundle["entry"][0]["response"]["location"].startswith(f"Patient/{first['id']}/")
        assert await _count(client, "330") == 1


async def test_without_configured_systems_duplicates_are_allowed_as_before(client: httpx.AsyncClient) -> None:
    await create(client, _with_id("550"))
    await create(client, _with_id("550"))
    assert await _count(client, "550") == 2


def test_an_unknown_mode_stops_the_server(settings: Settings) -> None:
    from server.app import build_services
    with pytest.raises(SystemExit, match="CARELOOP_PATIENT_DUPLICATE_MODE"):
        build_services(settings.model_copy(update={"patient_duplicate_mode": "ignore"}))
