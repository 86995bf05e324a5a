"""The audit log as clients see it: one record per request, its AuditEvents materialised from it, one chain per
server instance, all verified by $verify-audit. Real HTTP (ASGI), signed tokens, SQLite files in tmp_path.

https://profiles.ihe.net/ITI/BALP/ (docs/audit.md, "The audit log")
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.audit.conftest import auditor, of_request, request_id, trail
from tests.auth.conftest import World, open_world

pytestmark = pytest.mark.anyio


def patients(event: dict[str, Any]) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", ()) if e.get("role", {}).get("code") == "1"]


async def searched_three(world: World) -> list[dict[str, Any]]:
    """A search whose answer holds three patients; its events, oldest first."""
    carol = (await world.client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=world.admin)).json()
    world.ids["carol"] = carol["id"]
    response = await world.client.get("/fhir/Patient?_count=50&_id=" + ",".join(
        world.ids[k] for k in ("alice", "bob", "carol")), headers={**world.admin, "X-Request-Id": "three"})
    assert response.status_code == 200 and len(response.json()["entry"]) == 3
    return of_request(await trail(world.client, await auditor(world)), "three")


async def test_a_search_of_three_patients_is_one_record_of_three_members(tmp_path: Path,
                                                                          seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        events = await searched_three(world)
        seqs = {e["id"].split("-")[0] for e in events}
        assert len(events) == 3 and len(seqs) == 1  # one record
        seq = next(iter(seqs))
        assert sorted(e["id"] for e in events) == [f"{seq}-{m}" for m in range(3)]
        assert sorted(p for e in events for p in patients(e)) == sorted(
            f"Patient/{world.ids[k]}" for k in ("alice", "bob", "carol"))
        headers = await auditor(world)
        # a per-member parameter finds that member only; a request-level one every member
        assert sorted(e["id"] for e in await trail(world.client, headers, **{"entity:identifier": "three"})) == \
            sorted(e["id"] for e in events)
        bob = await trail(world.client, headers, patient=world.ids["bob"], **{"entity-type": "1"})
        assert [e["id"] for e in of_request(bob, "three")] == [e["id"] for e in events if
                                                               patients(e) == [f"Patient/{world.ids['bob']}"]]
        everyone = (await world.client.get("/fhir/AuditEvent", params={
            "_id": ",".join(e["id"] for e in events), "outcome": "0", "_total": "accurate", "_count": "2"},
            headers=headers)).json()
        assert everyone["total"] == 3 and len(everyone["entry"]) == 2  # members counted, not records
        rest = await world.client.get(next(link["url"] for link in everyone["link"] if link["relation"] == "next")
                                      .removeprefix("http://testserver"), headers=headers)
        assert rest.status_code == 200, rest.text
        assert len(rest.json()["entry"]) == 1
        # read, vread and history of one member: one version, the same body
        one = events[1]
        read = await world.client.get(f"/fhir/AuditEvent/{one['id']}", headers=headers)
        assert read.status_code == 200 and read.json() == one and one["meta"]["versionId"] == "1"
        history = (await world.client.get(f"/fhir/AuditEvent/{one['id']}/_history", headers=headers)).json()
        assert [e["resource"]["id"] for e in history["entry"]] == [one["id"]]
        assert (await world.client.get(f"/fhir/AuditEvent/{one['id']}/_history/1", headers=headers)).json() == one
        for missing in (f"{one['id'].split('-')[0]}-9", "999999-0", "not-an-id"):
            gone = await world.client.get(f"/fhir/AuditEvent/{missing}", headers=headers)
            assert gone.status_code == 404 and gone.json()["resourceType"] == "OperationOutcome"
        refused = await world.client.get("/fhir/AuditEvent", params={"_sort": "outcome"}, headers=headers)
        assert refused.status_code == 400 and refused.json()["issue"][0]["code"] == "not-supported"
        assert (await world.client.put(f"/fhir/AuditEvent/{one['id']}", json=one, headers=world.admin)
                ).status_code == 405
    with sqlite3.connect(tmp_path / "fhir-audit.sqlite") as conn:
        (members,) = conn.execute("SELECT members FROM audit_record WHERE seq = ?",
                                  (int(one["id"].split("-")[0]),)).fetchone()
        per_member = conn.execute("SELECT param, member FROM audit_index WHERE seq = ? AND member >= 0",
                                  (int(one["id"].split("-")[0]),)).fetchall()
    assert members == 3
    assert {param for param, _ in per_member} <= {"patient", "entity", "_compartment"}  # the rest once, as -1


async def requests(world: World, count: int) -> None:
    for _ in range(count):
        assert (await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=world.admin)).status_code == 200


async def verified(world: World) -> dict[str, Any]:
    response = await world.client.get("/fhir/$verify-audit", headers=await auditor(world))
    assert response.status_code == 200, response.text
    return response.json()


def chains(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for parameter in report["parameter"]:
        if parameter["name"] == "chain":
            part = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]}
            found[part["id"]] = part
    return found


def result(report: dict[str, Any]) -> bool:
    return bool(next(p["valueBoolean"] for p in report["parameter"] if p["name"] == "result"))


async def test_each_instance_keeps_its_own_chain_and_verify_checks_every_one(tmp_path: Path,
                                                                             seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database, instance_id="east", audit_checkpoint_events=3) as world:
        await requests(world, 4)
    (tmp_path / "fhir.db").rename(tmp_path / "kept.db")  # the second server opens the same files
    async with open_world(tmp_path, seeded_database, instance_id="west", audit_checkpoint_events=3) as world:
        for path in ("fhir.db", "fhir.db-wal", "fhir.db-shm"):
            (tmp_path / path).unlink(missing_ok=True)
        await requests(world, 5)
        report = await verified(world)
        assert result(report), report
        found = chains(report)
        assert set(found) == {"east", "west"}
        assert found["east"]["sequence"] >= 4 and found["west"]["sequence"] >= 5
        assert found["east"]["signature"] == "valid" and found["west"]["signature"] == "valid"
        with sqlite3.connect(tmp_path / "fhir-audit.sqlite", isolation_level=None) as conn:
            (seq,) = conn.execute("SELECT seq FROM audit_record WHERE chain = 'east' AND n = 2").fetchone()
            conn.execute("UPDATE audit_record SET recorded = recorded + 1 WHERE seq = ?", (seq,))
        broken = await verified(world)
        assert not result(broken)
        part = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
                for p in next(p for p in broken["parameter"] if p["name"] == "break")["part"]}
        assert part["chain"] == "east" and part["sequence"] == 2 and part["problem"] == "altered"
        assert part["event"] == {"reference": f"AuditEvent/{seq}-0"}


async def test_without_a_configured_instance_the_chain_id_is_kept_in_the_audit_file(tmp_path: Path,
                                                                                    seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        await requests(world, 2)
        first = world.app.state.services.audit.recorder.chain
        head = world.app.state.services.audit.recorder.head[0]
    (tmp_path / "fhir.db").unlink()
    async with open_world(tmp_path, seeded_database) as world:
        recorder = world.app.state.services.audit.recorder
        assert recorder.chain == first and recorder.head[0] >= head  # the same chain goes on
        await requests(world, 1)
        report = await verified(world)
        assert result(report) and set(chains(report)) == {first}
        events = await trail(world.client, await auditor(world))
        assert all(request_id(e) is None or e["id"].count("-") == 1 for e in events)


async def test_the_type_history_pages_newest_first_to_the_end(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        await requests(world, 5)
        headers = await auditor(world)
        seen: list[str] = []
        url: str | None = "/fhir/AuditEvent/_history?_count=2"
        while url is not None and len(seen) < 100:
            page = (await world.client.get(url, headers=headers)).json()
            seen.extend(e["resource"]["id"] for e in page.get("entry", []))
            url = next((link["url"].removeprefix("http://testserver") for link in page.get("link", [])
                        if link["relation"] == "next"), None)
        assert len(seen) == len(set(seen)) >= 5  # every event once, and the pages end
        records = [int(i.split("-")[0]) for i in seen]
        assert records == sorted(records, reverse=True)
