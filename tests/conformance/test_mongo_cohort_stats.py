"""$cohort-stats on the MongoDB adapter: the aggregation pipeline counts what SQLite's GROUP BY counts.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

import httpx
import pytest

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
