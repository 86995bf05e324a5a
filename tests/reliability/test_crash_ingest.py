"""Transaction ingest survives SIGKILL: no bundle partly stored, every acknowledged version readable, files sound.

https://hl7.org/fhir/R4B/http.html#transaction
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import sound_chain, total

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_transactions_are_all_or_nothing_across_kills(tmp_path: Path, seeded_database: Path,
                                                            crash_seed: int) -> None:
    trials = await sound_chain("ingest", crash_seed, tmp_path / "ingest", seeded_database)
    # the kills hit load in flight: bundles were answered before each one, and every answered one was checked
    assert total(trials, "bundles acknowledged") >= len(trials)
    assert total(trials, "acknowledged versions found") == 6 * total(trials, "bundles acknowledged")
    assert total(trials, "acknowledged requests audited") == total(trials, "bundles acknowledged")
    assert total(trials, "chain verifications") == 1
