"""$cohort-stats on the MongoDB adapter: the aggregation pipeline counts what SQLite's GROUP BY counts.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import create
from tests.factories import patient
from tests.server.test_cohort import CARELOOP, results
from tests.server.test_cohort_stats import populate, tables, value

pytestmark = pytest.mark.anyio


async def test_counts_and_cross_tabs_equal_hand_counts_on_mongodb(client: httpx.AsyncClient) -> None:
    await populate(client)
    answer = (await client.get("/fhir/$cohort-stats", params=[("cross", "tier|age-band")])).json()
    assert value(answer, "total") == 5
    found = tables(answer)
    assert found["tier"] == {"A": 2, "B": 1, "C": 2}
    assert found["age-band"] == {"<35": 1, "35-50": 2, ">50": 1, "unknown": 1}
    assert found["region"] == {"CA": 2, "NY": 2, "unknown": 1}
    assert found["churn"] == {"low": 2, "moderate": 1, "high": 2}
    assert found[("tier", "age-band")] == {("A", "<35"): 1, ("A", "35-50"): 1, ("B", "35-50"): 1,
                                           ("C", ">50"): 1, ("C", "unknown"): 1}


async def test_tier_without_terminology_falls_back_to_exact_codes(client: httpx.AsyncClient) -> None:
    # this folder's servers start without the shipped terminology (no CodeSystems, no ValueSets)
    pid = (await create(client, patient()))["id"]
    await create(client, {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                          "category": [{"coding": [{"system": f"{CARELOOP}service-type",
                                                    "code": "health-management"}]}],
                          "subject": {"reference": f"Patient/{pid}"}})
    response = await client.get(f"/fhir/Patient/{pid}/$tier")
    assert response.status_code == 200, response.text
    found = results(response.json())[pid]
    assert found["programme"] == [True] and found["tier"][0]["code"] == "A"
