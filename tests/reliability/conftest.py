"""Crash trials in the test suite: a few seeded kills per scenario (bench/crash_trials.py runs the hundred).

The seed is random unless CARELOOP_CRASH_SEED gives it, and every failure message names it, so a failing chain
can be run again: `CARELOOP_CRASH_SEED=<seed> pytest tests/reliability/test_crash_<scenario>.py`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bench.crash_trials import Trial, run_chain

TRIALS = 5


@pytest.fixture
def crash_seed() -> int:
    """This run's seed of the kill delays (and of the flaky receiver's answers)."""
    return int(os.environ.get("CARELOOP_CRASH_SEED") or random.randrange(1_000_000))


async def sound_chain(name: str, seed: int, folder: Path, template: Path) -> list[Trial]:
    """Run TRIALS kills of a scenario on a copy of the seeded store and fail, naming the seed, on any fault."""
    trials = await run_chain(name, TRIALS, seed, folder, template, echo=False)
    faults = [f"trial {t.number} (kill after {t.delay} s): {f}" for t in trials for f in t.faults]
    assert not faults, f"CARELOOP_CRASH_SEED={seed}: " + "\n".join(faults)
    assert len(trials) == TRIALS
    return trials


def total(trials: list[Trial], counter: str) -> int:
    """A counter summed over the trials."""
    return sum(t.counts.get(counter, 0) for t in trials)
