"""The audit trail's instant formatter agrees with the general one for every millisecond it may meet."""

from __future__ import annotations

import pytest

from consent.audit.clock import instant
from resources.search.dates import format_instant

MOMENTS = [0, 1, 999, 1000, 59_999, 60_000, 1_704_067_199_999, 1_704_067_200_000, 1_709_164_800_123,  # leap day
           1_767_225_599_999, 253_402_300_799_999, -1, -1001]


@pytest.mark.parametrize("ms", MOMENTS + [1_765_000_000_000 + n * 7_919 for n in range(200)])
def test_instant_is_format_instant(ms: int) -> None:
    assert instant(ms) == format_instant(ms)


def test_consecutive_and_interleaved_seconds() -> None:
    for ms in (5_000, 5_999, 4_999, 5_001, 6_000, 5_500):
        assert instant(ms) == format_instant(ms)
