"""Parameters that hold another parameter's values (Observation `combo-code` holds `code`) search the same.

The SQLite store keeps the shared entries once and searches the wide parameter over both (docs/storage.md);
a client must see exactly the answers of the specification, for every modifier and for sorting, and a
SearchParameter that redefines one of them must take effect once its reindex ran.
https://hl7.org/fhir/R4B/observation.html#search
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create
from tests.factories import observation, patient
from tests.server.test_custom_search_parameters import wait_for_jobs

pytestmark = pytest.mark.anyio
LOINC = "http://loinc.org"


def _panel(subject: str, systolic: float, diastolic: float) -> dict[str, Any]:
    """A blood-pressure panel: code 85354-9 with two components, both in mm[Hg]."""
    def part(code: str, value: float) -> dict[str, Any]:
        return {"code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": {"value": value, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                  "code": "mm[Hg]"}}
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]}, "subject": {"reference": subject},
            "effectiveDateTime": "2024-03-01T08:00:00Z",
            "component": [part("8480-6", systolic), part("8462-4", diastolic)]}


async def _ids(client: httpx.AsyncClient, **params: str) -> list[str]:
    response = await client.get("/fhir/Observation", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


async def test_combo_parameters_answer_as_the_specification_says(tmp_path: Path) -> None:
    db = tmp_path / "combo.db"
    async with client_for(Settings(auth="off", sqlite_path=str(db), validation_workers=0)) as client:
        ann = await create(client, patient())
        subject = f"Patient/{ann['id']}"
        glucose = await create(client, observation(subject, value=6.3))
        high = await create(client, _panel(subject, 150, 95))
        low = await create(client, _panel(subject, 110, 70))
        bare = await create(client, {"resourceType": "Observation", "status": "final", "subject": {
            "reference": subject}, "code": {"text": "note without a value"}})

        assert sorted(await _ids(client, **{"combo-code": "2339-0"})) == [glucose["id"]]
        assert sorted(await _ids(client, **{"combo-code": "8480-6"})) == sorted([high["id"], low["id"]])
        assert sorted(await _ids(client, **{"combo-code": f"{LOINC}|85354-9"})) == sorted([high["id"], low["id"]])
        assert await _ids(client, **{"code": "8480-6"}) == []
        assert sorted(await _ids(client, **{"combo-code:not": "8480-6"})) == sorted([glucose["id"], bare["id"]])
        assert sorted(await _ids(client, **{"combo-value-quantity": "gt140"})) == [high["id"]]
        assert sorted(await _ids(client, **{"combo-value-quantity": "6.3"})) == [glucose["id"]]
        assert sorted(await _ids(client, **{"combo-value-quantity:missing": "true"})) == [bare["id"]]
        assert sorted(await _ids(client, **{"combo-code-value-quantity": "8462-4$gt90"})) == [high["id"]]
        assert sorted(await _ids(client, **{"combo-code-value-quantity": "2339-0$6.3"})) == [glucose["id"]]
        ordered = await _ids(client, **{"combo-value-quantity": "ge0", "_sort": "-combo-value-quantity"})
        assert ordered == [high["id"], low["id"], glucose["id"]]
    # the shared entries are there once: the glucose's `code` row is not repeated under `combo-code`
    conn = sqlite3.connect(db)
    codes = [code for (code,) in conn.execute(
        "SELECT s.code FROM idx_token t JOIN sp s ON s.pid = t.pid JOIN resource r ON r.rid = t.rid "
        "WHERE r.id = ? AND s.code IN ('code', 'combo-code')", (glucose["id"],))]
    conn.close()
    assert codes == ["code"]


async def test_redefining_a_combo_parameter_takes_effect_after_its_reindex(tmp_path: Path) -> None:
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "redefined.db"), validation_workers=0)
    async with client_for(settings) as client:
        ann = await create(client, patient())
        glucose = await create(client, observation(f"Patient/{ann['id']}"))
        panel = await create(client, _panel(f"Patient/{ann['id']}", 150, 95))
        assert await _ids(client, **{"combo-code": "2339-0"}) == [glucose["id"]]
        only_components = {
            "resourceType": "SearchParameter", "url": "http://careloop.example/fhir/SearchParameter/components",
            "name": "ComponentCodesOnly", "status": "active", "description": "Codes of the components only",
            "code": "combo-code", "base": ["Observation"], "type": "token",
            "expression": "Observation.component.code"}
        created = await client.post("/fhir/SearchParameter", content=body(only_components), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        started = await client.post("/fhir/$reindex", params={"_type": "Observation"})
        progress = await wait_for_jobs(client, started.headers["content-location"].split("job=")[1])
        assert progress["status"] == "completed"
        assert await _ids(client, **{"combo-code": "2339-0"}) == []
        assert await _ids(client, **{"combo-code": "8480-6"}) == [panel["id"]]


async def test_pages_driven_by_one_code_are_complete_and_in_order(client: httpx.AsyncClient) -> None:
    """The first page of a broad code search is read from the code's index in order (compile._streamed_page)."""
    ann = await create(client, patient())
    subject = f"Patient/{ann['id']}"
    twice = {"coding": [{"system": LOINC, "code": "2339-0"}, {"system": "urn:careloop:test:local", "code": "2339-0"}]}
    made = []
    for n in range(13):
        resource = observation(subject, value=float(n))
        if n % 4 == 0:  # the code in two codings: one entry per coding, one resource in the answer
            resource["code"] = twice
        made.append(await create(client, resource))
    await create(client, observation(subject, code="8867-4", value=70, unit="/min"))
    assert (await client.delete(f"/fhir/Observation/{made[5]['id']}")).status_code == 200
    expected = [m["id"] for m in made if m is not made[5]]

    async def walk(query: str) -> list[str]:
        seen: list[str] = []
        url: str | None = f"/fhir/Observation?{query}&_count=4"
        while url:
            bundle = (await client.get(url)).json()
            seen.extend(e["resource"]["id"] for e in bundle.get("entry", []))
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        return seen

    # row-id order is creation order: the pages are complete, without repeats, in order
    assert await walk("code=2339-0") == expected
    assert await walk(f"code={LOINC}|2339-0") == expected
    assert await walk("code=urn:careloop:test:local|2339-0") == [m["id"] for m in made[::4]]
    assert await walk("code=|2339-0") == []
    assert await walk("code=2339-0&value-quantity=lt4") == expected[:4]
    counted = (await client.get("/fhir/Observation", params={"code": "2339-0", "_total": "accurate"})).json()
    assert counted["total"] == 12
