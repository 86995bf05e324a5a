"""Patient/$merge: every compartment resource moves to the target in one transaction, history kept, nothing lost.

https://hl7.org/fhir/R5/patient-operation-merge.html (the R5 / HAPI shape, on R4B)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON, body, create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio

MRN = "urn:careloop:test:mrn"


def _merge(source: str, target: str, **extra: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}},
                                   {"name": "target-patient", "valueReference": {"reference": f"Patient/{target}"}}]
    parts += [{"name": k.replace("_", "-"), "valueBoolean": v} for k, v in extra.items()]
    return {"resourceType": "Parameters", "parameter": parts}


async def _counts(client: httpx.AsyncClient, patient_id: str) -> Counter[str]:
    bundle = (await client.get(f"/fhir/Patient/{patient_id}/$everything")).json()
    return Counter(e["resource"]["resourceType"] for e in bundle.get("entry") or []
                   if e["resource"]["resourceType"] not in ("Patient", "Provenance"))


async def _versions(client: httpx.AsyncClient, refs: list[str]) -> dict[str, str]:
    return {ref: (await client.get(f"/fhir/{ref}")).json()["meta"]["versionId"] for ref in refs}


@pytest.fixture
async def records(client: httpx.AsyncClient) -> dict[str, Any]:
    source = await create(client, patient(family="Dup", identifier=[{"system": MRN, "value": "S"}]))
    target = await create(client, patient(family="Kept", identifier=[{"system": MRN, "value": "T"}]))
    other = await create(client, patient(family="Other"))
    s, t = f"Patient/{source['id']}", f"Patient/{target['id']}"
    moved = [await create(client, observation(s, value=v)) for v in (5.0, 6.0, 7.0)]
    moved.append(await create(client, observation(f"Patient/{other['id']}", performer=[{"reference": s}])))
    moved.append(await create(client, {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                                       "subject": {"reference": s}}))
    moved.append(await create(client, {"resourceType": "Condition", "subject": {"reference": s},
                                       "code": {"text": "asthma"}}))
    moved.append(await create(client, {"resourceType": "Appointment", "status": "booked", "participant": [
        {"actor": {"reference": s}, "status": "accepted"}]}))
    await create(client, observation(t))
    return {"source": source["id"], "target": target["id"], "other": other["id"],
            "moved": [f"{r['resourceType']}/{r['id']}" for r in moved]}


async def test_preview_changes_nothing(client: httpx.AsyncClient, records: dict[str, Any]) -> None:
    source, target = records["source"], records["target"]
    before = (await _counts(client, source), await _counts(client, target))
    versions = await _versions(client, [*records["moved"], f"Patient/{source}", f"Patient/{target}"])
    preview = await client.post("/fhir/Patient/$merge", content=body(_merge(source, target, preview=True)),
                                headers=FHIR_JSON)
    assert preview.status_code == 200, preview.text
    out = {p["name"]: p["resource"] for p in preview.json()["parameter"]}
    assert "Preview only: 7 resources would move" in out["outcome"]["issue"][0]["diagnostics"]
    assert out["result"]["id"] == target and {"other": {"reference": f"Patient/{source}"}, "type": "replaces"} in \
        out["result"]["link"]
    assert (await _counts(client, source), await _counts(client, target)) == before
    assert await _versions(client, list(versions)) == versions
    assert (await client.get("/fhir/Provenance")).json().get("entry") is None


async def test_merge_moves_every_compartment_resource_and_loses_nothing(client: httpx.AsyncClient,
                                                                        records: dict[str, Any]) -> None:
    source, target = records["source"], records["target"]
    before_source, before_target = await _counts(client, source), await _counts(client, target)
    assert before_source == {"Observation": 4, "Encounter": 1, "Condition": 1, "Appointment": 1}
    assert before_target == {"Observation": 1}
    before_other = await _counts(client, records["other"])
    merged = await client.post("/fhir/Patient/$merge", content=body(_merge(source, target)), headers=FHIR_JSON)
    assert merged.status_code == 200, merged.text
    out = {p["name"]: p["resource"] for p in merged.json()["parameter"]}
    assert set(out) == {"input", "outcome", "result"}
    assert out["input"]["parameter"][0]["name"] == "source-patient"
    assert out["result"]["id"] == target and out["result"]["meta"]["versionId"] == "2"
    assert await _counts(client, source) == Counter()
    assert await _counts(client, target) == before_source + before_target
    assert await _counts(client, records["other"]) == before_other  # its subject stays; only the performer moved
    for ref in records["moved"]:
        history = (await client.get(f"/fhir/{ref}/_history")).json()["entry"]
        assert [e["resource"]["meta"]["versionId"] for e in history] == ["2", "1"]
        assert f"Patient/{source}" in str(history[1]["resource"]) and f"Patient/{source}" not in str(
            history[0]["resource"])
    retired = (await client.get(f"/fhir/Patient/{source}")).json()
    assert retired["active"] is False and retired["link"] == [
        {"other": {"reference": f"Patient/{target}"}, "type": "replaced-by"}]
    kept = (await client.get(f"/fhir/Patient/{target}")).json()
    assert kept["link"] == [{"other": {"reference": f"Patient/{source}"}, "type": "replaces"}]
    provenance = (await client.get("/fhir/Provenance", params={"target": f"Patient/{target}"})).json()["entry"]
    assert len(provenance) == 1
    named = {t["reference"] for t in provenance[0]["resource"]["target"]}
    assert named == {f"Patient/{target}", f"Patient/{source}", *records["moved"]}
    again = await client.post("/fhir/Patient/$merge", content=body(_merge(source, target)), headers=FHIR_JSON)
    assert again.status_code == 422 and again.json()["issue"][0]["expression"] == ["source-patient"]


async def test_merge_by_identifier_and_bad_input(client: httpx.AsyncClient, records: dict[str, Any]) -> None:
    source, target = records["source"], records["target"]
    for extra, where in (({"delete_source": True}, "delete-source"),):
        refused = await client.post("/fhir/Patient/$merge", content=body(_merge(source, target, **extra)),
                                    headers=FHIR_JSON)
        assert 400 <= refused.status_code < 500 and refused.json()["issue"][0]["expression"] == [where]
    same = await client.post("/fhir/Patient/$merge", content=body(_merge(source, source)), headers=FHIR_JSON)
    assert same.status_code == 400
    missing = await client.post("/fhir/Patient/$merge", content=body(_merge("nobody", target)), headers=FHIR_JSON)
    assert missing.status_code == 404
    assert (await client.get("/fhir/Patient/$merge")).status_code == 405
    unknown = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient-identifier", "valueIdentifier": {"system": MRN, "value": "nope"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{target}"}}]}
    answer = await client.post("/fhir/Patient/$merge", content=body(unknown), headers=FHIR_JSON)
    assert answer.status_code == 422 and answer.json()["issue"][0]["expression"] == ["source-patient-identifier"]
    by_identifier = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient-identifier", "valueIdentifier": {"system": MRN, "value": "S"}},
        {"name": "target-patient-identifier", "valueIdentifier": {"system": MRN, "value": "T"}}]}
    merged = await client.post("/fhir/Patient/$merge", content=body(by_identifier), headers=FHIR_JSON)
    assert merged.status_code == 200, merged.text
    assert await _counts(client, source) == Counter()
