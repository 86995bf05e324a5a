"""Hand the heap that start-up freed back to the operating system (glibc's malloc_trim).

Start-up builds and drops large temporary structures (the JSON schema, terminology content, the search
registry); glibc keeps the freed pages in the process unless asked, about 30 MB of resident memory here.
https://man7.org/linux/man-pages/man3/malloc_trim.3.html
"""

from __future__ import annotations

import ctypes
import ctypes.util


def release_free_memory() -> bool:
    """Return freed heap pages to the system; False where the C library has no malloc_trim."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return False
    trim(0)
    return True
