"""The documents of the MongoDB store: resource envelopes with their index arrays, versions and events.

The FHIR JSON is kept as canonical bytes under `b`, never at the top level: FHIR's `_id` (the primitive
extension of `id`) and MongoDB's `_id` must not meet. https://hl7.org/fhir/R4B/json.html#primitive
"""

from __future__ import annotations

from typing import Any

from resources.search.codesets import CANONICAL_SYSTEM
from resources.search.index import IndexRows
from resources.store.protocol import StoredResource, SubscriptionEvent, Write


def key(type_: str, id_: str) -> str:
    """The document id of a resource."""
    return f"{type_}/{id_}"


def index_fields(rows: IndexRows | None) -> dict[str, Any]:
    """The typed index arrays, the patient compartment and the sort keys of one resource."""
    if rows is None:
        return {"x": {}, "c": [], "k": {}}
    x = {
        "tok": [{"p": c, "s": s, "c": v, "t": t} for c, s, v, t in rows.tokens],
        "str": [{"p": c, "n": n, "e": e} for c, n, e in rows.strings],
        "ref": [{"p": c, "t": t, "i": i, "u": u} for c, t, i, u in rows.references],
        "dt": [{"p": c, "lo": lo, "hi": hi} for c, lo, hi in rows.dates],
        "num": [{"p": c, "v": v} for c, v in rows.numbers],
        "qty": [{"p": c, "s": s, "c": u, "v": v} for c, s, u, v in rows.quantities],
        "uri": [{"p": c, "v": v} for c, v in rows.uris],
        "cmp": [{"p": c, "s1": s1, "c1": c1, "s2": s2, "c2": c2, "lo": lo, "hi": hi}
                for c, s1, c1, s2, c2, lo, hi in rows.composites],
    }
    bounds: dict[str, list[Any]] = {}

    def note(code: str, low: Any, high: Any) -> None:
        if low is None:
            return
        found = bounds.setdefault(code, [low, high])
        found[0], found[1] = min(found[0], low), max(found[1], high)

    for c, _, v, _ in rows.tokens:
        note(c, v, v)
    for c, n, _ in rows.strings:
        note(c, n, n)
    for c, _, i, _ in rows.references:
        note(c, i, i)
    for c, lo, hi in rows.dates:
        note(c, lo, hi)
    for c, v in rows.numbers:
        note(c, v, v)
    for c, s, _, v in rows.quantities:
        if s != CANONICAL_SYSTEM:  # sort by the values as sent
            note(c, v, v)
    for c, v in rows.uris:
        note(c, v, v)
    return {"x": {k: v for k, v in x.items() if v}, "c": list(dict.fromkeys(rows.compartments)),
            "k": {code: {"h": 1, "lo": lo, "hi": hi} for code, (lo, hi) in bounds.items()}}


def partition(w: Write) -> str:
    """The shard key value: the patient whose compartment holds the resource, else the resource itself.

    A patient's record (Patient, Observations, Encounters, ...) then lives on one shard, where the
    compartment-bound searches of patient apps and $everything find it.
    """
    if w.type == "Patient":
        return f"Patient/{w.id}"
    patients = w.rows.compartments if w.rows is not None else []
    return f"Patient/{patients[0]}" if patients else key(w.type, w.id)


def current(w: Write, row: int, seq: int, pk: str | None = None) -> dict[str, Any]:
    """The current-version document of a write (a deletion keeps the shard key of the version before)."""
    deleted = w.action == "delete"
    return {"_id": key(w.type, w.id), "pk": pk or partition(w), "t": w.type, "i": w.id, "v": w.vid,
            "u": w.updated_ms, "d": deleted, "b": w.body, "r": row, "s": seq,
            **index_fields(None if deleted else w.rows)}


def version(w: Write, seq: int, pk: str | None = None) -> dict[str, Any]:
    """The version document of a write."""
    return {"_id": f"{w.type}/{w.id}/{w.vid}", "pk": pk or partition(w), "t": w.type, "i": w.id, "v": w.vid,
            "u": w.updated_ms, "d": w.action == "delete", "b": w.body, "m": w.method, "s": seq}


def event(w: Write, seq: int) -> dict[str, Any]:
    """The outbox document of a write."""
    return {"_id": seq, "t": w.type, "i": w.id, "v": w.vid, "a": w.action, "at": w.updated_ms}


def stored(doc: dict[str, Any], seq_field: str = "r") -> StoredResource:
    """A StoredResource of a current or version document."""
    body = doc.get("b")
    return StoredResource(doc["t"], doc["i"], doc["v"], doc["u"], bool(doc["d"]),
                          bytes(body) if body is not None else None, doc.get("m", "PUT"), int(doc.get(seq_field, 0)))


def subscription_event(event: SubscriptionEvent) -> dict[str, Any]:
    """The document of one numbered subscription event."""
    return {"_id": f"{event.subscription}/{event.number}", "s": event.subscription, "n": event.number,
            "at": event.at_ms, "t": event.type, "i": event.id, "v": event.vid, "m": event.method,
            "w": event.withheld}


def from_subscription_event(doc: dict[str, Any]) -> SubscriptionEvent:
    """A numbered subscription event from its document."""
    return SubscriptionEvent(doc["s"], int(doc["n"]), int(doc["at"]), doc["t"], doc["i"], int(doc["v"]), doc["m"],
                             bool(doc.get("w")))
