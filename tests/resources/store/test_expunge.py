"""Expunge on the SQLite store (the shared behaviour is in expunge_check.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from resources.models import resource_types
from resources.repository import Repository
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import default_registry
from resources.store.sqlite.store import SqliteStore
from tests.resources.store.expunge_check import check_expunge

pytestmark = pytest.mark.anyio


async def test_expunge_removes_for_good(tmp_path: Path) -> None:
    registry = default_registry(resource_types())
    store = SqliteStore(str(tmp_path / "e.db"), subsumed=registry.subsumed)
    await store.open()
    try:
        await check_expunge(store, Repository(store, registry, Indexer(registry, load_patient_compartment())))
    finally:
        await store.close()
