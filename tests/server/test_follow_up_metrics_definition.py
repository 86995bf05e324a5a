"""$follow-up-metrics is served with its OperationDefinition and listed in the CapabilityStatement.

https://hl7.org/fhir/R4B/operationdefinition.html
"""

from __future__ import annotations

import httpx
import pytest

from operations.follow_up_metrics import PARAMETERS

pytestmark = pytest.mark.anyio


async def test_definition_and_capability(client: httpx.AsyncClient) -> None:
    defined = (await client.get("/fhir/OperationDefinition/follow-up-metrics")).json()
    assert defined["code"] == "follow-up-metrics" and defined["system"] is True and defined["type"] is False
    assert [p["name"] for p in defined["parameter"] if p["use"] == "in"] == list(PARAMETERS)
    cap = (await client.get("/fhir/metadata")).json()
    assert {"name": "follow-up-metrics", "definition": defined["url"]} in [
        {k: o[k] for k in ("name", "definition")} for o in cap["rest"][0].get("operation", [])]
