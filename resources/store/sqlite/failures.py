"""SQLite's storage failures as FHIR errors: a full disk (507) and an unwritable or failing file (503).

https://www.sqlite.org/rescode.html
"""

from __future__ import annotations

import sqlite3
from typing import NoReturn

from resources.errors import FhirError, InsufficientStorage, Unavailable

RETRY = {"retry-after": "60"}
# primary result codes (extended codes keep them in the low byte)
_UNAVAILABLE = {sqlite3.SQLITE_READONLY: "the data file cannot be written (read-only)",
                sqlite3.SQLITE_IOERR: "the data file's disk reported an I/O error",
                sqlite3.SQLITE_CANTOPEN: "the data file cannot be opened",
                sqlite3.SQLITE_NOTADB: "the data file is not a database",
                sqlite3.SQLITE_CORRUPT: "the data file is damaged"}


def is_full(exc: BaseException) -> bool:
    """True for SQLite's 'database or disk is full'."""
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_FULL


def storage_error(exc: BaseException) -> FhirError | None:
    """The FHIR error of a storage failure; None when `exc` is something else (a bug, a constraint)."""
    if not isinstance(exc, sqlite3.Error):
        return None
    if is_full(exc):
        return InsufficientStorage("The server's disk is full: nothing was written; try again later",
                                   headers=dict(RETRY))
    why = _UNAVAILABLE.get((getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF)
    if why is None:
        return None
    return Unavailable(f"The store cannot be used now: {why} ({exc}); nothing was written", code="no-store",
                       headers=dict(RETRY))


def reraise(exc: sqlite3.Error) -> NoReturn:
    """Raise the FHIR error of a storage failure from `exc`, or `exc` itself when it is something else."""
    mapped = storage_error(exc)
    if mapped is None:
        raise exc
    raise mapped from exc
