"""Bad input: each is a 4xx OperationOutcome naming the problem, and nothing is stored.

https://hl7.org/fhir/R4B/http.html#Status-Codes
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, changes_since_start, client_for, issue_code
from tests.factories import patient

pytestmark = pytest.mark.anyio


async def assert_nothing_stored(client: httpx.AsyncClient) -> None:
    history = (await client.get("/fhir/_history", params=changes_since_start())).json()
    assert "entry" not in history, history


def nested(depth: int) -> dict[str, Any]:
    ext: dict[str, Any] = {"url": "http://x.org/leaf", "valueString": "deep"}
    for _ in range(depth):
        ext = {"url": "http://x.org/n", "extension": [ext]}
    return {"resourceType": "Patient", "extension": [ext]}


BAD_CREATES: list[tuple[str, bytes, int, str, str]] = [
    ("malformed JSON", b'{"resourceType": "Patient",', 400, "structure", "not valid JSON"),
    ("not an object", b'["Patient"]', 400, "structure", "JSON object"),
    ("a bare string", b'"Patient"', 400, "structure", "JSON object"),
    ("empty body", b"", 400, "required", "no body"),
    ("missing resourceType", body({"name": [{"family": "x"}]}), 400, "required", "resourceType"),
    ("unknown resourceType", body({"resourceType": "Unicorn"}), 400, "not-supported", "Unicorn"),
    ("resourceType mismatch", body({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
     400, "invalid", "does not match"),
    ("unknown element", body({"resourceType": "Patient", "favouriteColour": "blue"}), 400, "structure",
     "favouriteColour"),
    ("invalid date", body({"resourceType": "Patient", "birthDate": "2023-02-30"}), 400, "value",
     "day value is outside"),
    ("wrong JSON type", body({"resourceType": "Patient", "active": "yes"}), 400, "structure", "boolean"),
    ("null value", b'{"resourceType": "Patient", "gender": null}', 400, "structure", "null"),
    ("empty array", body({"resourceType": "Patient", "name": []}), 400, "structure", "Empty arrays"),
    ("empty string", body({"resourceType": "Patient", "gender": ""}), 400, "value", "Empty or blank"),
    ("missing required element", body({"resourceType": "Observation", "code": {"text": "x"}}), 400, "required",
     "status"),
    ("control character", body({"resourceType": "Patient", "name": [{"family": "a\u0001b"}]}), 400, "value",
     "does not match"),
    ("id with slash", body({"resourceType": "Patient", "id": "a/b"}), 400, "value", "a/b"),
    ("id with NUL", body({"resourceType": "Patient", "id": "a\u0000b"}), 400, "value", "does not match"),
    ("id with dotdot path", body({"resourceType": "Patient", "id": "../x"}), 400, "value", "does not match"),
    ("id too long", body({"resourceType": "Patient", "id": "x" * 65}), 400, "value", "does not match"),
    ("malformed reference", body({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                  "subject": {"reference": "Patient/../etc"}}), 422, "value", "Patient/../etc"),
    ("reference to unknown type", body({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                        "subject": {"reference": "Unicorn/1"}}), 422, "value", "Unicorn"),
    ("nesting too deep", body(nested(40)), 400, "too-costly", "deeper than the limit"),
]


@pytest.mark.parametrize(("payload", "status", "code", "words"), [c[1:] for c in BAD_CREATES],
                         ids=[c[0] for c in BAD_CREATES])
async def test_bad_create_is_refused(client: httpx.AsyncClient, payload: bytes, status: int, code: str,
                                     words: str) -> None:
    target = "Observation" if b'"Observation"' in payload and b"mismatch" not in payload else "Patient"
    if words == "does not match" and b"Observation" in payload:
        target = "Patient"
    response = await client.post(f"/fhir/{target}", content=payload, headers=FHIR_JSON)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(i["code"] == code for i in outcome["issue"]), outcome
    assert words in response.text
    await assert_nothing_stored(client)


async def test_error_names_the_element(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", content=body({"resourceType": "Patient", "birthDate": "2023-02-30"}),
                                 headers=FHIR_JSON)
    assert response.json()["issue"][0]["expression"] == ["Patient.birthDate"]


@pytest.mark.parametrize("url_id", ["a%2Fb", "a%00b", "x" * 65, "a%20b", "%2E%2E"])
async def test_bad_ids_in_url(client: httpx.AsyncClient, url_id: str) -> None:
    read = await client.get(f"/fhir/Patient/{url_id}")
    assert read.status_code in (400, 404)
    assert read.json()["resourceType"] == "OperationOutcome"
    put = await client.put(f"/fhir/Patient/{url_id}", content=body(patient(id="ok")), headers=FHIR_JSON)
    assert put.status_code in (400, 404)
    assert put.json()["resourceType"] == "OperationOutcome"
    await assert_nothing_stored(client)


@pytest.mark.parametrize("content_type", ["application/fhir+xml", "application/xml", "text/plain",
                                          "application/x-www-form-urlencoded"])
async def test_unsupported_content_type_is_415(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post("/fhir/Patient", content=body(patient()), headers={"content-type": content_type})
    assert response.status_code == 415
    assert issue_code(response) == "not-supported"
    await assert_nothing_stored(client)


async def test_patch_needs_json_patch_media_type(client: httpx.AsyncClient) -> None:
    response = await client.patch("/fhir/Patient/x", content=b"[]", headers={"content-type": "text/plain"})
    assert response.status_code == 415


async def test_body_over_limit_is_413(tmp_path: Path) -> None:
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "l.db"), max_body_bytes=2048,
                        validation_workers=0, terminology_seed=False, pathways_seed=False)
    async with client_for(settings) as c:
        big = patient(text={"status": "generated",
                            "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 5000 + "</div>"})
        response = await c.post("/fhir/Patient", content=body(big), headers=FHIR_JSON)
        assert response.status_code == 413
        assert issue_code(response) == "too-costly"
        assert "entry" not in (await c.get("/fhir/_history", params=changes_since_start())).json()


async def test_dollar_keys_are_data_not_operators(client: httpx.AsyncClient) -> None:
    refused = await client.post("/fhir/Patient", content=body({"resourceType": "Patient", "$where": "1"}),
                                headers=FHIR_JSON)
    assert refused.status_code == 400
    stored = await client.post("/fhir/Patient", headers=FHIR_JSON, content=body(
        patient(family="$ne", identifier=[{"system": "urn:x", "value": "{\"$gt\": \"\"}"}])))
    assert stored.status_code == 201
    found = (await client.get("/fhir/Patient", params={"family": "$ne"})).json()
    assert found["entry"][0]["resource"]["name"][0]["family"] == "$ne"
    literal = (await client.get("/fhir/Patient", params={"identifier": 'urn:x|{"$gt": ""}'})).json()
    assert len(literal["entry"]) == 1
    nothing = (await client.get("/fhir/Patient", params={"identifier": '{"$gt": ""}'.replace('""', '"a"')})).json()
    assert "entry" not in nothing


async def test_sql_in_search_values_is_data(client: httpx.AsyncClient) -> None:
    await client.post("/fhir/Patient", content=body(patient(family="Smith")), headers=FHIR_JSON)
    response = await client.get("/fhir/Patient", params={"family": "x' OR '1'='1"})
    assert response.status_code == 200
    assert "entry" not in response.json()
    still = await client.get("/fhir/Patient")
    assert len(still.json()["entry"]) == 1


async def test_bundle_over_entry_limit_is_413(tmp_path: Path) -> None:
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "e.db"), max_bundle_entries=3,
                        validation_workers=0, terminology_seed=False, pathways_seed=False)
    async with client_for(settings) as c:
        entries = [{"resource": patient(), "request": {"method": "POST", "url": "Patient"}} for _ in range(4)]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        response = await c.post("/fhir", content=body(bundle), headers=FHIR_JSON)
        assert response.status_code == 413
        assert "limit is 3" in response.text
        assert "entry" not in (await c.get("/fhir/_history", params=changes_since_start())).json()


async def test_post_search_body_over_limit_is_413(tmp_path: Path) -> None:
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "s.db"), max_body_bytes=1024,
                        validation_workers=0, terminology_seed=False, pathways_seed=False)
    async with client_for(settings) as c:
        form = "family=" + "x" * 4000
        response = await c.post("/fhir/Patient/_search", content=form.encode(),
                                headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413
        assert issue_code(response) == "too-costly"
