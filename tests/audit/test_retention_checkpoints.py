"""A retention export carries the signed chain checkpoints that cover its events, verifiable with /auth/jwks.

https://profiles.ihe.net/ITI/BALP/ (SECURITY.md §4; docs/audit.md, Retention)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from consent.audit.chain import CHECKPOINT_TYPE, GENESIS, link_of
from consent.retention import DAY_MS, export_expired
from resources.ids import now_ms
from tests.auth.conftest import open_world

pytestmark = pytest.mark.anyio


async def test_export_carries_the_signed_checkpoints_covering_its_events(tmp_path: Path,
                                                                         seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database, audit_checkpoint_events=3) as world:
        alice = f"/fhir/Patient/{world.ids['alice']}"
        for _ in range(7):  # expired: recorded before the cutoff
            assert (await world.client.get(alice, headers=world.admin)).status_code == 200
        await asyncio.sleep(0.01)
        cutoff = now_ms()
        await asyncio.sleep(0.01)
        for _ in range(5):  # kept: their checkpoint covers the last expired event
            assert (await world.client.get(alice, headers=world.admin)).status_code == 200
        out = tmp_path / "expired.ndjson"
        done = await export_expired(world.app.state.services.repository, out, 1, now=cutoff + DAY_MS)
        keys = (await world.client.get("/auth/jwks")).json()

    events = sorted((orjson.loads(line) for line in out.read_bytes().splitlines()),
                    key=lambda e: link_of(e).sequence)  # type: ignore[union-attr]
    links = [link_of(e) for e in events]
    assert done.count == len(events) >= 7
    assert [k.sequence for k in links] == list(range(1, len(events) + 1))  # type: ignore[union-attr]
    assert [k.previous for k in links] == [GENESIS] + [k.hash for k in links[:-1]]  # type: ignore[union-attr]
    last = links[-1].sequence  # type: ignore[union-attr]

    manifest = orjson.loads(out.with_name(out.name + ".manifest.json").read_bytes())
    points = manifest["checkpoints"]
    assert manifest["last_sequence"] == last
    assert points, "an export names the checkpoints that cover its events"
    assert [p["sequence"] for p in points] == sorted(p["sequence"] for p in points)
    assert points[-1]["sequence"] >= last > (points[-2]["sequence"] if len(points) > 1 else 0)  # up to the first
    hashes = {k.sequence: k.hash for k in links}  # type: ignore[union-attr]
    for point in points:
        claims = jwt.decode(point["jws"], KeySet.import_key_set(keys), algorithms=["RS256"])
        assert claims.header["typ"] == CHECKPOINT_TYPE
        assert (claims.claims["seq"], claims.claims["hash"]) == (point["sequence"], point["hash"])
        if point["sequence"] in hashes:  # a checkpoint inside the export signs that very event's hash
            assert hashes[point["sequence"]] == point["hash"]
    assert any(p["sequence"] in hashes for p in points)


async def test_an_export_of_nothing_names_no_checkpoint(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database, audit_checkpoint_events=1) as world:
        assert (await world.client.get("/fhir/Patient", headers=world.admin)).status_code == 200
        out = tmp_path / "none.ndjson"
        done = await export_expired(world.app.state.services.repository, out, 1)
    manifest = orjson.loads(out.with_name(out.name + ".manifest.json").read_bytes())
    assert done.count == 0 and manifest["checkpoints"] == [] and manifest["last_sequence"] == 0
