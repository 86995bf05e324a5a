"""CareLoop's own operations have OperationDefinitions served at the canonical URLs the CapabilityStatement names.

https://hl7.org/fhir/R4B/operationdefinition.html
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from operations.registry import OPERATIONS
from tests.conftest import create
from tests.factories import patient

pytestmark = pytest.mark.anyio
OURS = "http://careloop.health/fhir/OperationDefinition/"


def _declared(parameters: list[dict[str, Any]]) -> dict[str, Any]:
    # name -> the declared parts, as a tree
    return {p["name"]: _declared(p.get("part", [])) for p in parameters}


def _undeclared(given: list[dict[str, Any]], declared: dict[str, Any], trail: str = "") -> list[str]:
    out = []
    for param in given:
        if param["name"] not in declared:
            out.append(trail + param["name"])
        else:
            out += _undeclared(param.get("part", []), declared[param["name"]], f"{trail}{param['name']}.")
    return out


async def test_every_careloop_operation_in_the_capability_statement_resolves(client: httpx.AsyncClient) -> None:
    capability = (await client.get("/fhir/metadata")).json()
    named = {(r["type"], op["name"]): op["definition"] for r in capability["rest"][0]["resource"]
             for op in r.get("operation", [])}
    ours = {key: url for key, url in named.items() if url.startswith(OURS)}
    assert set(ours) == {("Patient", "tier"), ("Patient", "churn-risk"), ("Consent", "evaluate"),
                         ("Patient", "access-report")}
    for (kind, name), url in ours.items():
        found = (await client.get("/fhir/OperationDefinition", params={"url": url})).json()
        assert len(found.get("entry", [])) == 1, found
        definition = found["entry"][0]["resource"]
        operation = next(op for op in OPERATIONS if op.name == name)
        assert definition["code"] == name and kind in definition["resource"]
        assert (definition["type"], definition["instance"], definition["system"]) == (
            operation.type_level, operation.instance_level, operation.system_level)
        assert definition["affectsState"] is operation.affects_state


@pytest.mark.parametrize("name", ["tier", "churn-risk"])
async def test_an_answer_uses_only_what_the_definition_declares(client: httpx.AsyncClient, name: str) -> None:
    pid = (await create(client, patient()))["id"]
    definition = (await client.get(f"/fhir/OperationDefinition/Patient-{name}")).json()
    declared = _declared(definition["parameter"])
    for answer in [(await client.get(f"/fhir/Patient/{pid}/${name}")).json(),
                   (await client.get(f"/fhir/Patient/${name}")).json()]:
        assert _undeclared(answer["parameter"], declared) == []
        names = [p["name"] for p in answer["parameter"]]
        required = [p["name"] for p in definition["parameter"] if p["min"] >= 1]
        assert set(required) <= set(names), set(required) - set(names)
