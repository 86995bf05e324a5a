"""Fixtures for consent tests: the authorization tests' world (SMART on, real signed tokens) on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.auth.conftest import World, open_world


@pytest.fixture
async def world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, seeded_database) as found:
        yield found
