"""One request's observation: what the Repository returned and wrote, kept for the request's AuditEvents.

Implements resources.audit_sink.AuditSink. Which patients a returned resource is about is worked out only when the
events are built, from the compartment definition (a Patient is its own). https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from consent.audit.shapes import Touched
from resources.search.index import Indexer
from resources.store.protocol import StoredResource

_NO_PARAMS: frozenset[str] = frozenset()


class Observation:
    """What one request touched (resources.audit_sink.AuditSink)."""

    __slots__ = ("_returned", "_entries", "_writes")

    def __init__(self) -> None:
        self._returned: list[StoredResource] = []
        self._entries: list[tuple[bytes, bytes]] = []
        self._writes: list[Touched] = []

    def returned(self, found: Sequence[StoredResource]) -> None:
        """Resources about to leave in the answer."""
        self._returned.extend(found)

    def returned_entries(self, found: Sequence[tuple[bytes, bytes]]) -> None:
        """Resources of a search across types about to leave."""
        self._entries.extend(found)

    def wrote(self, resource_type: str, id_: str, vid: int, action: str, patients: Sequence[str]) -> None:
        """A version about to be written."""
        self._writes.append(Touched(resource_type, id_, vid, tuple(patients), action))

    def touched(self, indexer: Indexer) -> list[Touched]:
        """Everything touched, with the patients of each (writes first, in the order they were made)."""
        found = list(self._writes)
        for stored in self._returned:
            found.append(Touched(stored.type, stored.id, stored.vid, patients_of(indexer, stored.type, stored.id,
                                                                                 stored.body)))
        for reference, body in self._entries:
            type_, _, id_ = reference.decode().partition("/")
            parsed = orjson.loads(body)
            vid = int((parsed.get("meta") or {}).get("versionId") or 0)
            found.append(Touched(type_, id_, vid, patients_of(indexer, type_, id_, body)))
        return found


def patients_of(indexer: Indexer, resource_type: str, id_: str, body: bytes | None) -> tuple[str, ...]:
    """The patients whose compartment holds a resource."""
    if resource_type == "Patient":
        return (id_,)
    if not body or not indexer.has_compartment(resource_type):
        return ()
    return tuple(indexer.extract(resource_type, orjson.loads(body), only=_NO_PARAMS).compartments)
