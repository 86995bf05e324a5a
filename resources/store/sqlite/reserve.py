"""The data folder's reserve: room kept back so that the audit trail can still be written when the disk fills.

A file of a configured size (`careloop.reserve`) holds the room. When free space runs low, or a write finds the
disk full, the file is removed: from then on clinical writes are refused (507) and only the audit trail may use
that room, so reads (each recorded before it is answered) keep working. Once the file system has room for the
reserve twice over, the file is made again and writes resume, without a restart.
https://www.sqlite.org/rescode.html#full
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

from resources.errors import InsufficientStorage, Unavailable

log = logging.getLogger("careloop.store")
NAME = "careloop.reserve"
_MIB = 1024 * 1024
_CHUNK = _MIB


class DiskReserve:
    """The reserve of one data folder, shared by every store writing there (one lock: two writer threads)."""

    def __init__(self, folder: Path, mib: float) -> None:
        self.path = folder / NAME
        self.size = int(mib * _MIB)
        self.low = max(self.size // 4, 64 * 1024)  # free space below this releases the reserve before a write
        self._lock = threading.Lock()
        self._held = False
        self._opened = False

    @property
    def problem(self) -> str | None:
        """Why clinical writes are refused now; None while the reserve is held."""
        if self.size <= 0 or self._held or not self._opened:
            return None
        return (f"the file system of {self.path.parent} is full: writes are refused until "
                f"{2 * self.size / _MIB:g} MiB are free again")

    def free(self) -> int:
        """Bytes an unprivileged writer may still use on the folder's file system; Unavailable when it fails."""
        try:
            stat = os.statvfs(self.path.parent)
        except OSError as exc:  # a file system gone bad (I/O error, shut down): no write can be trusted to it
            raise Unavailable(f"The data folder cannot be used now ({exc}); nothing was written", code="no-store",
                              headers={"retry-after": "60"}) from exc
        return stat.f_bavail * stat.f_frsize

    def open(self) -> None:
        """Hold the reserve (an existing file of the right size counts); blocking, so on a store's thread."""
        if self.size <= 0:
            return
        with self._lock:
            if self._opened:
                return
            self._opened = True
            try:
                held = self.path.stat().st_size >= self.size
            except FileNotFoundError:
                held = False
            self._held = held or self._make()

    def before_write(self, *, essential: bool) -> None:
        """Check room before a write transaction; InsufficientStorage for a clinical write while the disk is full.

        An essential write (the audit trail) is never refused here: it may use the released reserve.
        """
        if self.size <= 0:
            return
        self.open()
        with self._lock:
            free = self.free()
            if not self._held and free >= 2 * self.size:
                self._held = self._make()
                if self._held:
                    log.warning("Disk space returned in %s: the reserve is held again and writes resume",
                                self.path.parent)
            elif self._held and free < self.low:
                self._release("free space ran low")
            held = self._held
        if not essential and not held:
            raise self.refusal()

    def state(self) -> str:
        """'ok', or why writes are refused now; takes the reserve again once space has returned (blocking)."""
        try:
            self.before_write(essential=True)
        except Unavailable as exc:
            return exc.diagnostics
        return self.problem or "ok"

    def on_full(self) -> None:
        """A write found the disk full: release the reserve so the audit trail can record the refusal."""
        if self.size <= 0:
            return
        with self._lock:
            if self._held:
                self._release("a write found the disk full")

    def refusal(self) -> InsufficientStorage:
        """The error a refused write answers with."""
        return InsufficientStorage(f"The server cannot store data now: {self.problem or 'the disk is full'}. "
                                   f"Nothing was written; try again later", headers={"retry-after": "60"})

    def _release(self, why: str) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:  # still counted as released: clinical writes must stop either way
            log.error("Cannot remove the disk reserve %s: %s", self.path, exc)
        self._held = False
        log.error("Disk full in %s (%s): the reserve is released for the audit trail; writes are refused",
                  self.path.parent, why)

    def _make(self) -> bool:
        try:
            with open(self.path, "wb") as file:
                try:
                    os.posix_fallocate(file.fileno(), 0, self.size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    # a file system without fallocate: write the blocks out
                    for _ in range(0, self.size, _CHUNK):
                        file.write(bytes(_CHUNK))
            return True
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            log.error("Cannot make the disk reserve %s (%s): writes are refused until there is room",
                      self.path, exc)
            return False
