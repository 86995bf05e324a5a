"""The audit trail as the server uses it: the writer, the server's public keys and the verifier together.

https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consent.audit.log_recorder import LogRecorder
from consent.audit.recorder import AuditRecorder
from consent.audit.verify import Report, verify, verify_log
from resources.search.index import Indexer


@dataclass
class AuditTrail:
    """The recorder of every request's events, and what verifying its chain needs."""

    recorder: LogRecorder | AuditRecorder  # the audit log's writer (SQLite); the generic store's (MongoDB)
    indexer: Indexer
    keys: Callable[[], dict[str, Any] | None] = field(default=lambda: None)  # the JWKS checkpoints verify with
    server: str = "CareLoop"

    @property
    def problem(self) -> str | None:
        """Why the trail cannot be written, None when it can."""
        return self.recorder.problem

    async def verify(self) -> Report:
        """Every chain checked (its stored checkpoints, and for this instance's the head the writer knows)."""
        if isinstance(self.recorder, LogRecorder):
            return await verify_log(self.recorder.log, self.keys(), self.recorder.chain, self.recorder.head)
        return await verify(self.recorder.store, self.keys(), self.recorder.head)
