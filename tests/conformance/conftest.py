"""The store conformance suite: the store-level behaviour tests of the foundation and search issues, run on
the MongoDB adapter (they run on SQLite where they are defined, under tests/server and tests/resources).

MongoDB: a real server when CARELOOP_TEST_MONGODB_URL is set (a replica set), otherwise the in-process
stand-in; the test header (tests/conftest.py) says which.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from server.app import create_app
from server.settings import Settings
from tests.auth.conftest import FHIR, World, build_world
from tests.support.mongo_standin import StandInClient

MONGODB_URL = os.environ.get("CARELOOP_TEST_MONGODB_URL")


def mongo_settings(**overrides: Any) -> tuple[Settings, Any]:
    """Settings for a MongoDB-backed app on a fresh database, and the client to give it (None: connect)."""
    database = f"careloop_test_{uuid.uuid4().hex[:12]}"
    options: dict[str, Any] = {"auth": "off", **overrides}
    settings = Settings(store="mongodb", mongodb_url=MONGODB_URL or "mongodb://standin",
                        mongodb_database=database if MONGODB_URL else "careloop", validation_workers=0,
                        terminology_seed=False, pathways_seed=False, **options)
    return settings, None if MONGODB_URL else StandInClient()


@pytest.fixture
def settings() -> Settings:
    return mongo_settings()[0]


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    _, client = mongo_settings()
    application = create_app(settings, mongo_client=client)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """The authorization tests' world (tests/auth), on the MongoDB adapter."""
    settings, client = mongo_settings(auth="on", auth_db=str(tmp_path / "auth.db"), base_url=FHIR)
    async with build_world(create_app(settings, mongo_client=client)) as found:
        yield found


@pytest.fixture
def world_with(tmp_path: Path) -> Any:
    """A world with other settings (tests/consent), on the MongoDB adapter."""
    counter = iter(range(100))

    def make(**overrides: Any) -> Any:
        folder = tmp_path / f"w{next(counter)}"
        folder.mkdir()
        settings, client = mongo_settings(**{"auth": "on", "auth_db": str(folder / "auth.db"), "base_url": FHIR,
                                            **overrides})
        return build_world(create_app(settings, mongo_client=client))

    return make
