"""Patient/$tier's per-patient sums and counts on the MongoDB adapter: the aggregation pipeline gives what the
one-by-one computation gives (tests/server/test_cohort_store_aggregates.py), as SQLite's GROUP BY does.

https://hl7.org/fhir/R4B/operations.html https://www.mongodb.com/docs/manual/aggregation/
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.server.test_cohort_store_aggregates import check_store_aggregates_equal_python, check_tallies

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("seed", [31, 7])
async def test_store_aggregates_equal_the_one_by_one_computation_on_mongodb(client: httpx.AsyncClient,
                                                                            seed: int) -> None:
    await check_store_aggregates_equal_python(client, seed)


async def test_tallies_answer_per_group_on_mongodb(client: httpx.AsyncClient, app: FastAPI) -> None:
    await check_tallies(client, app)
