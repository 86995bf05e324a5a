"""Create, read, vread, update, delete and history through the HTTP API.

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import FHIR_JSON, body, changes_since_start, create, issue_code
from tests.factories import patient

pytestmark = pytest.mark.anyio


async def test_create_assigns_id_and_version(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", content=body(patient(id="client-chosen")), headers=FHIR_JSON)
    assert response.status_code == 201
    stored = response.json()
    assert stored["id"] != "client-chosen"
    assert stored["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"http://testserver/fhir/Patient/{stored['id']}/_history/1"
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in response.headers


async def test_read_returns_stored_resource(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    response = await client.get(f"/fhir/Patient/{stored['id']}")
    assert response.status_code == 200
    assert response.json() == stored
    assert response.headers["etag"] == 'W/"1"'


async def test_read_unknown_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Patient/nope")
    assert response.status_code == 404
    assert issue_code(response) == "not-found"


async def test_read_unknown_type_is_404_not_supported(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Unicorn/1")
    assert response.status_code == 404
    assert issue_code(response) == "not-supported"


async def test_update_creates_new_version_and_vread_keeps_old(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    changed = {**stored, "active": True}
    response = await client.put(f"/fhir/Patient/{stored['id']}", content=body(changed), headers=FHIR_JSON)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    old = await client.get(f"/fhir/Patient/{stored['id']}/_history/1")
    assert old.status_code == 200
    assert "active" not in old.json()
    new = await client.get(f"/fhir/Patient/{stored['id']}/_history/2")
    assert new.json()["active"] is True
    missing = await client.get(f"/fhir/Patient/{stored['id']}/_history/9")
    assert missing.status_code == 404


async def test_update_as_create_with_client_id(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient/pat-1", content=body(patient(id="pat-1")), headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.json()["id"] == "pat-1"
    again = await client.put("/fhir/Patient/pat-1", content=body(patient(id="pat-1")), headers=FHIR_JSON)
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "2"


async def test_update_id_mismatch_is_400_and_stores_nothing(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient/a1", content=body(patient(id="b2")), headers=FHIR_JSON)
    assert response.status_code == 400
    assert issue_code(response) == "invalid"
    assert (await client.get("/fhir/Patient/a1")).status_code == 404
    assert (await client.get("/fhir/Patient/b2")).status_code == 404


async def test_update_without_id_in_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient/a1", content=body(patient()), headers=FHIR_JSON)
    assert response.status_code == 400
    assert issue_code(response) == "required"


async def test_if_match_mismatch_is_412(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    url = f"/fhir/Patient/{stored['id']}"
    ok = await client.put(url, content=body(stored), headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = await client.put(url, content=body(stored), headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert issue_code(stale) == "conflict"
    assert (await client.get(url)).json()["meta"]["versionId"] == "2"


async def test_if_none_match_gives_304(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    response = await client.get(f"/fhir/Patient/{stored['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304
    changed = await client.get(f"/fhir/Patient/{stored['id']}", headers={"If-None-Match": 'W/"7"'})
    assert changed.status_code == 200


async def test_delete_then_read_is_410_and_history_keeps_versions(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    url = f"/fhir/Patient/{stored['id']}"
    deleted = await client.delete(url)
    assert deleted.status_code == 200
    assert deleted.headers["etag"] == 'W/"2"'
    gone = await client.get(url)
    assert gone.status_code == 410
    assert issue_code(gone) == "deleted"
    assert (await client.get(f"{url}/_history/1")).status_code == 200
    assert (await client.get(f"{url}/_history/2")).status_code == 410
    history = (await client.get(f"{url}/_history")).json()
    assert [e["response"]["status"] for e in history["entry"]] == ["410 Gone", "201 Created"]
    assert history["entry"][0]["request"]["method"] == "DELETE"
    again = await client.delete(url)
    assert again.status_code == 200
    search = (await client.get("/fhir/Patient")).json()
    assert "entry" not in search


async def test_update_after_delete_resurrects(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    url = f"/fhir/Patient/{stored['id']}"
    await client.delete(url)
    response = await client.put(url, content=body(stored), headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"


async def test_delete_of_absent_resource_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.delete("/fhir/Patient/never-was")
    assert response.status_code == 200
    assert response.json()["issue"][0]["severity"] == "information"


async def test_patch_applies_json_patch(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    patch = [{"op": "replace", "path": "/name/0/family", "value": "Jones"}, {"op": "add", "path": "/active",
                                                                              "value": True}]
    response = await client.patch(f"/fhir/Patient/{stored['id']}", content=body(patch),
                                  headers={"content-type": "application/json-patch+json", "If-Match": 'W/"1"'})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["name"][0]["family"] == "Jones"
    assert patched["active"] is True
    assert patched["meta"]["versionId"] == "2"


async def test_patch_that_breaks_the_resource_is_refused(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    patch = [{"op": "add", "path": "/birthDate", "value": "2023-02-30"}]
    response = await client.patch(f"/fhir/Patient/{stored['id']}", content=body(patch),
                                  headers={"content-type": "application/json-patch+json"})
    assert response.status_code == 400
    assert (await client.get(f"/fhir/Patient/{stored['id']}")).json()["meta"]["versionId"] == "1"


async def test_patch_failing_test_op_is_422(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    patch = [{"op": "test", "path": "/name/0/family", "value": "Nobody"}]
    response = await client.patch(f"/fhir/Patient/{stored['id']}", content=body(patch),
                                  headers={"content-type": "application/json-patch+json"})
    assert response.status_code == 422
    assert issue_code(response) == "processing"


async def test_patch_may_not_change_id(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    patch = [{"op": "replace", "path": "/id", "value": "other"}]
    response = await client.patch(f"/fhir/Patient/{stored['id']}", content=body(patch),
                                  headers={"content-type": "application/json-patch+json"})
    assert response.status_code == 400


async def test_patch_of_missing_resource_is_404(client: httpx.AsyncClient) -> None:
    response = await client.patch("/fhir/Patient/nope", content=body([]),
                                  headers={"content-type": "application/json-patch+json"})
    assert response.status_code == 404


async def test_history_levels_and_paging(client: httpx.AsyncClient) -> None:
    first = await create(client, patient(family="One"))
    await create(client, patient(family="Two"))
    await client.put(f"/fhir/Patient/{first['id']}", content=body({**first, "active": True}), headers=FHIR_JSON)
    await client.post("/fhir/Observation", headers=FHIR_JSON, content=body(
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}))
    type_history = (await client.get("/fhir/Patient/_history")).json()
    assert type_history["type"] == "history"
    assert len(type_history["entry"]) == 3
    system = (await client.get("/fhir/_history", params=changes_since_start())).json()
    assert len(system["entry"]) == 4
    seen: list[str] = []
    url: str | None = f"/fhir/_history?_count=1&_since={changes_since_start()['_since']}"
    while url:
        page = (await client.get(url)).json()
        seen.extend(f"{e['fullUrl']}|{e['response']['etag']}" for e in page["entry"])
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0] if nxt else None
        assert url is None or url.startswith("http://testserver/fhir/_history?")
    assert len(seen) == len(set(seen)) == 4


async def test_history_since_and_at(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    stamp = stored["meta"]["lastUpdated"]
    await client.put(f"/fhir/Patient/{stored['id']}", content=body({**stored, "active": True}), headers=FHIR_JSON)
    since = (await client.get("/fhir/Patient/_history", params={"_since": stamp})).json()
    assert len(since["entry"]) == 2
    future = (await client.get("/fhir/Patient/_history", params={"_since": "2999-01-01"})).json()
    assert "entry" not in future
    at = (await client.get(f"/fhir/Patient/{stored['id']}/_history", params={"_at": "2000-01-01"})).json()
    assert "entry" not in at
    bad = await client.get("/fhir/Patient/_history", params={"_since": "yesterday"})
    assert bad.status_code == 400


async def test_history_of_unknown_instance_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Patient/none/_history")
    assert response.status_code == 404


async def test_fhirpath_patch_over_http(client: httpx.AsyncClient) -> None:
    stored = await create(client, patient())
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.name[0].family"},
        {"name": "value", "valueString": "Patched"}]}]}
    response = await client.patch(f"/fhir/Patient/{stored['id']}", content=body(parameters), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert response.json()["name"][0]["family"] == "Patched"
    wrong_shape = await client.patch(f"/fhir/Patient/{stored['id']}", content=body([]), headers=FHIR_JSON)
    assert wrong_shape.status_code == 400
