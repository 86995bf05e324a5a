"""The compiled consent filter and the engine agree: what the store returns for a verdict is exactly the set of
stored resources whose facts the verdict holds for, and the in-memory re-check says the same of each.

Random verdicts (tests/consent/test_engine_property.py's generator) over real stored Observations and
Conditions with categories, codes, labels, dates and references, on the SQLite store.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from consent.engine import Const, holds, verdict
from consent.engine.facts import facts_from_rows
from resources.search.match import matches
from resources.search.query import SearchQuery
from tests.conftest import FHIR_JSON
from tests.consent.builders import CONF, HIV, LAB, PULSE, VITAL
from tests.consent.test_engine_property import _ask, _consent, _policy

pytestmark = pytest.mark.anyio

DATES = (None, "2026-02-01", "2026-03-30T10:00:00Z", "2025-06-01", "2026-04-02")


def _resource(rng: random.Random, patient: str, refs: dict[str, str]) -> dict[str, Any]:
    kind = rng.choice(("Observation", "Condition"))
    category = rng.sample((LAB, VITAL), rng.randint(0, 1))
    code = rng.sample((HIV, PULSE), rng.randint(0, 1))
    labels = rng.sample(((CONF, "R"), (CONF, "V"), ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY")),
                        rng.randint(0, 2))
    out: dict[str, Any] = {"resourceType": kind, "subject": {"reference": f"Patient/{patient}"},
                           "code": {"coding": [{"system": s, "code": c} for s, c in code]} if code else {"text": "x"}}
    if kind == "Observation":
        out["status"] = "final"
        if category:
            out["category"] = [{"coding": [{"system": s, "code": c} for s, c in category]}]
        if rng.random() < 0.5:
            out["performer"] = [{"reference": refs["gp"]}]
        if rng.random() < 0.5:
            out["encounter"] = {"reference": refs["encounter"]}
    else:
        if rng.random() < 0.5:
            out["recorder"] = {"reference": refs["gp"]}
        if rng.random() < 0.5:
            out["encounter"] = {"reference": refs["encounter"]}
    date = rng.choice(DATES)
    if date is not None:
        out["effectiveDateTime" if kind == "Observation" else "recordedDate"] = date
    if labels:
        out["meta"] = {"security": [{"system": s, "code": c} for s, c in labels]}
    return out


async def test_store_query_and_recheck_agree_with_the_engine(app: FastAPI, client: httpx.AsyncClient) -> None:
    services = app.state.services
    compiler = services.policy.consent.compiler
    repository = services.repository
    rng = random.Random(7)
    patient = (await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)).json()["id"]
    refs = {"gp": "Practitioner/gp", "encounter": "Encounter/e1"}
    stored: list[dict[str, Any]] = []
    for _ in range(40):
        response = await client.post("/fhir/" + (body := _resource(rng, patient, refs))["resourceType"],
                                     content=orjson.dumps(body), headers=FHIR_JSON)
        assert response.status_code == 201, response.text
        stored.append(response.json())
    checked = 0
    for _ in range(120):
        consents = [_consent(rng, i) for i in range(rng.randint(1, 3))]
        found = verdict(consents, _ask(rng), _policy(rng))
        if isinstance(found.expr, Const):
            continue
        for kind in ("Observation", "Condition"):
            resources = [r for r in stored if r["resourceType"] == kind]
            expected = set()
            for resource in resources:
                rows = repository.indexer.extract(kind, resource)
                holds_here = holds(found.expr, facts_from_rows(kind, resource, rows))
                compiled = compiler.compile(found.expr, kind)
                in_memory = compiled if isinstance(compiled, bool) else matches(compiled, resource, rows)
                assert in_memory == holds_here, (found.expr, resource)
                if holds_here:
                    expected.add(resource["id"])
            compiled = compiler.compile(found.expr, kind)
            if isinstance(compiled, bool):
                assert expected == ({r["id"] for r in resources} if compiled else set())
                continue
            page = await repository.search(SearchQuery(kind, filters=(compiled,), count=1000))
            assert {r.id for r in page.resources} == expected, found.expr
            checked += 1
    assert checked > 20  # the generator made enough resource-dependent verdicts to mean something
