"""Groups as cohorts: named members, a stored search, characteristics; used by Group/[id]/$export and group_members.

https://hl7.org/fhir/R4B/group.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from operations.groups import GROUP_SEARCH, PATIENT_PARAMETER, group_members
from tests.auth.conftest import World, open_world
from tests.server.test_export import ASYNC, backend_services_token, files, run_export

pytestmark = pytest.mark.anyio


@pytest.fixture
async def world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, seeded_database, bulk_folder=str(tmp_path / "bulk")) as found:
        for index, gender in enumerate(("female", "female", "male")):
            created = await found.client.post("/fhir/Patient", headers=found.admin, json={
                "resourceType": "Patient", "gender": gender, "active": index != 1,
                "address": [{"city": "Hangzhou" if index else "Beijing"}]})
            found.ids[f"p{index}"] = created.json()["id"]
        yield found


async def _group(world: World, **fields: Any) -> str:
    response = await world.client.post("/fhir/Group", headers=world.admin,
                                       json={"resourceType": "Group", "type": "person", **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _trait(code: str, **value: Any) -> dict[str, Any]:
    return {"code": {"coding": [{"system": PATIENT_PARAMETER, "code": code}]}, "exclude": False, **value}


async def _members(world: World, group_id: str) -> list[str]:
    return await group_members(world.app.state.services.repository, group_id)


async def test_named_members(world: World) -> None:
    ids = world.ids
    group = await _group(world, actual=True, member=[
        {"entity": {"reference": f"Patient/{ids['p0']}"}},
        {"entity": {"reference": f"Patient/{ids['p1']}"}, "inactive": True},
        {"entity": {"reference": f"Practitioner/{ids['practitioner']}"}},
        {"entity": {"reference": "Patient/not-there"}},
        {"entity": {"reference": f"Patient/{ids['alice']}"}}])
    assert await _members(world, group) == [ids["p0"], ids["alice"]]


async def test_a_stored_search_and_characteristics(world: World) -> None:
    ids = world.ids
    by_search = await _group(world, actual=False, extension=[
        {"url": GROUP_SEARCH, "valueString": "Patient?gender=female&address-city=Hangzhou"}])
    assert await _members(world, by_search) == [ids["p1"]]
    by_traits = await _group(world, actual=False, characteristic=[
        _trait("gender", valueCodeableConcept={"coding": [{"code": "female"}]}),
        _trait("active", valueBoolean=True)])
    assert await _members(world, by_traits) == [ids["p0"]]
    excluded = await _group(world, actual=False, characteristic=[
        {**_trait("gender", valueCodeableConcept={"coding": [{"code": "female"}]}), "exclude": True}])
    assert ids["p2"] in await _members(world, excluded)
    assert not {ids["p0"], ids["p1"]} & set(await _members(world, excluded))


@pytest.mark.parametrize("definition", [
    {"characteristic": [{"code": {"text": "age"}, "valueQuantity": {"value": 60}, "exclude": False}]},
    {"characteristic": [_trait("birthdate", valueQuantity={"value": 60})]},
    {"characteristic": [{**_trait("active", valueBoolean=True), "exclude": True}]},
    {"characteristic": [_trait("nonsense", valueBoolean=True)]},
    {"extension": [{"url": GROUP_SEARCH, "valueString": "Observation?code=1234"}]},
    {},
])
async def test_unsupported_definitions_are_refused_with_422(world: World, definition: dict[str, Any]) -> None:
    group = await _group(world, actual=False, **definition)
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    response = await world.client.get(f"/fhir/Group/{group}/$export", headers={**bearer, **ASYNC})
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["code"] == "not-supported"


async def test_group_export_of_a_described_cohort(world: World) -> None:
    ids = world.ids
    obs = await world.client.post("/fhir/Observation", headers=world.admin, json={
        "resourceType": "Observation", "status": "final", "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{ids['p1']}"}})
    assert obs.status_code == 201
    group = await _group(world, actual=False, extension=[{"url": GROUP_SEARCH, "valueString": "Patient?gender=female"}])
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    exported = await files(world, bearer, await run_export(world, bearer, f"/fhir/Group/{group}/$export"))
    assert sorted(p["id"] for p in exported["Patient"]) == sorted([ids["p0"], ids["p1"]])
    assert [o["id"] for o in exported["Observation"]] == [obs.json()["id"]]


async def test_a_caller_who_may_not_read_groups_is_refused(world: World) -> None:
    group = await _group(world, actual=False, extension=[{"url": GROUP_SEARCH, "valueString": "Patient?gender=female"}])
    bearer = world.bearer(await backend_services_token(world, "system/Observation.rs", "system/Observation.rs"))
    response = await world.client.get(f"/fhir/Group/{group}/$export", headers={**bearer, **ASYNC})
    assert response.status_code == 403  # no scope reads Groups: refused before any data is read (SECURITY.md 1.6)
