"""The audit sink: how the data engine tells the audit trail what a request touched, and hands it AuditEvents.

The HTTP edge sets one sink per request (consent/audit/observer.py); the Repository reports every resource it
returns or writes, so routes, batches, transactions and operations are observed in one place. No sink set: nothing
is observed (the server's own work, or audit off). https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, Protocol

from resources.store.protocol import StoredResource


class AuditSink(Protocol):
    """What one request touched, as the Repository saw it."""

    def returned(self, found: Sequence[StoredResource]) -> None:
        """Resources about to leave in the answer (read, vread, search matches and includes, history)."""

    def returned_entries(self, found: Sequence[tuple[bytes, bytes]]) -> None:
        """Resources of a search across types about to leave, as (type/id, body)."""

    def wrote(self, resource_type: str, id_: str, vid: int, action: str, patients: Sequence[str]) -> None:
        """A version about to be written (create, update, delete) and the patients whose compartment holds it."""


class Appender(Protocol):
    """The audit trail's writer: a client-supplied AuditEvent is appended to the chain, never stored directly."""

    async def append(self, event: dict[str, Any]) -> StoredResource:
        """Store one AuditEvent in the trail; raises when the trail cannot be written."""


SINK: ContextVar[AuditSink | None] = ContextVar("careloop_audit_sink", default=None)


def current_sink() -> AuditSink | None:
    """The sink of the request being served, if any."""
    return SINK.get()
