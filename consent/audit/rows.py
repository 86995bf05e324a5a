"""Index rows of AuditEvents, assembled from the rows of their parts: most parts repeat from event to event.

An event's search index is the union of what each of its parts yields: the frame (type, subtype, agents, source,
purpose: the same for every request of one caller and interaction), each entity (the patient, the resource, the
query), and `recorded`. Each part's rows are extracted once from a minimal AuditEvent holding only that part and
remembered by its canonical bytes, so an event costs a few look-ups instead of evaluating every search parameter
(checked against a whole extraction in tests/audit/test_rows.py). The parts unique to one event (the request id,
the resource and patient ids, the time) are remembered as templates: the rows of the part with a placeholder in
place of the unique value, which is put back into the rows. https://hl7.org/fhir/R4B/auditevent.html#search
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from consent.audit.chain import CHAIN_URL
from resources.search.extract import dates
from resources.search.index import Indexer, IndexRows

_FIELDS = ("tokens", "strings", "references", "dates", "numbers", "quantities", "uris", "composites", "compartments")
_KEPT = 20_000  # parts remembered; the memory is cleared when full
# placeholders: a valid id and identifier value no event carries, found in the template's rows by equality
_ID = "careloop-audit-placeholder-id"
_VALUE = "careloop-audit-placeholder-value"
_POLICY = "urn:careloop-audit-placeholder-policy"
_PLACEHOLDERS = (_ID, _VALUE, _POLICY)
_RELATIVE = re.compile(r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?")
_SAMPLE_TIME = "2000-01-01T00:00:00.000Z"
Substitutions = dict[str, str]
_Known = tuple[list[tuple[str, Any]], list[tuple[int, bool]]]  # rows (table, row); where placeholders are


class AuditRows:
    """The index rows of AuditEvents, from remembered rows of their parts."""

    def __init__(self, indexer: Indexer) -> None:
        self._indexer = indexer
        self._known: dict[bytes, _Known | None] = {}
        # a part holding one element is extracted for the parameters that read that element only
        self._reading = {name: indexer.parameters_reading("AuditEvent", name) for name in ("entity", "recorded")}
        self._time_codes = self._date_codes()

    def rows(self, event: dict[str, Any]) -> IndexRows:
        """All index rows of one AuditEvent."""
        found = IndexRows()
        seen: set[Any] = set()
        for part in parts(event):
            for name, row in self._part(part):
                if (name, row) not in seen:  # parts may share rows (two entities of one type)
                    seen.add((name, row))
                    getattr(found, name).append(row)
        return found

    def part_rows(self, part: dict[str, Any]) -> list[tuple[str, Any]]:
        """The (table, row) index rows of one part of an event (see `parts`)."""
        return self._part(part)

    def _date_codes(self) -> tuple[str, ...] | None:
        # the parameters `recorded` feeds, when all of them are dates (then its rows are its date range per code)
        sample = self._extract({"resourceType": "AuditEvent", "recorded": _SAMPLE_TIME})
        if any(getattr(sample, name) for name in _FIELDS if name != "dates"):
            return None
        expected = dates(_SAMPLE_TIME)
        codes = tuple(dict.fromkeys(code for code, *_ in sample.dates))
        if sorted(sample.dates) != sorted((code, *r) for code in codes for r in expected):
            return None
        return codes

    def _part(self, part: dict[str, Any]) -> list[tuple[str, Any]]:
        if self._time_codes is not None and len(part) == 2 and isinstance(part.get("recorded"), str):
            return [("dates", (code, *r)) for code in self._time_codes for r in dates(part["recorded"])]
        template, substitutions = _template(part)
        if substitutions:
            known = self._remembered(template)
            if known is not None:
                rows, fixes = known
                if not fixes:
                    return rows
                found = list(rows)
                for at, placeholders in fixes:
                    name, row = found[at]
                    found[at] = (name, _put(row, substitutions) if placeholders else row)
                return found
        remembered = self._remembered(part)
        assert remembered is not None  # a part without placeholders always has rows of its own
        return remembered[0]

    def _remembered(self, part: dict[str, Any]) -> _Known | None:
        key = orjson.dumps(part, option=orjson.OPT_SORT_KEYS)
        if key in self._known:
            return self._known[key]
        if len(self._known) >= _KEPT:
            self._known.clear()
        extracted = self._extract(part)
        rows = [(name, row) for name in _FIELDS for row in getattr(extracted, name)]
        known: _Known | None = (rows, [(at, True) for at, (_, row) in enumerate(rows) if _holds(row)])
        if any(p.encode() in key for p in _PLACEHOLDERS) and not _placeholders_whole(extracted):
            known = None  # a placeholder inside a longer value cannot be put back: no template for this shape
        self._known[key] = known
        return known

    def _extract(self, part: dict[str, Any]) -> IndexRows:
        element = next((name for name in part if name in self._reading), None) if len(part) == 2 else None
        return self._indexer.extract("AuditEvent", part, only=self._reading[element] if element else None)


def _template(part: dict[str, Any]) -> tuple[dict[str, Any], Substitutions]:
    """The part with its event-unique values as placeholders: an entity's identifier value and its reference's id;
    an agent's who (reference id, identifier value) and its token (policy)."""
    if len(part) != 2:
        return part, {}
    element = "entity" if "entity" in part else "agent" if "agent" in part else None
    items = part.get(element) if element else None
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        return part, {}
    item = dict(items[0])
    substitutions: Substitutions = {}
    key = "what" if element == "entity" else "who"
    what = item.get(key)
    if isinstance(what, dict):
        what = dict(what)
        identifier = what.get("identifier")
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            substitutions[_VALUE] = identifier["value"]
            what["identifier"] = {**identifier, "value": _VALUE}
        reference = what.get("reference")
        match = _RELATIVE.fullmatch(reference) if isinstance(reference, str) else None
        if match is not None:
            substitutions[_ID] = match.group(2)
            what["reference"] = f"{match.group(1)}/{_ID}" + ("/_history/1" if match.group(3) else "")
        item[key] = what
    policy = item.get("policy") if element == "agent" else None
    if isinstance(policy, list) and len(policy) == 1 and isinstance(policy[0], str):
        substitutions[_POLICY] = policy[0]
        item["policy"] = [_POLICY]
    if not substitutions:
        return part, {}
    return {"resourceType": "AuditEvent", element: [item]}, substitutions


