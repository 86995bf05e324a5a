"""Dispatch by path depth answers every request exactly as the whole route table does.

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from server.routing import DepthDispatch
from tests.conftest import FHIR_JSON, body, create
from tests.factories import patient

pytestmark = pytest.mark.anyio


def _requests(pid: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/fhir/Patient/{pid}"), ("GET", f"/fhir/Patient/{pid}/_history/1"), ("GET", "/fhir/Patient"),
        ("GET", "/fhir/Patient?family=smith&_count=1"), ("GET", f"/fhir/Patient/{pid}/$everything"),
        ("GET", f"/fhir/Patient/{pid}/_history"), ("GET", "/fhir/metadata"), ("GET", "/fhir/_history"),
        ("GET", "/fhir/Patient/$tier"), ("GET", "/fhir/.well-known/smart-configuration"),
        ("GET", "/.well-known/oauth-authorization-server"), ("GET", "/auth/jwks"), ("GET", "/openapi.json"),
        # what no route answers: 404s, 405s and the trailing-slash redirect, found by the whole table
        ("POST", f"/fhir/Patient/{pid}"), ("DELETE", "/fhir/metadata"), ("PUT", f"/fhir/Patient/{pid}/_history"),
        ("GET", "/fhir/Patient/"), ("GET", "/fhir/Nothing/1"), ("GET", "/fhir/Patient/a/b/c/d/e"),
        ("GET", "/nowhere"), ("GET", "/fhir/"), ("GET", f"/fhir/Patient/{pid}/"), ("GET", "/auth/jwks/"),
        ("PATCH", "/fhir/metadata"), ("GET", "/fhir/Patient/$nosuch"), ("GET", f"/fhir/Patient/{pid}/$nosuch"),
        # routes outside /fhir, which each depth's table tries after its FHIR routes
        ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("POST", "/openapi.json"),
    ]


async def _answers(app: FastAPI, pid: str) -> list[tuple[int, str | None, str | None, bytes]]:
    transport = httpx.ASGITransport(app=app)
    found = []
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for method, path in _requests(pid):
            answer = await client.request(method, path, content=body(patient()) if method != "GET" else None,
                                          headers=FHIR_JSON)
            same_body = answer.content if "_history" not in path and "$everything" not in path else b""
            found.append((answer.status_code, answer.headers.get("location"), answer.headers.get("allow"),
                          same_body if answer.status_code >= 300 else b""))
    return found


async def test_every_request_finds_the_route_the_whole_table_would(app: FastAPI, client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    assert isinstance(app.router.middleware_stack, DepthDispatch)
    narrowed = await _answers(app, pid)
    app.router.middleware_stack = app.router.app  # the whole table, tried in turn
    whole = await _answers(app, pid)
    assert narrowed == whole
    statuses = [status for status, *_ in narrowed]
    assert statuses[:9] == [200] * 9
    assert statuses[9:13] == [404, 404, 404, 200]  # authorization is off here: no discovery, no keys
    assert 405 in statuses[13:] and 404 in statuses[13:] and 307 in statuses[13:]
    assert statuses[-3:] == [200, 200, 405]


async def test_with_authorization_off_the_oauth_endpoints_answer_404_in_json(client: httpx.AsyncClient) -> None:
    for path in ("/fhir/.well-known/smart-configuration", "/.well-known/oauth-authorization-server", "/auth/jwks"):
        answer = await client.get(path)
        assert answer.status_code == 404
        assert answer.json()["error"] == "not_found"


async def test_a_fault_inside_a_route_answers_500_as_an_operation_outcome(
        app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # FHIR routes call their endpoint directly (server/routing.py): a fault still reaches the app's handlers
    pid = (await create(client, patient()))["id"]

    async def broken(*_: object) -> None:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(app.state.services.repository.store, "read", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as faulty:
        answer = await faulty.get(f"/fhir/Patient/{pid}", headers=FHIR_JSON)
    assert answer.status_code == 500
    assert answer.json()["issue"][0]["code"] == "exception"
    assert "fire" not in answer.text  # the fault is logged, not shown
    monkeypatch.undo()
    assert (await client.get(f"/fhir/Patient/{pid}")).status_code == 200
