"""Expunge on the MongoDB adapter (the shared behaviour is in tests/resources/store/expunge_check.py)."""

from __future__ import annotations

import pytest

from resources.models import resource_types
from resources.repository import Repository
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.mongo.store import MongoStore
from tests.conformance.conftest import mongo_settings
from tests.resources.store.expunge_check import check_expunge

pytestmark = pytest.mark.anyio


async def test_expunge_removes_for_good() -> None:
    settings, client = mongo_settings()
    store = MongoStore(settings.mongodb_url, settings.mongodb_database, client=client)
    await store.open()
    registry = default_registry(resource_types())
    try:
        await check_expunge(store, Repository(store, registry, Indexer(registry, load_patient_compartment())))
    finally:
        await store.close()
