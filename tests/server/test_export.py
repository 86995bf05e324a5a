"""Bulk Data $export: kick-off, polling, manifest, files that need the kick-off's token, cancellation, expiry.

Runs against the SMART world (real signed JWTs, a backend-services client with private_key_jwt).
https://hl7.org/fhir/uv/bulkdata/STU2/export.html
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from bench.generate import population
from operations.export_request import parse_export
from operations.parameters import OperationInput
from resources.errors import FhirError
from resources.models import resource_types
from resources.search.dates import date_range, format_instant
from resources.search.registry import default_registry
from tests.auth.conftest import World, open_world

pytestmark = pytest.mark.anyio
ASYNC = {"Prefer": "respond-async"}
TOKEN_URL = "http://localhost:8080/auth/token"


@pytest.fixture
async def bulk_world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, seeded_database, bulk_folder=str(tmp_path / "bulk")) as found:
        yield found


async def backend_services_token(world: World, scope: str, allowed: str = "system/*.rs") -> str:
    """A SMART backend-services token: an asymmetric client authenticating with a signed assertion."""
    key = RSAKey.generate_key(2048, auto_kid=True)
    record, _ = world.auth.add_client("bulk client", "confidential-asymmetric", allowed, [],
                                      jwks={"keys": [key.as_dict(private=False)]})
    now = int(time.time())
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"},
                           {"iss": record.client_id, "sub": record.client_id, "aud": TOKEN_URL, "exp": now + 240,
                            "jti": str(uuid.uuid4())}, key, algorithms=["RS384"])
    response = await world.client.post("/auth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def finished(world: World, headers: dict[str, str], status_url: str) -> httpx.Response:
    """Poll the status URL until the job is no longer running (checking the running answer's headers)."""
    deadline = time.monotonic() + 600  # a 10k-resource job on a busy shared machine takes minutes
    while time.monotonic() < deadline:
        response = await world.client.get(status_url, headers=headers)
        if response.status_code != 202:
            return response
        assert response.headers["retry-after"].isdigit() and "x-progress" in response.headers
        await asyncio.sleep(0.02)
    raise AssertionError("the job did not finish")


async def run_export(world: World, headers: dict[str, str], path: str = "/fhir/$export",
                     **params: Any) -> dict[str, Any]:
    kick = await world.client.get(path, params=params, headers={**headers, **ASYNC})
    assert kick.status_code == 202, kick.text
    done = await finished(world, headers, kick.headers["content-location"])
    assert done.status_code == 200, done.text
    manifest: dict[str, Any] = done.json()
    return manifest


async def files(world: World, headers: dict[str, str], manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        response = await world.client.get(item["url"], headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in response.content.splitlines()]
        assert len(lines) == item["count"]
        out[item["type"]] = lines
    return out


async def searched(world: World, headers: dict[str, str], resource_type: str, **params: str) -> list[Any]:
    found, url = [], f"/fhir/{resource_type}"
    query: dict[str, str] | None = {"_count": "1000", **params}
    while url:
        page = (await world.client.get(url, params=query, headers=headers)).json()
        found += [e["resource"] for e in page.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), "")
        query = None
    return found


def _by_id(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {r["id"]: r for r in resources}


async def test_system_export_equals_the_searches_type_by_type(bulk_world: World) -> None:
    world = bulk_world
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    manifest = await run_export(world, bearer)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/fhir/$export") and manifest["transactionTime"]
    exported = await files(world, bearer, manifest)
    assert {"Patient", "Practitioner", "Encounter", "Observation", "Condition"} <= set(exported)
    for resource_type, lines in exported.items():
        assert _by_id(lines) == _by_id(await searched(world, bearer, resource_type)), resource_type


@pytest.mark.parametrize("resources", [500, pytest.param(10_000, marks=pytest.mark.slow)])
async def test_export_of_a_generated_population_equals_the_searches(bulk_world: World, resources: int) -> None:
    world = bulk_world
    for bundle in population(resources):
        loaded = await world.client.post("/fhir", json=bundle, headers=world.admin)
        assert loaded.status_code == 200, loaded.text
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    exported = await files(world, bearer, await run_export(world, bearer, "/fhir/Patient/$export"))
    assert sum(len(lines) for lines in exported.values()) >= resources
    for resource_type, lines in exported.items():
        assert _by_id(lines) == _by_id(await searched(world, bearer, resource_type)), resource_type


async def test_type_since_and_type_filter(bulk_world: World) -> None:
    world = bulk_world
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    manifest = await run_export(world, bearer, _type="Observation,Patient",
                                _typeFilter="Observation?category=laboratory")
    exported = await files(world, bearer, manifest)
    assert sorted(exported) == ["Observation", "Patient"]
    assert [o["id"] for o in exported["Observation"]] == [world.ids["alice_lab"]]
    assert len(exported["Patient"]) == len(await searched(world, bearer, "Patient"))
    # two filters of one type are OR-ed
    manifest = await run_export(world, bearer, _type="Observation", _typeFilter=[
        "Observation?category=laboratory", f"Observation?subject=Patient/{world.ids['bob']}"])
    assert sorted(o["id"] for o in (await files(world, bearer, manifest))["Observation"]) == sorted(
        [world.ids["alice_lab"], world.ids["bob_vital"]])
    # nothing changed after the far future (and the last day of year 9999 is a valid instant)
    for since in ("2999-01-01T00:00:00Z", "9999-12-31"):
        assert (await run_export(world, bearer, _since=since))["output"] == []
    patient = (await world.client.get(f"/fhir/Patient/{world.ids['bob']}", headers=world.admin)).json()
    updated = await world.client.put(f"/fhir/Patient/{world.ids['bob']}", headers=world.admin,
                                     json={**patient, "gender": "male"})
    assert updated.status_code == 200
    changed = date_range(updated.json()["meta"]["lastUpdated"])
    assert changed is not None
    before = format_instant(changed[0] - 1)
    manifest = await run_export(world, bearer, _since=before)
    assert [(o["type"], o["count"]) for o in manifest["output"]] == [("Patient", 1)]


async def test_patient_and_group_level(bulk_world: World) -> None:
    world = bulk_world
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    exported = await files(world, bearer, await run_export(world, bearer, "/fhir/Patient/$export"))
    assert "Practitioner" not in exported and {"Patient", "Encounter", "Observation", "Condition"} <= set(exported)
    group = await world.client.post("/fhir/Group", headers=world.admin, json={
        "resourceType": "Group", "type": "person", "actual": True,
        "member": [{"entity": {"reference": f"Patient/{world.ids['alice']}"}}]})
    assert group.status_code == 201
    exported = await files(world, bearer, await run_export(world, bearer, f"/fhir/Group/{group.json()['id']}/$export"))
    assert [p["id"] for p in exported["Patient"]] == [world.ids["alice"]]
    assert sorted(o["id"] for o in exported["Observation"]) == sorted([world.ids["alice_vital"],
                                                                       world.ids["alice_lab"]])
    assert "Condition" not in exported  # bob's only
    missing = await world.client.get("/fhir/Group/nope/$export", headers={**bearer, **ASYNC})
    assert missing.status_code == 404


@pytest.mark.parametrize(("params", "status", "named"), [
    ({"_elements": "id"}, 400, "_elements"),
    ({"patient": "Patient/x"}, 400, "patient"),
    ({"includeAssociatedData": "LatestProvenanceResources"}, 400, "includeAssociatedData"),
    ({"_outputFormat": "text/csv"}, 400, "_outputFormat"),
    ({"_type": "Nonsense"}, 400, "_type"),
    ({"_since": "yesterday"}, 400, "_since"),
    ({"_typeFilter": "Observation?nonsense=1"}, 400, "_typeFilter"),
    ({"_bogus": "1"}, 400, "_bogus"),
])
async def test_bad_kick_offs_are_refused_naming_the_parameter(bulk_world: World, params: dict[str, str],
                                                                status: int, named: str) -> None:
    bearer = bulk_world.bearer(await backend_services_token(bulk_world, "system/*.rs"))
    response = await bulk_world.client.get("/fhir/$export", params=params, headers={**bearer, **ASYNC})
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome" and named in response.text


async def test_kick_off_needs_prefer_respond_async_and_accepts_the_ndjson_formats(bulk_world: World) -> None:
    world = bulk_world
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    response = await world.client.get("/fhir/$export", headers=bearer)
    assert response.status_code == 400 and "respond-async" in response.text
    for fmt in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        assert (await run_export(world, bearer, _outputFormat=fmt, _type="Patient"))["output"][0]["count"] >= 2
    posted = await world.client.post("/fhir/$export", headers={**bearer, **ASYNC},
                                     json={"resourceType": "Parameters", "parameter": [
                                         {"name": "_type", "valueString": "Condition"}]})
    assert posted.status_code == 202
    done = await finished(world, bearer, posted.headers["content-location"])
    assert [o["type"] for o in done.json()["output"]] == ["Condition"]


async def test_patient_and_user_tokens_are_refused(bulk_world: World) -> None:
    world = bulk_world
    client_id, _ = world.app_client("patient/*.rs user/*.rs openid fhirUser launch/patient")
    alice = await world.authorize(client_id, "patient/*.rs launch/patient openid fhirUser", "alice")
    doctor = await world.authorize(client_id, "user/*.rs openid fhirUser", "drsmith")
    for token in (alice["access_token"], doctor["access_token"]):
        for path in ("/fhir/$export", "/fhir/Patient/$export"):
            response = await world.client.get(path, headers={**world.bearer(token), **ASYNC})
            assert response.status_code == 403, response.text
    assert (await world.client.get("/fhir/$export", headers=ASYNC)).status_code == 401


async def test_export_runs_under_the_callers_scopes(bulk_world: World) -> None:
    world = bulk_world
    labs = world.bearer(await backend_services_token(world, "system/Observation.rs?category=laboratory",
                                                     "system/Observation.rs?category=laboratory"))
    exported = await files(world, labs, await run_export(world, labs))
    assert list(exported) == ["Observation"] and [o["id"] for o in exported["Observation"]] == [world.ids["alice_lab"]]
    refused = await world.client.get("/fhir/$export", params={"_type": "Patient"}, headers={**labs, **ASYNC})
    assert refused.status_code == 403


async def test_files_need_the_kick_off_clients_token(bulk_world: World) -> None:
    world = bulk_world
    owner = world.bearer(await backend_services_token(world, "system/*.rs"))
    other = world.bearer(await backend_services_token(world, "system/*.rs"))
    kick = await world.client.get("/fhir/$export", params={"_type": "Patient"}, headers={**owner, **ASYNC})
    status_url = kick.headers["content-location"]
    manifest = (await finished(world, owner, status_url)).json()
    url = manifest["output"][0]["url"]
    assert (await world.client.get(url)).status_code == 401
    for answer in (await world.client.get(url, headers=other), await world.client.get(status_url, headers=other)):
        assert answer.status_code == 404  # another client's job answers like no job at all
    assert (await world.client.delete(status_url, headers=other)).status_code == 404
    assert (await world.client.get(url, headers={**owner, "Accept": "application/fhir+ndjson"})).status_code == 200


async def test_cancel_removes_the_job_and_its_files(bulk_world: World, tmp_path: Path) -> None:
    world = bulk_world
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    kick = await world.client.get("/fhir/$export", headers={**bearer, **ASYNC})
    status_url = kick.headers["content-location"]
    manifest = (await finished(world, bearer, status_url)).json()
    job_id = status_url.rsplit("/", 1)[1]
    assert (tmp_path / "bulk" / job_id).is_dir()
    deleted = await world.client.delete(status_url, headers=bearer)
    assert deleted.status_code == 202
    assert (await world.client.get(status_url, headers=bearer)).status_code == 404
    assert (await world.client.get(manifest["output"][0]["url"], headers=bearer)).status_code == 404
    assert not (tmp_path / "bulk" / job_id).exists()
    # a running job stops at once
    kick = await world.client.get("/fhir/$export", headers={**bearer, **ASYNC})
    assert (await world.client.delete(kick.headers["content-location"], headers=bearer)).status_code == 202
    assert (await world.client.get(kick.headers["content-location"], headers=bearer)).status_code == 404


async def test_finished_jobs_expire_with_their_files(bulk_world: World, tmp_path: Path) -> None:
    world = bulk_world
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    kick = await world.client.get("/fhir/$export", params={"_type": "Patient"}, headers={**bearer, **ASYNC})
    status_url = kick.headers["content-location"]
    done = await finished(world, bearer, status_url)
    assert done.status_code == 200 and "expires" in done.headers
    jobs = world.app.state.services.bulk
    assert await jobs.sweep() == 0  # not yet
    now = time.time()
    jobs.clock = lambda: now + 3601  # one hour (the default expiry) later
    assert await jobs.sweep() == 1
    assert (await world.client.get(status_url, headers=bearer)).status_code == 404
    assert not (tmp_path / "bulk" / status_url.rsplit("/", 1)[1]).exists()


@pytest.mark.parametrize(("pairs", "error"), [
    ([("_type", "Observation"), ("_type", "Patient")], None),
    ([("_outputFormat", "application/fhir+ndjson")], None),
    ([("_outputFormat", "application/fhir+json")], "not-supported"),
    ([("_elements", "id")], "not-supported"),
    ([("_since", "2024-13-01")], "value"),
    ([("_typeFilter", "Patient?gender=female")], "value"),  # Patient is not among the _type asked
    ([("_typeFilter", "Observation?_sort=date")], "value"),
])
def test_kick_off_parameters(pairs: list[tuple[str, str]], error: str | None) -> None:
    registry = default_registry(resource_types())
    given = OperationInput.from_query([*pairs, *([("_type", "Observation")] if "_typeFilter" in dict(pairs) else [])])
    try:
        found = parse_export(given, sorted(resource_types()), registry)
    except FhirError as exc:
        assert exc.issues[0].code == error
        return
    assert error is None and found.types


@pytest.mark.parametrize(("text", "low"), [("9999-12-31", 253402214400000), ("9999-12-31T23:59:59Z", 253402300799000),
                                           ("9999", 253370764800000)])
def test_dates_at_the_end_of_time_do_not_overflow(text: str, low: int) -> None:
    found = date_range(text)
    assert found is not None and found[0] == low and found[1] >= found[0]


async def test_export_leaves_out_what_a_patients_consent_denies(bulk_world: World) -> None:
    world = bulk_world
    bob = world.ids["bob"]
    opt_out = await world.client.post("/fhir/Consent", headers=world.admin, json={
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{bob}"}, "dateTime": "2026-02-01",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"type": "deny", "period": {"start": "2026-02-01"}}})
    assert opt_out.status_code == 201, opt_out.text
    bearer = world.bearer(await backend_services_token(world, "system/*.rs"))
    exported = await files(world, bearer, await run_export(world, bearer, _type="Observation,Condition,Patient"))
    ids = {r["id"] for lines in exported.values() for r in lines}
    assert world.ids["bob_vital"] not in ids and world.ids["bob_condition"] not in ids
    assert world.ids["alice_vital"] in ids
    for resource_type, lines in exported.items():
        assert _by_id(lines) == _by_id(await searched(world, bearer, resource_type)), resource_type
