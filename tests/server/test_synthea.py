"""All 16 Synthea patients load as transaction bundles with every urn:uuid reference resolved.

https://hl7.org/fhir/R4B/http.html#transaction
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.settings import Settings
from tests.conftest import DATA, FHIR_JSON, changes_since_start, client_for

pytestmark = pytest.mark.anyio


def collect_references(value: Any, out: set[str]) -> set[str]:
    """Every Reference.reference string inside value."""
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            out.add(value["reference"])
        for item in value.values():
            collect_references(item, out)
    elif isinstance(value, list):
        for item in value:
            collect_references(item, out)
    return out
BUNDLES = sorted((DATA / "synthea").glob("*.json"))


async def test_synthea_bundles_load_and_resolve(tmp_path: Path, seeded_database: Path) -> None:
    assert len(BUNDLES) == 16
    # the device-reading rules are in force (Synthea's vitals carry the UCUM units their codes accept), and
    # one validation worker process runs, as in production, so the parallel path is exercised too
    shutil.copyfile(seeded_database, tmp_path / "s.db")
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "s.db"), validation_workers=1)
    async with client_for(settings) as client:
        total = 0
        for path in BUNDLES:
            raw = path.read_bytes()
            entries = len(orjson.loads(raw)["entry"])
            response = await client.post("/fhir", content=raw, headers={**FHIR_JSON, "Prefer": "return=minimal"})
            assert response.status_code == 200, f"{path.name}: {response.text[:500]}"
            statuses = {e["response"]["status"] for e in response.json()["entry"]}
            assert statuses == {"201 Created"}
            total += entries
        assert total == 3108
        since = changes_since_start()["_since"]
        history = (await client.get("/fhir/_history", params={"_count": "1000", "_since": since})).json()
        checked = 0
        resolved: set[str] = set()
        url: str | None = f"/fhir/_history?_count=1000&_since={since}"
        while url:
            page = (await client.get(url)).json()
            for entry in page["entry"]:
                for ref in collect_references(entry["resource"], set()):
                    assert not ref.startswith("urn:uuid:"), f"unresolved {ref} in {entry['fullUrl']}"
                    if ref.startswith("#") or ref in resolved:
                        continue  # a contained resource, or already checked
                    resolved.add(ref)
                    kind, id_ = ref.split("/")[-2:]
                    target = await client.get(f"/fhir/{kind}/{id_}")
                    assert target.status_code == 200, f"{entry['fullUrl']} -> {ref}"
                    checked += 1
            nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
            url = nxt[0].replace("http://testserver", "") if nxt else None
        assert history["type"] == "history"
        assert checked > 1000
