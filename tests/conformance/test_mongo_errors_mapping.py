"""Which of PyMongo's errors answer 503 with Retry-After, and which the transaction retry runs again (pure, no
database).

https://www.mongodb.com/docs/manual/reference/error-codes/
"""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from resources.store.mongo.failures import failure, transient

LABEL = {"errorLabels": ["TransientTransactionError"]}
CASES: list[tuple[str, PyMongoError, bool, bool]] = [  # (case, error, answers 503, transaction runs again)
    ("not primary", NotPrimaryError("not primary", {"code": 10107}), True, False),
    ("not primary inside a transaction", NotPrimaryError("not primary", LABEL), True, True),
    ("connection lost", AutoReconnect("connection reset"), True, False),
    ("network timeout", NetworkTimeout("timed out"), True, False),
    ("no server reachable", ServerSelectionTimeoutError("No servers found yet"), True, False),
    ("primary stepped down", OperationFailure("PrimarySteppedDown", 189), True, False),
    ("interrupted by a state change", OperationFailure("interrupted", 11602), True, False),
    ("shutting down", OperationFailure("ShutdownInProgress", 91), True, False),
    ("write conflict", OperationFailure("WriteConflict", 112, LABEL), True, True),
    ("retryable write", OperationFailure("retry", 262, {"errorLabels": ["RetryableWriteError"]}), True, False),
    ("query timed out", ExecutionTimeout("operation exceeded time limit", 50), True, False),
    ("write concern timed out", WTimeoutError("waiting for replication timed out", 64), True, False),
    ("duplicate key", DuplicateKeyError("E11000 duplicate key", 11000), False, False),
    ("bad query", OperationFailure("unknown operator: $foo", 2), False, False),
    ("document too large", OperationFailure("BSONObjectTooLarge", 10334), False, False),
]


@pytest.mark.parametrize(("case", "error", "unavailable", "again"), CASES, ids=[c[0] for c in CASES])
def test_failure_mapping(case: str, error: PyMongoError, unavailable: bool, again: bool) -> None:
    mapped = failure(error)
    if unavailable:
        assert mapped is not None, case
        assert (mapped.status, mapped.issues[0].code, mapped.headers) == (503, "transient", {"retry-after": "10"})
    else:
        assert mapped is None, case
    assert transient(error) is again
