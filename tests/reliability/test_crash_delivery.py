"""Rest-hook delivery survives SIGKILL: every committed event reaches a receiver that fails a quarter of the time,
at least once and always under the same event number.

https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/notifications.html#event-numbering
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import sound_chain, total

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_every_committed_event_is_delivered_across_kills(tmp_path: Path, seeded_database: Path,
                                                               crash_seed: int) -> None:
    trials = await sound_chain("delivery", crash_seed, tmp_path / "delivery", seeded_database)
    assert total(trials, "writes acknowledged") >= len(trials)
    assert total(trials, "events committed") >= total(trials, "writes acknowledged")
    assert total(trials, "notifications refused by the receiver") > 0  # the retries were exercised
    assert total(trials, "acknowledged requests audited") == total(trials, "writes acknowledged")
