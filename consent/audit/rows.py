"""Index rows of AuditEvents, assembled from the rows of their parts: most parts repeat from event to event.

An event's search index is the union of what each of its parts yields: the frame (type, subtype, agents, source,
purpose: the same for every request of one caller and interaction), each entity (the patient, the resource, the
query), and `recorded`. Each part's rows are extracted once from a minimal AuditEvent holding only that part and
remembered by its canonical bytes, so an event costs a few look-ups instead of evaluating every search parameter
(checked against a whole extraction in tests/audit/test_rows.py). https://hl7.org/fhir/R4B/auditevent.html#search
"""

from __future__ import annotations

from typing import Any

import orjson

from consent.audit.chain import CHAIN_URL
from resources.search.index import Indexer, IndexRows

_FIELDS = ("tokens", "strings", "references", "dates", "numbers", "quantities", "uris", "composites", "compartments")
_KEPT = 20_000  # parts remembered; the memory is cleared when full


class AuditRows:
    """The index rows of AuditEvents, from remembered rows of their parts."""

    def __init__(self, indexer: Indexer) -> None:
        self._indexer = indexer
        self._known: dict[bytes, IndexRows] = {}
        # a part holding one element is extracted for the parameters that read that element only
        self._reading = {name: indexer.parameters_reading("AuditEvent", name) for name in ("entity", "recorded")}

    def rows(self, event: dict[str, Any]) -> IndexRows:
        """All index rows of one AuditEvent."""
        found = IndexRows()
        for part in parts(event):
            rows = self._part(part)
            for name in _FIELDS:
                getattr(found, name).extend(getattr(rows, name))
        for name in _FIELDS:
            setattr(found, name, list(dict.fromkeys(getattr(found, name))))
        return found

    def _part(self, part: dict[str, Any]) -> IndexRows:
        key = orjson.dumps(part, option=orjson.OPT_SORT_KEYS)
        rows = self._known.get(key)
        if rows is None:
            if len(self._known) >= _KEPT:
                self._known.clear()
            element = next((name for name in part if name in self._reading), None) if len(part) == 2 else None
            rows = self._known[key] = self._indexer.extract(
                "AuditEvent", part, only=self._reading[element] if element else None)
        return rows


def parts(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The minimal AuditEvents whose rows together are the event's: the frame, each entity, the time."""
    frame = {k: v for k, v in event.items() if k not in ("entity", "recorded", "id", "meta", "extension")}
    meta = {k: v for k, v in (event.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        frame["meta"] = meta
    extensions = [e for e in event.get("extension", ()) if e.get("url") != CHAIN_URL]
    if extensions:
        frame["extension"] = extensions
    found = [frame]
    found.extend({"resourceType": "AuditEvent", "entity": [entity]} for entity in event.get("entity", ()))
    if "recorded" in event:
        found.append({"resourceType": "AuditEvent", "recorded": event["recorded"]})
    return found
