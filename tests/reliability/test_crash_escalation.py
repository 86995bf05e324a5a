"""Escalation survives SIGKILL: every overdue Task is escalated once per level, with one Provenance each.

https://hl7.org/fhir/R4B/task.html, https://hl7.org/fhir/R4B/provenance.html
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import sound_chain, total

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_each_level_is_escalated_once_across_kills(tmp_path: Path, seeded_database: Path,
                                                         crash_seed: int) -> None:
    trials = await sound_chain("escalation", crash_seed, tmp_path / "escalation", seeded_database)
    assert total(trials, "tasks acknowledged") >= len(trials)
    assert total(trials, "escalations") == 2 * total(trials, "tasks stored")  # CARELOOP_ESCALATION_MAX_LEVEL=2