def _placeholders_whole(rows: IndexRows) -> bool:
    """True when every value holding a placeholder is the placeholder itself (so it can be put back)."""
    for name in _FIELDS:
        for row in getattr(rows, name):
            for value in (row,) if isinstance(row, str) else row:
                if isinstance(value, str) and value not in _PLACEHOLDERS and any(p in value for p in _PLACEHOLDERS):
                    return False
    return True


def _holds(row: Any) -> bool:
    return any(value in _PLACEHOLDERS for value in ((row,) if isinstance(row, str) else row))


def _put(row: Any, substitutions: Substitutions) -> Any:
    if isinstance(row, str):
        return substitutions.get(row, row)
    return tuple(substitutions.get(v, v) if isinstance(v, str) else v for v in row)


def parts(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The minimal AuditEvents whose rows together are the event's: the frame, each agent, each entity, the time."""
    frame = {k: v for k, v in event.items() if k not in ("entity", "recorded", "id", "meta", "extension", "agent")}
    meta = {k: v for k, v in (event.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        frame["meta"] = meta
    extensions = [e for e in event.get("extension", ()) if e.get("url") != CHAIN_URL]
    if extensions:
        frame["extension"] = extensions
    found = [frame]
    # each agent on its own: its token (policy) and who it is are templated, the rest repeats from caller to caller
    found.extend({"resourceType": "AuditEvent", "agent": [agent]} for agent in event.get("agent", ()))
    found.extend({"resourceType": "AuditEvent", "entity": [entity]} for entity in event.get("entity", ()))
    if "recorded" in event:
        found.append({"resourceType": "AuditEvent", "recorded": event["recorded"]})
    return found
