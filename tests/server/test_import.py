"""Bulk $import: NDJSON uploaded or fetched (allow-listed, SSRF rules), loaded with full validation, errors per line.

https://github.com/smart-on-fhir/bulk-import/blob/master/import.md
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn

from bench.generate import population
from operations.import_ndjson import IMPORT_TAG, LINE
from tests.auth.conftest import World, open_world
from tests.server.test_export import ASYNC, backend_services_token, files, finished, run_export

pytestmark = pytest.mark.anyio
NDJSON = {"content-type": "application/fhir+ndjson"}
GENERATED = ("Patient", "Consent", "Condition", "Encounter", "Appointment", "Communication", "Invoice", "ChargeItem",
             "Observation")


@contextlib.asynccontextmanager
async def worlds(tmp_path: Path, seeded_database: Path, **settings: Any) -> AsyncIterator[tuple[World, World]]:
    (tmp_path / "a").mkdir(parents=True)
    (tmp_path / "b").mkdir(parents=True)
    async with open_world(tmp_path / "a", seeded_database, bulk_folder=str(tmp_path / "a" / "bulk")) as one, \
            open_world(tmp_path / "b", seeded_database, bulk_folder=str(tmp_path / "b" / "bulk"), **settings) as two:
        yield one, two


@contextlib.asynccontextmanager
async def world_at(tmp_path: Path, seeded_database: Path, **settings: Any) -> AsyncIterator[World]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    async with open_world(tmp_path, seeded_database, bulk_folder=str(tmp_path / "bulk"), **settings) as found:
        yield found


async def import_upload(world: World, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    kick = await world.client.post("/fhir/$import", content=body, headers={**headers, **ASYNC, **NDJSON})
    assert kick.status_code == 202, kick.text
    done = await finished(world, headers, kick.headers["content-location"])
    assert done.status_code == 200, done.text
    manifest: dict[str, Any] = done.json()
    return manifest


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated", "tag")}
    return {**{k: v for k, v in resource.items() if k != "meta"}, **({"meta": meta} if meta else {})}


@pytest.mark.parametrize("resources", [300, pytest.param(10_000, marks=pytest.mark.slow)])
async def test_import_of_an_export_reproduces_the_population(tmp_path: Path, seeded_database: Path,
                                                             resources: int) -> None:
    async with worlds(tmp_path, seeded_database) as (source, target):
        for bundle in population(resources, per_patient=60 if resources < 1000 else 100):
            loaded = await source.client.post("/fhir", json=bundle, headers=source.admin)
            assert loaded.status_code == 200, loaded.text
        reader = source.bearer(await backend_services_token(source, "system/*.rs"))
        exported = await files(source, reader, await run_export(source, reader, _type=",".join(GENERATED)))
        assert sum(len(v) for v in exported.values()) >= resources
        body = b"".join(orjson.dumps(r) + b"\n" for t in GENERATED for r in exported.get(t, []))
        target_reader = target.bearer(await backend_services_token(target, "system/*.rs"))
        before = {t: len(v) for t, v in (await files(target, target_reader, await run_export(
            target, target_reader, _type=",".join(GENERATED)))).items()}
        manifest = await import_upload(target, target.admin, body)
        assert manifest["error"] == []
        assert {o["type"]: o["count"] for o in manifest["output"]} == {t: len(v) for t, v in exported.items()}
        after = await files(target, target_reader, await run_export(target, target_reader, _type=",".join(GENERATED)))
        for resource_type, lines in exported.items():
            assert len(after[resource_type]) == before.get(resource_type, 0) + len(lines)
            stored = {r["id"]: r for r in after[resource_type]}
            for resource in lines:
                copy = stored[resource["id"]]
                assert _content(copy) == _content(resource)
                assert {"system": IMPORT_TAG["system"], "code": IMPORT_TAG["code"]} in copy["meta"]["tag"]


async def test_bad_lines_land_in_the_error_file_and_the_rest_loads(tmp_path: Path, seeded_database: Path) -> None:
    async with world_at(tmp_path, seeded_database) as world:
        alice = world.ids["alice"]
        lines = [
            orjson.dumps({"resourceType": "Patient", "id": "imported-1", "name": [{"family": "One"}]}),
            b'{"resourceType": "Patient", "id": ',
            orjson.dumps({"resourceType": "Observation", "status": "bogus", "code": {"text": "x"},
                          "subject": {"reference": f"Patient/{alice}"}}),
            orjson.dumps({"resourceType": "Nonsense"}),
            b"",
            orjson.dumps({"resourceType": "Condition", "subject": {"reference": f"Patient/{alice}"},
                          "code": {"text": "imported"}}),
        ]
        manifest = await import_upload(world, world.admin, b"\n".join(lines) + b"\n")
        assert {o["type"]: o["count"] for o in manifest["output"]} == {"Patient": 1, "Condition": 1}
        assert [(e["type"], e["count"]) for e in manifest["error"]] == [("OperationOutcome", 3)]
        errors = await world.client.get(manifest["error"][0]["url"], headers=world.admin)
        assert errors.status_code == 200
        outcomes = [orjson.loads(line) for line in errors.content.splitlines()]
        numbers = [next(e["valueInteger"] for e in o["extension"] if e["url"] == LINE) for o in outcomes]
        assert numbers == [2, 3, 4]
        assert all(o["resourceType"] == "OperationOutcome" and o["issue"][0]["severity"] == "error"
                   for o in outcomes)
        assert "status" in orjson.dumps(outcomes[1]).decode()  # the Observation's bad element is named
        assert (await world.client.get(manifest["error"][0]["url"])).status_code == 401
        stored = (await world.client.get("/fhir/Patient/imported-1", headers=world.admin)).json()
        assert IMPORT_TAG in [{"system": t["system"], "code": t["code"]} for t in stored["meta"]["tag"]]
        found = (await world.client.get("/fhir/Condition", params={"code:text": "imported"},
                                        headers=world.admin)).json()
        assert len(found["entry"]) == 1


async def test_kick_off_rules(tmp_path: Path, seeded_database: Path) -> None:
    async with world_at(tmp_path, seeded_database) as world:
        body = orjson.dumps({"resourceType": "Patient", "id": "x1"})
        response = await world.client.post("/fhir/$import", content=body, headers={**world.admin, **NDJSON})
        assert response.status_code == 400 and "respond-async" in response.text
        response = await world.client.post("/fhir/$import", content=body, headers={
            **world.admin, **ASYNC, "content-type": "text/csv"})
        assert response.status_code == 415
        client_id, _ = world.app_client("patient/*.cruds launch/patient openid fhirUser")
        alice = await world.authorize(client_id, "patient/*.cruds launch/patient openid fhirUser", "alice")
        response = await world.client.post("/fhir/$import", content=body, headers={
            **world.bearer(alice["access_token"]), **ASYNC, **NDJSON})
        assert response.status_code == 403
        # a backend client without write scopes loads nothing: each line is refused by the write path
        reader = world.bearer(await backend_services_token(world, "system/*.rs"))
        manifest = await import_upload(world, reader, body + b"\n")
        assert manifest["output"] == [] and manifest["error"][0]["count"] == 1


def _parameters(*urls: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
        *({"name": "input", "part": [{"name": "type", "valueCode": "Patient"}, {"name": "url", "valueUrl": u}]}
          for u in urls)]}


@contextlib.asynccontextmanager
async def file_server(files: dict[str, bytes]) -> AsyncIterator[int]:
    """A real HTTP server on a free loopback port answering GET /<name> with the file's bytes."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        found = files.get(scope["path"].lstrip("/"))
        await send({"type": "http.response.start", "status": 200 if found is not None else 404,
                    "headers": [(b"content-type", b"application/fhir+ndjson")]})
        await send({"type": "http.response.body", "body": found or b""})

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def test_inputs_are_fetched_only_from_allowed_locations(tmp_path: Path, seeded_database: Path) -> None:
    content = {"patients.ndjson": orjson.dumps({"resourceType": "Patient", "id": "fetched-1"}) + b"\n"}
    async with file_server(content) as port:
        base = f"http://127.0.0.1:{port}/"
        # listed, but loopback is no place an import may reach unless the operator allows the network
        async with world_at(tmp_path / "one", seeded_database, bulk_import_sources=[base]) as world:
            refused = await world.client.post("/fhir/$import", json=_parameters(base + "patients.ndjson"),
                                              headers={**world.admin, **ASYNC})
            assert refused.status_code == 422 and "private, loopback" in refused.text
        async with world_at(tmp_path / "two", seeded_database, bulk_import_sources=[base],
                            subscription_allowed_networks=["127.0.0.0/8"]) as world:
            elsewhere = await world.client.post("/fhir/$import", json=_parameters("http://127.0.0.2/x.ndjson"),
                                                headers={**world.admin, **ASYNC})
            assert elsewhere.status_code == 422 and "allowed import location" in elsewhere.text
            kick = await world.client.post("/fhir/$import", json=_parameters(base + "patients.ndjson"),
                                           headers={**world.admin, **ASYNC})
            assert kick.status_code == 202, kick.text
            done = await finished(world, world.admin, kick.headers["content-location"])
            assert done.status_code == 200 and done.json()["output"] == [{"type": "Patient", "count": 1}]
            assert (await world.client.get("/fhir/Patient/fetched-1", headers=world.admin)).status_code == 200
            missing = await world.client.post("/fhir/$import", json=_parameters(base + "absent.ndjson"),
                                              headers={**world.admin, **ASYNC})
            failed = await finished(world, world.admin, missing.headers["content-location"])
            assert failed.status_code == 422 and "404" in failed.text


async def test_the_capability_statement_names_the_bulk_operations_and_import_resolves(
        tmp_path: Path, seeded_database: Path) -> None:
    async with world_at(tmp_path, seeded_database) as world:
        capability = (await world.client.get("/fhir/metadata")).json()["rest"][0]
        system = {op["name"]: op["definition"] for op in capability["operation"]}
        assert system["export"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
        by_type = {(r["type"], op["name"]): op["definition"] for r in capability["resource"]
                   for op in r.get("operation", [])}
        assert by_type[("Patient", "export")].endswith("/patient-export")
        assert by_type[("Group", "export")].endswith("/group-export")
        found = (await world.client.get("/fhir/OperationDefinition", params={"url": system["import"]},
                                        headers=world.admin)).json()
        assert [e["resource"]["code"] for e in found["entry"]] == ["import"]
