"""Keep the serving process's heap small: freed start-up memory goes back, and threads share few arenas.

Start-up builds and drops large temporary structures (the JSON schema, terminology content, the search
registry); glibc keeps the freed pages in the process unless asked, about 30 MB of resident memory here.
Under load, glibc gives each thread that contends for the heap an arena of its own; memory freed in one
(bodies a reader thread restored, then evicted from the memo by another) is not reused by the others, so a
process with a few threads settles at up to twice what it holds. https://man7.org/linux/man-pages/man3/malloc_trim.3.html,
https://man7.org/linux/man-pages/man3/mallopt.3.html
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

_M_ARENA_MAX = -8  # glibc's malloc.h


def _libc_function(name: str) -> Any:
    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name) if library else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return freed heap pages to the system; False where the C library has no malloc_trim."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def limit_arenas(arenas: int) -> bool:
    """Let threads created from now on share at most `arenas` malloc arenas (0 keeps the C library's default).

    False where the C library has no mallopt or refused the limit.
    """
    if arenas <= 0:
        return False
    mallopt = _libc_function("mallopt")
    # threads keep per-thread caches of small blocks (glibc's tcache), so sharing an arena costs little
    return mallopt is not None and mallopt(_M_ARENA_MAX, arenas) == 1
