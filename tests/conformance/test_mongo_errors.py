"""MongoDB failing under the server, through HTTP on the stand-in raising PyMongo's own errors: a step-down or an
unreachable server answers 503 with Retry-After on every route (never 500); transactions are retried on
TransientTransactionError and their commit on UnknownTransactionCommitResult, bounded; event numbers never skip
(issue 34 item 6).

https://www.mongodb.com/docs/manual/core/transactions-in-applications/
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure, ServerSelectionTimeoutError

from resources.store.mongo.retry import ATTEMPTS
from server.app import create_app
from tests.conformance.conftest import MONGODB_URL, mongo_settings
from tests.conftest import FHIR_JSON, body
from tests.factories import patient
from tests.support.mongo_standin import StandInClient

pytestmark = [pytest.mark.anyio,
              pytest.mark.skipif(MONGODB_URL is not None, reason="injects failures into the stand-in")]
TRANSIENT = {"errorLabels": ["TransientTransactionError"]}


@dataclass
class Live:
    http: httpx.AsyncClient
    mongo: StandInClient
    app: Any

    async def outbox(self) -> list[int]:
        events = await self.app.state.services.repository.store.outbox(0, 1000)
        return [e.seq for e in events]


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    settings, client = mongo_settings()
    assert isinstance(client, StandInClient)
    app = create_app(settings, mongo_client=client)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://testserver") as http:
        yield Live(http, client, app)


async def made(live: Live, family: str) -> str:
    answer = await live.http.post("/fhir/Patient", content=body(patient(family=family)), headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def assert_unavailable(answer: httpx.Response, route: str) -> None:
    assert answer.status_code == 503, (route, answer.status_code, answer.text)
    assert answer.headers.get("retry-after") == "10", route
    issue = answer.json()["issue"][0]
    assert issue["code"] == "transient", route
    assert "database is unavailable" in issue["diagnostics"], route


DOWN = {
    "step-down": NotPrimaryError("not primary", {"code": 10107, "errmsg": "not primary"}),
    "lost connection": AutoReconnect("connection closed"),
    "unreachable": ServerSelectionTimeoutError("No replica set members match selector, Timeout: 5.0s"),
    "interrupted by a state change": OperationFailure("operation was interrupted", 11602),
}


@pytest.mark.parametrize("error", DOWN.values(), ids=DOWN.keys())
async def test_every_route_answers_503_with_retry_after_then_recovers(live: Live, error: Exception) -> None:
    kept = await made(live, "Kept")
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(family="InBundle"), "request": {"method": "POST", "url": "Patient"}}]}
    routes = [
        ("read", "GET", f"/fhir/Patient/{kept}", None),
        ("vread", "GET", f"/fhir/Patient/{kept}/_history/1", None),
        ("instance history", "GET", f"/fhir/Patient/{kept}/_history", None),
        ("system history", "GET", "/fhir/_history", None),
        ("search", "GET", "/fhir/Patient?family=Kept", None),
        ("search with total", "GET", "/fhir/Patient?_total=accurate", None),
        ("POST search", "POST", "/fhir/Patient/_search", None),
        ("create", "POST", "/fhir/Patient", patient(family="New")),
        ("update", "PUT", f"/fhir/Patient/{kept}", {**patient(family="Changed"), "id": kept}),
        ("delete", "DELETE", f"/fhir/Patient/{kept}", None),
        ("transaction", "POST", "/fhir", transaction),
        ("$everything", "GET", f"/fhir/Patient/{kept}/$everything", None),
        ("$lastn", "GET", f"/fhir/Observation/$lastn?patient=Patient/{kept}", None),
    ]
    fault = live.mongo.fail(error, times=None)  # every call to the clinical database fails from now on
    for route, method, url, resource in routes:
        headers = dict(FHIR_JSON) if resource is not None else (
            {"content-type": "application/x-www-form-urlencoded"} if method == "POST" else {})
        answer = await live.http.request(method, url, content=body(resource) if resource is not None else b"",
                                         headers=headers)
        assert_unavailable(answer, route)
    ready = await live.http.get("/readyz")
    assert ready.status_code == 503
    assert "database is unavailable" in ready.json()["checks"]["store"]
    live.mongo.faults.remove(fault)  # the new primary is elected: the driver reconnects by itself
    back = await live.http.get(f"/fhir/Patient/{kept}")
    assert back.status_code == 200 and back.json()["meta"]["versionId"] == "1"  # nothing was half-written
    assert (await live.http.get("/readyz")).json()["checks"]["store"] == "ok"
    await made(live, "After")
    assert await live.outbox() == [1, 2]


async def test_transient_error_mid_write_is_retried_and_numbers_stay_contiguous(live: Live) -> None:
    await made(live, "First")
    # a write conflict at the outbox insert, then a step-down inside the transaction (both carry the label)
    live.mongo.fail(OperationFailure("WriteConflict", 112, TRANSIENT), op="insert_one", collection="outbox")
    await made(live, "Second")
    live.mongo.fail(NotPrimaryError("not primary", TRANSIENT), op="insert_one", collection="versions")
    await made(live, "Third")
    assert live.mongo.tripped == 2
    # a three-entry transaction failing at its second resource insert: replayed whole, numbered alike
    live.mongo.fail(OperationFailure("WriteConflict", 112, TRANSIENT), op="insert_one", collection="resources",
                    after=1)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(family=f"B{n}"), "request": {"method": "POST", "url": "Patient"}} for n in range(3)]}
    answer = await live.http.post("/fhir", content=body(bundle), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert live.mongo.tripped == 3
    assert await live.outbox() == [1, 2, 3, 4, 5, 6]
    found = (await live.http.get("/fhir/Patient?_total=accurate")).json()
    assert found["total"] == 6  # each exactly once
    assert sorted(e["resource"]["name"][0]["family"] for e in found["entry"]) == [
        "B0", "B1", "B2", "First", "Second", "Third"]


async def test_commit_of_unknown_outcome_is_retried_and_commits_once(live: Live) -> None:
    live.mongo.fail(AutoReconnect("connection closed at commit", {"errorLabels": ["UnknownTransactionCommitResult"]}),
                    op="commit")
    made_id = await made(live, "Once")
    assert live.mongo.tripped == 1
    assert await live.outbox() == [1]
    history = (await live.http.get(f"/fhir/Patient/{made_id}/_history")).json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["1"]


async def test_transient_error_at_commit_runs_the_transaction_again(live: Live) -> None:
    await made(live, "First")
    live.mongo.fail(OperationFailure("NoSuchTransaction", 251, TRANSIENT), op="commit")
    await made(live, "Second")
    assert live.mongo.tripped == 1
    assert await live.outbox() == [1, 2]
    assert (await live.http.get("/fhir/Patient?_total=accurate")).json()["total"] == 2


async def test_retries_are_bounded_then_503_and_no_number_is_skipped(live: Live) -> None:
    await made(live, "First")
    fault = live.mongo.fail(OperationFailure("WriteConflict", 112, TRANSIENT), op="insert_one", collection="outbox",
                            times=None)
    answer = await live.http.post("/fhir/Patient", content=body(patient(family="Refused")), headers=FHIR_JSON)
    assert_unavailable(answer, "create")
    assert live.mongo.tripped == ATTEMPTS
    live.mongo.faults.remove(fault)
    await made(live, "After")
    assert await live.outbox() == [1, 2]
    found = (await live.http.get("/fhir/Patient?_total=accurate")).json()
    assert sorted(e["resource"]["name"][0]["family"] for e in found["entry"]) == ["After", "First"]


async def test_an_error_without_the_transient_label_is_not_retried(live: Live) -> None:
    # a lost connection the driver did not label TransientTransactionError: one attempt, 503, nothing written
    live.mongo.fail(AutoReconnect("connection reset"), op="insert_one", collection="versions")
    answer = await live.http.post("/fhir/Patient", content=body(patient(family="Refused")), headers=FHIR_JSON)
    assert_unavailable(answer, "create")
    assert live.mongo.tripped == 1
    assert await live.outbox() == []
    await made(live, "After")
    assert await live.outbox() == [1]
