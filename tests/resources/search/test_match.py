"""The in-memory matcher (used for subscription criteria and scope filters) agrees with the SQLite store.

Every R4B example of a type is judged against searches made from the values of that type's examples, with
prefixes and modifiers; the set the matcher accepts must be exactly the set the store's search returns.
https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import fhirpathpy
import httpx
import orjson
import pytest
from fastapi import FastAPI

from resources.search.match import NotEvaluable, matches_all
from resources.search.parse import parse_search
from resources.search.paths import fhirpath_model
from server.settings import Settings
from tests.conftest import DATA, FHIR_JSON
from tests.resources.search.test_examples_searchable import SEARCHABLE, fhirpath_for, query_values

pytestmark = pytest.mark.anyio
# a spread of types with many examples and every parameter type between them
TYPES = ("Observation", "Patient", "Encounter", "Condition", "MedicationRequest", "Task", "Appointment",
         "Communication", "ValueSet", "Immunization")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No subscription engine: the follow-up Tasks it would make from the examples are not examples. No escalation:
    the example Tasks are overdue, and a round 30 s in (a loaded machine) would change their lastModified."""
    return settings.model_copy(update={"subscriptions": False, "escalation": False})


def variants(kind: str, asked: str) -> list[str]:
    """Ways to ask with prefixes and modifiers, as `modifier:value` (empty modifier: none)."""
    out = [f":{asked}", f":missing:{'true'}", f":missing:{'false'}"]
    if kind == "token":
        out.append(f"not:{asked}")
        if "|" in asked:
            out.append(f":{asked.split('|', 1)[1]}")
            out.append(f":|{asked.split('|', 1)[1]}")
    if kind == "string":
        out += [f"exact:{asked}", f"contains:{asked[1:4]}", f":{asked[:2]}"]
    if kind in ("date", "number", "quantity") and asked[:1].isdigit():
        out += [f":{p}{asked}" for p in ("ge", "gt", "le", "lt", "ne", "ap", "sa", "eb")]
    if kind == "uri":
        out += [f"below:{asked[:12]}", f"above:{asked}/more"]
    return out


async def test_matcher_agrees_with_the_store(app: FastAPI, client: httpx.AsyncClient) -> None:
    services = app.state.services
    registry, indexer = services.repository.registry, services.repository.indexer
    stored: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((DATA / "examples").glob("*.json")):
        example = orjson.loads(path.read_bytes())
        if example["resourceType"] in TYPES and example.get("id"):
            response = await client.put(f"/fhir/{example['resourceType']}/{example['id']}",
                                        content=path.read_bytes(), headers=FHIR_JSON)
            assert response.status_code in (200, 201), response.text
            stored.setdefault(example["resourceType"], []).append(response.json())
    checked, disagreements = 0, []
    for kind, resources in stored.items():
        rows = {r["id"]: indexer.extract(kind, r) for r in resources}
        for param in registry.for_type(kind).values():
            if param.type not in SEARCHABLE or not param.expression or param.code.startswith("_"):
                continue
            evaluate = fhirpathpy.compile(fhirpath_for(param.expression, kind), model=fhirpath_model())
            asked_values: set[str] = set()
            for resource in resources:
                try:
                    values = evaluate(resource, {})
                except Exception:  # noqa: BLE001 (an expression fhirpathpy cannot run gives no value to ask)
                    continue
                for value in values[:2]:
                    asked_values.update(query_values(param.type, value)[:1])
            for asked in sorted(asked_values)[:6]:
                for variant in variants(param.type, asked):
                    modifier, _, raw = variant.partition(":")
                    key = f"{param.code}:{modifier}" if modifier else param.code
                    escaped = raw.replace("\\", "\\\\").replace(",", "\\,")
                    page = (await client.get(f"/fhir/{kind}?{quote(key)}={quote(escaped, safe='')}"
                                             f"&_count=1000&_elements=id")).json()
                    if page.get("resourceType") != "Bundle":
                        continue  # a value this parameter refuses (e.g. a prefix on a token) asks nothing
                    found = {e["resource"]["id"] for e in page.get("entry", []) if e["search"]["mode"] == "match"}
                    query = await services.repository.resolve(
                        parse_search(kind, [(key, escaped)], registry).query)
                    try:
                        judged = {r["id"] for r in resources if matches_all(query.filters, r, rows[r["id"]])}
                    except NotEvaluable:
                        continue
                    checked += 1
                    if judged != found:
                        disagreements.append(f"{kind}?{key}={raw}: store {sorted(found)[:5]} "
                                             f"matcher {sorted(judged)[:5]}")
    assert checked > 1000
    assert disagreements == [], f"{len(disagreements)} of {checked}:\n" + "\n".join(disagreements[:30])
