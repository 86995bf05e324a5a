"""Subscriptions belong to the client that created them, and their channel.header secrets stay with it.

A Subscription carries the credentials its receiver expects (`channel.header`, e.g. `Authorization: Bearer ...`).
The server tags each Subscription with the client that created it (a `meta.tag` of OWNER_SYSTEM, kept across
updates whatever a client sends); patient-scoped tokens reach only their own client's Subscriptions, and headers
are shown to the owner with their values masked and to nobody else at all. A masked value written back by the
owner keeps the stored secret. https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/
"""

from __future__ import annotations

from typing import Any

import orjson

OWNED_TYPE = "Subscription"
OWNER_SYSTEM = "http://careloop.health/fhir/CodeSystem/owner-client"
MASK = "***"


def owner_of(resource: dict[str, Any]) -> str | None:
    """The client that owns a resource, from its owner tag."""
    for tag in (resource.get("meta") or {}).get("tag") or ():
        if isinstance(tag, dict) and tag.get("system") == OWNER_SYSTEM:
            code = tag.get("code")
            return code if isinstance(code, str) else None
    return None


def stamp_owner(resource: dict[str, Any], current: dict[str, Any] | None, client_id: str | None) -> None:
    """Set the owner tag (the current owner's, else the writing client's) and restore masked header values."""
    owner = owner_of(current) if current is not None else None
    owner = owner or client_id
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or () if not (isinstance(t, dict) and t.get("system") == OWNER_SYSTEM)]
    if owner:
        tags.append({"system": OWNER_SYSTEM, "code": owner})
    if tags:
        meta["tag"] = tags
    else:
        meta.pop("tag", None)
    resource["meta"] = meta
    channel = resource.get("channel")
    if current is None or not isinstance(channel, dict) or not isinstance(channel.get("header"), list):
        return
    stored = (current.get("channel") or {}).get("header") or ()
    secrets = {_split(raw)[0].strip().lower(): raw for raw in stored if isinstance(raw, str)}
    channel = dict(channel)
    channel["header"] = [secrets.get(name.strip().lower(), raw) if value.strip() == MASK else raw
                         for raw, (name, value) in ((h, _split(h)) for h in channel["header"])]
    resource["channel"] = channel


def masked(body: bytes, client_id: str | None) -> bytes:
    """A Subscription's body with header values masked for its owner and headers removed for anyone else."""
    resource = orjson.loads(body)
    channel = resource.get("channel")
    if not isinstance(channel, dict) or "header" not in channel:
        return body
    if client_id is not None and owner_of(resource) == client_id:
        channel["header"] = [f"{name.strip()}: {MASK}" for name, _ in _named(channel["header"])]
    else:
        del channel["header"]
    return orjson.dumps(resource)


def _split(raw: Any) -> tuple[str, str]:
    name, _, value = str(raw).partition(":")
    return name, value


def _named(headers: Any) -> list[tuple[str, str]]:
    return [_split(raw) for raw in headers or () if isinstance(raw, str)]
