"""The access guard: how the data engine asks whether the caller may do what it is about to do.

The HTTP edge sets one per request (from the access token); the Repository consults it on every interaction,
so routes, batches and transactions are checked in one place. No guard set: full access (authorization off,
or the server's own work). https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

from resources.search.query import SearchQuery


class Guard(Protocol):
    """The decisions a request's access rights make."""

    def require(self, resource_type: str, letter: str) -> None:
        """Raise 403 unless the interaction (c, r, u, d, s) is granted on the type."""

    def narrow(self, query: SearchQuery, *, consent: bool = True) -> SearchQuery:
        """The query restricted to what may be searched (403 for what may not be searched at all).

        consent=False: by the scopes alone, without the patients' Consents.
        """

    def visible(self, resource_type: str, resource: dict[str, Any], letter: str) -> bool:
        """True when this resource may be seen (r, s) or written (c, u, d) by the caller."""

    def patient_bound(self, resource_type: str, letter: str) -> bool:
        """True when the caller only reaches one patient's compartment of this type."""

    def check_patient(self, patient: str) -> None:
        """Raise 403 when the caller may see nothing of this patient's record (whole-patient consent deny)."""

    def admit(self, resource_type: str, resource: dict[str, Any], patients: list[str]) -> None:
        """Raise 403 unless the caller may record this resource about these patients (collection consent)."""

    def restricts(self, resource_type: str, letter: str, *, consent: bool = True) -> bool:
        """True when whether a resource may be seen depends on its content (else every one of the type may).

        consent=False: only what the scopes themselves limit (a patient context, granular filters).
        """

    @property
    def stamped_types(self) -> frozenset[str]:
        """Types whose writes the guard completes (stamp) before they are checked and stored."""

    @property
    def redacted_types(self) -> frozenset[str]:
        """Types whose stored bodies the guard shows changed (redact): secrets masked or removed."""

    def stamp(self, resource_type: str, resource: dict[str, Any], current: dict[str, Any] | None) -> None:
        """Complete a resource about to be written, in place (current: the version it replaces)."""

    def redact(self, resource_type: str, body: bytes) -> bytes:
        """The stored body as this caller may see it."""


GUARD: ContextVar[Guard | None] = ContextVar("careloop_access_guard", default=None)


def current_guard() -> Guard | None:
    """The guard of the request being served, if any."""
    return GUARD.get()
