"""MongoDB's failures as FHIR errors: a primary stepping down, a lost connection or an unreachable server answer
503 with Retry-After (never 500); the driver finds the new primary by itself.

https://www.mongodb.com/docs/manual/core/retryable-writes/, https://www.mongodb.com/docs/manual/reference/error-codes/
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure, PyMongoError, WTimeoutError

from resources.errors import FhirError, Unavailable

P = ParamSpec("P")
T = TypeVar("T")
RETRY_AFTER_S = 10  # an election takes about electionTimeoutMillis (10 s by default)
# errors of a node that is not (or no longer) primary, shutting down, or cut off: retrying later succeeds
STEP_DOWN_CODES = frozenset({6, 7, 89, 91, 189, 9001, 10058, 10107, 11600, 11602, 13435, 13436})
_RETRYABLE = ("TransientTransactionError", "RetryableWriteError")


def transient(exc: BaseException) -> bool:
    """True for an error after which the whole transaction may be run again (the driver's label)."""
    return isinstance(exc, PyMongoError) and exc.has_error_label("TransientTransactionError")


def cause(exc: BaseException) -> PyMongoError | None:
    """The driver's error behind `exc` (itself, or what a mapped FhirError was raised from)."""
    if isinstance(exc, PyMongoError):
        return exc
    return exc.__cause__ if isinstance(exc.__cause__, PyMongoError) else None


def failure(exc: PyMongoError) -> FhirError | None:
    """The 503 of a passing failure of the database; None for anything else (a bug, a refused query)."""
    if isinstance(exc, ConnectionFailure):  # NotPrimaryError, AutoReconnect, ServerSelectionTimeoutError, ...
        why = "no primary could be reached" if exc.__class__.__name__ == "ServerSelectionTimeoutError" else \
            "the primary stepped down or the connection was lost"
    elif isinstance(exc, ExecutionTimeout | WTimeoutError):
        why = "it did not answer in time"
    elif isinstance(exc, OperationFailure) and (exc.code in STEP_DOWN_CODES or
                                                any(exc.has_error_label(label) for label in _RETRYABLE)):
        why = "the primary stepped down or a transaction could not complete"
    else:
        return None
    return Unavailable(f"The database is unavailable now ({why}: {exc.__class__.__name__}); nothing was changed by "
                       f"this request, try again shortly", headers={"retry-after": str(RETRY_AFTER_S)})


def guarded(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """The method with the database's passing failures raised as their 503 (so no route answers 500 for them)."""
    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except PyMongoError as exc:
            mapped = failure(exc)
            if mapped is None:
                raise
            raise mapped from exc
    return run
