"""The 16 Synthea patients as a realistic population: segments persisted, statistics that add up.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from server.settings import Settings
from tests.conftest import FHIR_JSON, client_for
from tests.server.test_cohort import results
from tests.server.test_cohort_segments import post
from tests.server.test_cohort_stats import tables, value
from tests.server.test_synthea import BUNDLES

pytestmark = pytest.mark.anyio


async def test_synthea_patients_are_segmented_and_their_statistics_add_up(tmp_path: Path,
                                                                          seeded_database: Path) -> None:
    shutil.copyfile(seeded_database, tmp_path / "s.db")
    settings = Settings(auth="off", sqlite_path=str(tmp_path / "s.db"), validation_workers=0,
                        cohort_recompute_seconds=0)
    async with client_for(settings) as client:
        for path in BUNDLES:
            response = await client.post("/fhir", content=path.read_bytes(),
                                         headers={**FHIR_JSON, "Prefer": "return=minimal"})
            assert response.status_code == 200, response.text[:300]
        tiers = await post(client, "/fhir/Patient/$tier", persist=True)
        found = results(tiers)
        assert len(found) == 16
        # Synthea's records are clinical: chronic conditions and long histories
        health = {p["health-status"][0][0]["valueCoding"]["code"] for p in found.values()}
        assert "chronic" in health or "severe" in health
        await post(client, "/fhir/Patient/$churn-risk", persist=True)
        answer = (await client.get("/fhir/$cohort-stats")).json()
        assert value(answer, "total") == 16
        stats = tables(answer)
        for dimension in ("tier", "lifecycle", "age-band", "sex", "region", "churn"):
            assert sum(stats[dimension].values()) == 16, dimension
        assert "unknown" not in stats["tier"] and "unknown" not in stats["lifecycle"]
        assert "unknown" not in stats["churn"] and "unknown" not in stats["sex"]
        counted = {t: sum(1 for p in found.values() if p["tier"][0]["code"] == t) for t in "ABC"}
        assert stats["tier"] == {t: n for t, n in counted.items() if n}
        assert sum(stats[("tier", "age-band")].values()) == 16
