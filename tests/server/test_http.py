"""HTTP details: negotiation, Prefer, _pretty, _summary, _elements, base URLs, methods.

https://hl7.org/fhir/R4B/http.html#general
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create, issue_code
from tests.factories import patient

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("accept", ["application/fhir+json", "application/json", "*/*",
                                    "application/fhir+json;fhirVersion=4.3", "text/html,application/xml;q=0.9,*/*"])
async def test_json_accept_headers_are_served(client: httpx.AsyncClient, accept: str) -> None:
    response = await client.get("/fhir/metadata", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"


@pytest.mark.parametrize("accept", ["application/fhir+xml", "application/xml", "text/xml"])
async def test_xml_accept_is_406(client: httpx.AsyncClient, accept: str) -> None:
    response = await client.get("/fhir/metadata", headers={"Accept": accept})
    assert response.status_code == 406
    assert issue_code(response) == "not-supported"
    assert "JSON" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(("fmt", "status"), [("json", 200), ("application/fhir+json", 200), ("xml", 406),
                                              ("application/fhir+xml", 406), ("turtle", 406)])
async def test_format_parameter(client: httpx.AsyncClient, fmt: str, status: int) -> None:
    response = await client.get("/fhir/metadata", params={"_format": fmt})
    assert response.status_code == status


async def test_format_parameter_overrides_accept(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata", params={"_format": "json"}, headers={"Accept": "application/xml"})
    assert response.status_code == 200


async def test_pretty(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    pretty = await client.get(f"/fhir/Patient/{stored['id']}", params={"_pretty": "true"})
    assert pretty.text.startswith('{\n  "resourceType"')
    compact = await client.get(f"/fhir/Patient/{stored['id']}")
    assert "\n" not in compact.text


async def test_prefer_return(client: httpx.AsyncClient) -> None:
    minimal = await client.post("/fhir/Patient", content=body(patient()),
                                headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"].startswith("http://testserver/fhir/Patient/")
    outcome = await client.post("/fhir/Patient", content=body(patient()),
                                headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    full = await client.post("/fhir/Patient", content=body(patient()),
                             headers={**FHIR_JSON, "Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Patient"


async def test_summary_and_elements_on_read(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient(text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">A</div>'},
                                          contact=[{"name": {"family": "Kin"}}], gender="female"))
    url = f"/fhir/Patient/{stored['id']}"
    summary = (await client.get(url, params={"_summary": "true"})).json()
    assert "contact" not in summary and "text" not in summary
    assert summary["gender"] == "female"
    assert summary["meta"]["tag"][0]["code"] == "SUBSETTED"
    text = (await client.get(url, params={"_summary": "text"})).json()
    assert set(text) == {"resourceType", "id", "meta", "text"}
    data = (await client.get(url, params={"_summary": "data"})).json()
    assert "text" not in data and "contact" in data
    elements = (await client.get(url, params={"_elements": "gender"})).json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    bad = await client.get(url, params={"_summary": "maybe"})
    assert bad.status_code == 400


async def test_forwarded_headers_shape_absolute_links(tmp_path: Path) -> None:
    # from a trusted proxy (the ASGI transport's peer is 127.0.0.1); tests/server/test_forwarded.py: others
    async with client_for(Settings(auth="off", sqlite_path=str(tmp_path / "f.db"), trusted_proxies=["127.0.0.1"],
                                   validation_workers=0)) as client:
        response = await client.post("/fhir/Patient", content=body(patient()), headers={
            **FHIR_JSON, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "clinic.example.org",
            "X-Forwarded-Prefix": "/api"})
        assert response.headers["location"].startswith("https://clinic.example.org/api/fhir/Patient/")
        rfc = await client.get("/fhir/Patient", headers={"Forwarded": 'for=1.2.3.4;proto=https;host="h.example"'})
        assert rfc.json()["link"][0]["url"].startswith("https://h.example/fhir/Patient")
        # each proxy appends itself: the first value is the client-facing one (RFC 7239 section 4)
        response = await client.get("/fhir/Patient", headers={
            "X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "front.example, inner.example:8080"})
        assert response.json()["link"][0]["url"].startswith("https://front.example/fhir/Patient")
        # X-Forwarded-* win over Forwarded; the Host header stays when no proxy names a host
        mixed = await client.get("/fhir/Patient", headers={"Forwarded": 'proto=https;host="a.example"',
                                                           "X-Forwarded-Host": "b.example"})
        assert mixed.json()["link"][0]["url"].startswith("https://b.example/fhir/Patient")
        plain = await client.get("/fhir/Patient", headers={"X-Forwarded-Prefix": "/api/"})
        assert plain.json()["link"][0]["url"] == "http://testserver/api/fhir/Patient"


async def test_forwarded_headers_ignored_unless_trusted(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Patient", headers={"X-Forwarded-Proto": "https",
                                                          "X-Forwarded-Host": "clinic.example.org",
                                                          "X-Forwarded-Prefix": "/api"})
    assert response.json()["link"][0]["url"] == "http://testserver/fhir/Patient"


async def test_configured_base_url_wins(tmp_path: Path) -> None:
    async with client_for(Settings(auth="off", sqlite_path=str(tmp_path / "b.db"), base_url="https://fhir.clinic.test/r4b/",
                          validation_workers=0)) as c:
        response = await c.post("/fhir/Patient", content=body(patient()), headers=FHIR_JSON)
        assert response.headers["location"].startswith("https://fhir.clinic.test/r4b/Patient/")


async def test_method_not_allowed_is_operation_outcome(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir", content=b"{}", headers=FHIR_JSON)
    assert response.status_code == 405
    assert issue_code(response) == "not-supported"


async def test_unknown_path_is_operation_outcome(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Patient/1/_history/1/extra")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_capability_statement(client: httpx.AsyncClient) -> None:
    cap = (await client.get("/fhir/metadata")).json()
    assert cap["resourceType"] == "CapabilityStatement"
    assert cap["fhirVersion"] == "4.3.0"
    assert cap["kind"] == "instance"
    types = {r["type"]: r for r in cap["rest"][0]["resource"]}
    assert len(types) == 141
    patient_caps = types["Patient"]
    codes = {i["code"] for i in patient_caps["interaction"]}
    assert {"read", "vread", "update", "patch", "delete", "history-instance", "create", "search-type"} <= codes
    assert any(p["name"] == "identifier" for p in patient_caps["searchParam"])
    assert {i["code"] for i in cap["rest"][0]["interaction"]} == {"transaction", "batch", "history-system",
                                                                "search-system"}


async def test_openapi_declares_fhir_content_and_outcomes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    create_op = spec["paths"]["/fhir/{type}"]["post"]
    assert "application/fhir+json" in create_op["requestBody"]["content"]
    assert "application/fhir+json" in create_op["responses"]["400"]["content"]
    assert "OperationOutcome" in str(create_op["responses"]["412"])


async def test_fhir_routes_answer_under_a_root_path(app: FastAPI) -> None:
    # behind a proxy that mounts the server under /api, the scope's path keeps the prefix and root_path names it
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        created = await c.post("/api/fhir/Patient", content=body(patient()), headers=FHIR_JSON)
        assert created.status_code == 201
        patient_id = created.json()["id"]
        assert (await c.get(f"/api/fhir/Patient/{patient_id}")).status_code == 200
        everything = await c.get(f"/api/fhir/Patient/{patient_id}/$everything")
        assert everything.status_code == 200 and everything.json()["total"] == 1
        assert (await c.put("/api/fhir", content=b"{}", headers=FHIR_JSON)).status_code == 405
        assert (await c.get("/api/fhir/Patient/1/_history/1/extra")).status_code == 404
