"""Fixtures of the reliability tests: seeded crash trials, and a small file system of the test's own to fill up.

Crash trials: a few seeded kills per scenario (bench/crash_trials.py runs the hundred). The seed is random unless
CARELOOP_CRASH_SEED gives it, and every failure message names it, so a failing chain can be run again:
`CARELOOP_CRASH_SEED=<seed> pytest tests/reliability/test_crash_<scenario>.py`. The small disk is a tmpfs,
https://www.kernel.org/doc/html/latest/filesystems/tmpfs.html
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Iterator
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


DISK_MIB = 24


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MIB mounted for the test (root only), always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    folder = tmp_path / "data"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the file system refuses with ENOSPC (smaller and smaller blocks at the end)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as file:
        block = 1024 * 1024
        while block >= 512:
            try:
                file.write(bytes(block))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                block //= 2
    return filler
