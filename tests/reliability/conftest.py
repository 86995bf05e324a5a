"""A small file system of the test's own (tmpfs), to fill up.

https://www.kernel.org/doc/html/latest/filesystems/tmpfs.html
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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
