"""Leases on background jobs: of several instances on one store, one holds a job at a time, and a lease that runs
out (its holder died) passes to another. Table-driven over both stores, two store objects standing for two
instances (the three-process test in test_three_instances.py runs them as real processes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from resources.store.mongo.store import MongoStore
from resources.store.sqlite.store import SqliteStore
from tests.conformance.conftest import mongo_settings

pytestmark = pytest.mark.anyio

# (who, what, seconds, expected): claim answers True/False, release answers None; "wait" sleeps `seconds`
STEPS: list[tuple[str, str, float, bool | None]] = [
    ("a", "claim", 5, True),    # a free job: taken
    ("b", "claim", 5, False),   # a running lease: refused
    ("a", "claim", 5, True),    # its holder renews
    ("b", "release", 0, None),  # not b's to give up: nothing happens
    ("b", "claim", 5, False),
    ("a", "release", 0, None),  # given up: free at once
    ("b", "claim", 0.2, True),
    ("a", "claim", 5, False),
    ("-", "wait", 0.4, None),   # b's lease ran out (b died)
    ("a", "claim", 5, True),    # so a takes over
    ("b", "claim", 5, False),   # and b, back, does not take it again
]


@pytest.fixture(params=["sqlite", "mongodb"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """Two store objects on one store, as two instances see it."""
    if request.param == "sqlite":
        stores: list[Any] = [SqliteStore(str(tmp_path / "shared.db")) for _ in range(2)]
    else:
        settings, client = mongo_settings()
        stores = [MongoStore(settings.mongodb_url, settings.mongodb_database, client=client) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        yield stores[0], stores[1]
    finally:
        for store in stores:
            await store.close()


async def test_one_holder_at_a_time_and_takeover_after_expiry(pair: tuple[Any, Any]) -> None:
    stores = {"a": pair[0], "b": pair[1]}
    for n, (who, what, seconds, expected) in enumerate(STEPS):
        if what == "wait":
            await asyncio.sleep(seconds)
            continue
        if what == "claim":
            assert await stores[who].claim("job", who, seconds) is expected, f"step {n}: {who} {what}"
        else:
            await stores[who].release("job", who)


async def test_jobs_are_independent(pair: tuple[Any, Any]) -> None:
    assert await pair[0].claim("engine", "a", 5)
    assert await pair[1].claim("escalation", "b", 5)
    assert not await pair[1].claim("engine", "b", 5)
    assert not await pair[0].claim("escalation", "a", 5)


async def test_concurrent_claims_give_the_job_to_exactly_one(pair: tuple[Any, Any]) -> None:
    results = await asyncio.gather(*(pair[n % 2].claim("race", f"holder-{n}", 5) for n in range(10)))
    assert sum(results) == 1
