"""Start-up memory: freed heap goes back to the system, and the SQLite server never loads the MongoDB driver.

https://man7.org/linux/man-pages/man3/malloc_trim.3.html
"""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

from server.memory import release_free_memory


def test_freed_heap_is_returned_where_glibc_is_the_c_library() -> None:
    has_trim = ctypes.util.find_library("c") is not None and hasattr(ctypes.CDLL(ctypes.util.find_library("c")),
                                                                      "malloc_trim")
    assert release_free_memory() is has_trim


def test_the_sqlite_server_does_not_import_pymongo(tmp_path: object) -> None:
    # pymongo costs every process about 14 MB; only CARELOOP_STORE=mongodb needs it
    script = ("import sys\nfrom server.app import build_services\nfrom server.settings import Settings\n"
              f"build_services(Settings(auth='off', sqlite_path={str(tmp_path)!r} + '/m.db'))\n"
              "print('pymongo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
