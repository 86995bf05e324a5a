"""A server killed with SIGKILL leaves no process behind: its validation workers exit with it.

Found by the crash trials (issue 34): each killed server left its model workers (about 120 MB each) and their
resource tracker running, orphaned, for good; a hundred crashes held 9 GB.
https://docs.python.org/3/library/multiprocessing.html#multiprocessing.parent_process
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from bench.crash_trials import alive, children
from tests.conftest import free_port, serving

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")


def test_validation_workers_exit_when_the_server_is_killed(tmp_path: Path, seeded_database: Path) -> None:
    db = tmp_path / "careloop.db"
    shutil.copyfile(seeded_database, db)
    port = free_port()
    env = {**os.environ, "CARELOOP_AUTH": "off", "CARELOOP_LOG_LEVEL": "warning", "CARELOOP_VALIDATION_WORKERS": "2"}
    with serving(port, db, env, f"http://127.0.0.1:{port}/fhir") as process:
        deadline = time.monotonic() + 60
        while len(workers := children(process.pid)) < 3:  # two workers and the resource tracker
            assert time.monotonic() < deadline, f"the workers did not start: {workers}"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    deadline = time.monotonic() + 20
    while left := {pid for pid in workers if alive(pid)}:
        if time.monotonic() > deadline:
            for pid in left:  # this test's own leftovers, by their ids
                os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"processes of the killed server still run: {sorted(left)}")
        time.sleep(0.2)
