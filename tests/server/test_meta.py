"""$meta, $meta-add, $meta-delete: profiles, tags and security labels at system, type and instance level.

https://hl7.org/fhir/R4B/resource-operation-meta.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.conftest import FHIR_JSON as AUTH_JSON
from tests.auth.conftest import open_world
from tests.auth.test_security_cases import patient_token
from tests.conftest import FHIR_JSON, body, create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio

TAG = {"system": "http://careloop.health/fhir/CodeSystem/source", "code": "his", "display": "HIS"}
LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}  # hides nothing
PROFILE = "http://hl7.org/fhir/StructureDefinition/bmi"


def _meta(**sets: Any) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": sets}]}


async def test_meta_add_and_delete_change_the_sets_in_a_new_version(client: httpx.AsyncClient) -> None:
    ann = await create(client, patient())
    url = f"/fhir/Patient/{ann['id']}"
    added = await client.post(f"{url}/$meta-add", content=body(_meta(tag=[TAG], security=[LABEL],
                                                                     profile=[PROFILE])), headers=FHIR_JSON)
    assert added.status_code == 200, added.text
    meta = added.json()["parameter"][0]["valueMeta"]
    assert meta["tag"] == [TAG] and meta["security"] == [LABEL] and meta["profile"] == [PROFILE]
    assert meta["versionId"] == "2"  # docs/decisions.md: a meta change is a version
    # sets: the same tag again (another display) adds nothing and writes nothing
    again = await client.post(f"{url}/$meta-add", content=body(_meta(tag=[{**TAG, "display": "other"}])),
                              headers=FHIR_JSON)
    assert again.json()["parameter"][0]["valueMeta"]["tag"] == [TAG]
    assert again.json()["parameter"][0]["valueMeta"]["versionId"] == "2"
    read = await client.get(f"{url}/$meta")
    assert read.json()["parameter"][0]["valueMeta"]["security"] == [LABEL]
    tagged = await client.get("/fhir/Patient", params={"_tag": f"{TAG['system']}|his"})
    assert [e["resource"]["id"] for e in tagged.json()["entry"]] == [ann["id"]]
    removed = await client.post(f"{url}/$meta-delete", content=body(_meta(tag=[TAG], profile=[PROFILE])),
                                headers=FHIR_JSON)
    left = removed.json()["parameter"][0]["valueMeta"]
    assert "tag" not in left and "profile" not in left and left["security"] == [LABEL]
    history = (await client.get(f"{url}/_history")).json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]
    assert "tag" not in history["entry"][2]["resource"]["meta"]


async def test_meta_at_type_and_system_level_lists_what_is_in_use(client: httpx.AsyncClient) -> None:
    ann = await create(client, patient(meta={"tag": [TAG]}))
    await create(client, observation(f"Patient/{ann['id']}", meta={"security": [LABEL], "profile": [PROFILE]}))
    await create(client, patient(family="Plain"))
    by_type = (await client.get("/fhir/Patient/$meta")).json()["parameter"][0]["valueMeta"]
    assert by_type == {"tag": [TAG]}
    everything = (await client.get("/fhir/$meta")).json()["parameter"][0]["valueMeta"]
    assert TAG in everything["tag"] and LABEL in everything["security"] and PROFILE in everything["profile"]
    statement = (await client.get("/fhir/metadata")).json()
    ops = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")["operation"]
    assert {o["name"] for o in ops} >= {"meta", "meta-add", "meta-delete"}


async def test_bad_meta_input_is_named(client: httpx.AsyncClient) -> None:
    ann = await create(client, patient())
    url = f"/fhir/Patient/{ann['id']}"
    missing = await client.post(f"{url}/$meta-add", content=body({"resourceType": "Parameters"}), headers=FHIR_JSON)
    assert missing.status_code == 400 and missing.json()["issue"][0]["expression"] == ["meta"]
    wrong = await client.post(f"{url}/$meta-add", content=body(_meta(tag=["his"])), headers=FHIR_JSON)
    assert wrong.status_code == 400 and wrong.json()["issue"][0]["expression"] == ["meta.tag"]
    assert (await client.get(f"{url}/$meta-add")).status_code == 405
    assert (await client.post("/fhir/Patient/nobody/$meta-add", content=body(_meta(tag=[TAG])),
                              headers=FHIR_JSON)).status_code == 404


async def test_a_patient_may_not_relabel_their_own_data(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        alice = world.ids["alice"]
        url = f"/fhir/Patient/{alice}"
        labelled = await world.client.post(f"{url}/$meta-add", content=body(_meta(security=[LABEL])),
                                           headers=world.admin)
        assert labelled.status_code == 200, labelled.text
        token = await patient_token(world, "alice", "launch/patient patient/*.cruds")
        mine = {**world.bearer(token), **AUTH_JSON}
        refused = await world.client.post(f"{url}/$meta-delete", content=body(_meta(security=[LABEL])), headers=mine)
        assert refused.status_code == 403 and refused.json()["issue"][0]["expression"] == ["meta.security"]
        also = await world.client.post(f"{url}/$meta-add", content=body(_meta(security=[
            {"system": LABEL["system"], "code": "V"}])), headers=mine)
        assert also.status_code == 403
        kept_answer = await world.client.get(f"{url}/$meta", headers=world.admin)
        assert kept_answer.status_code == 200, kept_answer.text
        kept = kept_answer.json()["parameter"][0]["valueMeta"]
        assert kept["security"] == [LABEL] and kept["versionId"] == "2"
        # tags are hers to keep in order; someone else's record answers as if absent
        assert (await world.client.post(f"{url}/$meta-add", content=body(_meta(tag=[TAG])),
                                        headers=mine)).status_code == 200
        other = await world.client.post(f"/fhir/Patient/{world.ids['bob']}/$meta-add",
                                        content=body(_meta(tag=[TAG])), headers=mine)
        assert other.status_code == 404
