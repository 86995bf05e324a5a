"""The audit trail's MongoDB database: its index and shard key on patient then time, and the compliance query.

Runs on the in-process stand-in (mongomock behind the async API, tests/support/mongo_standin.py), or on a real
replica set when CARELOOP_TEST_MONGODB_URL is set. https://www.mongodb.com/docs/manual/core/sharding-shard-key/
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.app import create_app
from tests.conformance.conftest import MONGODB_URL, mongo_settings
from tests.conftest import FHIR_JSON, body

pytestmark = pytest.mark.anyio
PATIENT_THEN_TIME = [("pk", 1), ("k.date.lo", 1)]
NEWEST_OF_A_PATIENT = [("t", 1), ("x.ref.p", 1), ("x.ref.i", 1), ("k.date.hi", -1)]


async def test_audit_collection_is_keyed_by_patient_then_recorded() -> None:
    settings, client = mongo_settings()
    app = create_app(settings, mongo_client=client)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url="http://test") as http:
        created = await http.post("/fhir/Patient", content=body({"resourceType": "Patient"}), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        patient = created.json()["id"]
        for _ in range(3):
            assert (await http.get(f"/fhir/Patient/{patient}")).status_code == 200
        found = await http.get("/fhir/AuditEvent", params=[("patient", f"Patient/{patient}"), ("date", "ge2020-01-01"),
                                                           ("_sort", "-date"), ("subtype", "read")])
        assert found.status_code == 200, found.text
        recorded = [e["resource"]["recorded"] for e in found.json()["entry"]]
        assert len(recorded) == 3 and recorded == sorted(recorded, reverse=True)

        if MONGODB_URL is None:
            database: Any = client[settings.mongodb_database + "_audit"]
        else:
            from pymongo import AsyncMongoClient

            database = AsyncMongoClient(MONGODB_URL)[settings.mongodb_database + "_audit"]
        indexes = [list(map(tuple, i["key"])) for i in (await database.resources.index_information()).values()]
        assert PATIENT_THEN_TIME in indexes and NEWEST_OF_A_PATIENT in indexes
        stored = await database.resources.find_one({"t": "AuditEvent", "x.ref": {"$elemMatch": {
            "p": "patient", "i": patient}}})
        assert stored["pk"] == f"Patient/{patient}" and isinstance(stored["k"]["date"]["lo"], int)
        clinical = [list(map(tuple, i["key"])) for i in (await client[settings.mongodb_database].resources
                                                         .index_information()).values()] if client else []
        assert PATIENT_THEN_TIME not in clinical  # the clinical store keeps its own indexes only
