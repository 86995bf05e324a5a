"""Notification bundles: a history Bundle whose first entry is a SubscriptionStatus, then the focus resources.

https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/notifications.html,
https://hl7.org/fhir/R4B/subscriptionstatus.html
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from resources.search.dates import format_instant


@dataclass(frozen=True)
class Event:
    """One numbered event of one subscription: what changed, when, and how (for the request entry)."""

    number: int
    at_ms: int
    type: str
    id: str
    vid: int
    method: str  # POST, PUT or DELETE
    # the subscriber's owner may not see the resource (patient consent): the event keeps its number, so gaps
    # stay meaningful, but no notification or $events answer names or carries the resource
    withheld: bool = False


def status_resource(subscription_id: str, status: str, topic: str, kind: str, events_since_start: int,
                    events: list[Event], base_url: str, error: str | None = None) -> dict[str, Any]:
    """A SubscriptionStatus of one notification or query."""
    resource: dict[str, Any] = {
        "resourceType": "SubscriptionStatus",
        "status": status,
        "type": kind,
        "eventsSinceSubscriptionStart": str(events_since_start),
        "subscription": {"reference": f"{base_url}/Subscription/{subscription_id}"},
        "topic": topic,
    }
    if events:
        resource["notificationEvent"] = [
            {"eventNumber": str(e.number), "timestamp": format_instant(e.at_ms)} if e.withheld else
            {"eventNumber": str(e.number), "timestamp": format_instant(e.at_ms),
             # absolute and unversioned, equal to the entry's fullUrl, as in the Backport IG's examples: a
             # subscriber finds the included resource by it (a versioned URL matched no entry)
             "focus": {"reference": f"{base_url}/{e.type}/{e.id}"}} for e in events]
    if error:
        resource["error"] = [{"text": error}]
    return resource


def _entry(event: Event, content: str, body: bytes | None, base_url: str) -> dict[str, Any]:
    url = f"{event.type}/{event.id}" if event.method != "POST" else event.type
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{event.type}/{event.id}",
                             "request": {"method": event.method, "url": url}}
    if content == "full-resource" and body is not None:
        entry["resource"] = orjson.Fragment(body)
        entry["response"] = {"status": "201" if event.method == "POST" else "200",
                             "etag": f'W/"{event.vid}"', "lastModified": format_instant(event.at_ms)}
    return entry


def bundle(subscription_id: str, status: dict[str, Any], content: str, events: list[tuple[Event, bytes | None]],
           base_url: str, now_ms: int) -> bytes:
    """The notification Bundle bytes (resource bodies are spliced in as stored, never re-serialised)."""
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": status,
        "request": {"method": "GET", "url": f"Subscription/{subscription_id}/$status"},
        "response": {"status": "200"}}]
    if content != "empty":
        entries.extend(_entry(event, content, body, base_url) for event, body in events if not event.withheld)
    return orjson.dumps({"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history",
                         "timestamp": format_instant(now_ms), "entry": entries})
