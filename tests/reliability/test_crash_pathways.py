"""Pathway Task creation survives SIGKILL: every stored trigger has its Task exactly once, with one Provenance.

https://hl7.org/fhir/R4B/task.html, https://hl7.org/fhir/R4B/plandefinition.html
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import sound_chain, total

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_each_trigger_has_its_task_once_across_kills(tmp_path: Path, seeded_database: Path,
                                                           crash_seed: int) -> None:
    trials = await sound_chain("pathways", crash_seed, tmp_path / "pathways", seeded_database)
    assert total(trials, "observations acknowledged") >= len(trials)
    assert total(trials, "tasks") == total(trials, "observations stored") >= total(trials, "observations acknowledged")
