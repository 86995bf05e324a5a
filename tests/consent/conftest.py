"""Consent tests use the authorization tests' world: SMART on, real signed tokens, stored patients."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.auth.conftest import (
    World,
    open_world,
    world,  # noqa: F401 -- the fixture, shared
)


@pytest.fixture
def world_with(tmp_path: Path, seeded_database: Path) -> Callable[..., AbstractAsyncContextManager[World]]:
    """A world with other settings (the consent policy, subscriptions)."""
    counter = iter(range(100))

    def make(**settings: Any) -> AbstractAsyncContextManager[World]:
        folder = tmp_path / f"w{next(counter)}"
        folder.mkdir()
        return open_world(folder, seeded_database, **settings)

    return make
