"""The hash chain of the audit trail: each AuditEvent carries its sequence, the previous event's hash and its own.

One writer per server instance assigns sequences and hashes in order, so there is one chain per instance. The hash is
SHA-256 of the event's canonical JSON (keys sorted, no whitespace) with the chain extension's `hash` left out;
the previous hash is inside what is hashed, which links the events. https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from resources.store.protocol import ReadSource, every

CHAIN_URL = "http://careloop.health/fhir/StructureDefinition/audit-chain"
CHECKPOINT_URL = "http://careloop.health/fhir/StructureDefinition/audit-checkpoint"
RECORD_SYSTEM = "http://careloop.health/fhir/CodeSystem/audit-record"
GENESIS = "0" * 64
CHECKPOINT_TYPE = "careloop-audit-checkpoint+jwt"


@dataclass(frozen=True)
class Link:
    """An event's place in the chain."""

    sequence: int
    previous: str
    hash: str


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of the chain head: `sequence` events, the last with `hash` (jws: None when unsigned)."""

    sequence: int
    hash: str
    recorded: str
    jws: str | None


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes an event's hash covers: sorted-key JSON without the chain's own hash."""
    content = dict(event)
    content["extension"] = [_without_hash(e) for e in event.get("extension", ())]
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def _without_hash(extension: dict[str, Any]) -> dict[str, Any]:
    if extension.get("url") != CHAIN_URL:
        return extension
    return {**extension, "extension": [e for e in extension.get("extension", ()) if e.get("url") != "hash"]}


def digest(event: dict[str, Any]) -> str:
    """The hash an event with its chain link (sequence, previous) must carry."""
    return hashlib.sha256(canonical(event)).hexdigest()


def link(event: dict[str, Any], sequence: int, previous: str) -> str:
    """Put the event at `sequence` after `previous`, in place; returns its hash."""
    others = [e for e in event.get("extension", ()) if e.get("url") != CHAIN_URL]
    chain = {"url": CHAIN_URL, "extension": [{"url": "sequence", "valueInteger": sequence},
                                             {"url": "previous", "valueString": previous}]}
    event["extension"] = [*others, chain]
    # no hash in the chain extension yet: the event's sorted bytes are already its canonical form (canonical())
    value = hashlib.sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()
    chain["extension"].append({"url": "hash", "valueString": value})
    return value


def link_of(event: dict[str, Any]) -> Link | None:
    """The chain link an event carries, None when it has none (or a malformed one)."""
    for extension in event.get("extension", ()):
        if isinstance(extension, dict) and extension.get("url") == CHAIN_URL:
            parts = {e.get("url"): e for e in extension.get("extension", ()) if isinstance(e, dict)}
            try:
                return Link(int(parts["sequence"]["valueInteger"]), str(parts["previous"]["valueString"]),
                            str(parts["hash"]["valueString"]))
            except (KeyError, TypeError, ValueError):
                return None
    return None


def checkpoint_resource(point: Checkpoint) -> dict[str, Any]:
    """A checkpoint as the Basic resource kept in the audit store."""
    parts: list[dict[str, Any]] = [{"url": "sequence", "valueInteger": point.sequence},
                                   {"url": "hash", "valueString": point.hash}]
    if point.jws is not None:
        parts.append({"url": "jws", "valueString": point.jws})
    return {"resourceType": "Basic", "code": {"coding": [{"system": RECORD_SYSTEM, "code": "checkpoint"}]},
            "created": point.recorded[:10], "extension": [{"url": CHECKPOINT_URL, "extension": parts},
                                                          {"url": CHECKPOINT_URL + "-recorded",
                                                           "valueInstant": point.recorded}]}


def checkpoint_of(resource: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint a stored Basic resource holds, None for any other Basic."""
    found: dict[str, Any] = {}
    recorded = ""
    for extension in resource.get("extension", ()):
        if extension.get("url") == CHECKPOINT_URL:
            found = {e.get("url"): e for e in extension.get("extension", ())}
        elif extension.get("url") == CHECKPOINT_URL + "-recorded":
            recorded = str(extension.get("valueInstant", ""))
    if "sequence" not in found or "hash" not in found:
        return None
    jws = found.get("jws", {}).get("valueString")
    return Checkpoint(int(found["sequence"]["valueInteger"]), str(found["hash"]["valueString"]), recorded, jws)


async def checkpoints(store: ReadSource, up_to_sequence: int | None = None) -> list[Checkpoint]:
    """The chain's checkpoints kept in the audit store, oldest first, up to a sequence (for retention exports)."""
    found: list[Checkpoint] = []
    async for stored in every(store, "Basic"):
        point = checkpoint_of(orjson.loads(stored.body or b"{}"))
        if point is not None and (up_to_sequence is None or point.sequence <= up_to_sequence):
            found.append(point)
    return sorted(found, key=lambda p: p.sequence)


def record_hash(chain: str, n: int, recorded: int, members: int, previous: str, body: bytes) -> str:
    """The hash of an audit record: SHA-256 over its chain, place, instant, member count, predecessor and bytes.

    The record's bytes are its canonical form (written once, never re-serialised), and the previous record's hash
    is inside what is hashed, which links the records of one chain.
    """
    head = f"{chain}\n{n}\n{recorded}\n{members}\n{previous}\n".encode()
    return hashlib.sha256(head + body).hexdigest()
