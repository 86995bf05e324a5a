"""Subscription/$status and Subscription/$events: where a subscription stands, and its recent events again.

https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/OperationDefinition-backport-subscription-status.html,
https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/OperationDefinition-backport-subscription-events.html
"""

from __future__ import annotations

from typing import Any

import orjson

from operations.context import OperationCall
from resources.errors import FhirError, Invalid, NotSupported
from resources.ids import now_ms
from resources.search.query import Filter, SearchQuery, TokenValue
from subscriptions.engine import SubscriptionEngine
from subscriptions.notifications import bundle, status_resource
from subscriptions.subscription import CONTENTS


def _engine(call: OperationCall) -> SubscriptionEngine:
    if call.context.subscriptions is None:
        raise NotSupported("Subscriptions are turned off on this server (CARELOOP_SUBSCRIPTIONS=false)")
    return call.context.subscriptions


def _status_of(engine: SubscriptionEngine, body: dict[str, Any], base: str) -> dict[str, Any]:
    sid = str(body["id"])
    error = body.get("error") if isinstance(body.get("error"), str) else None
    return status_resource(sid, str(body.get("status")), str(body.get("criteria")), "query-status",
                           engine.events_since_start(sid), [], base, error)


async def status(call: OperationCall) -> dict[str, Any]:
    """A searchset of SubscriptionStatus: one subscription (instance level) or those named by `id`/`status`."""
    engine = _engine(call)
    base = call.context.base_url
    found: list[dict[str, Any]] = []
    target = await call.target()
    if target is not None:
        found.append(target)
    else:
        filters = []
        ids = [v for v in call.input.texts("id") for v in v.split(",") if v]
        if ids:
            filters.append(Filter("_id", "token", None, tuple(TokenValue(i) for i in ids)))
        states = [v for v in call.input.texts("status") for v in v.split(",") if v]
        if states:
            filters.append(Filter("status", "token", None, tuple(TokenValue(s) for s in states)))
        page = await call.context.repository.search(SearchQuery("Subscription", tuple(filters), count=1000))
        found.extend(orjson.loads(r.body) for r in page.resources if r.body)
    entries = [{"fullUrl": f"urn:uuid:status-{body['id']}", "resource": _status_of(engine, body, base),
                "search": {"mode": "match"}} for body in found]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


async def events(call: OperationCall) -> bytes:
    """A history Bundle of the stored events in a number range (the newest kept), with the content asked for."""
    engine = _engine(call)
    target = await call.target()
    assert target is not None
    sid = str(target["id"])
    since = call.input.integer("eventsSinceNumber", 1)
    until = call.input.integer("eventsUntilNumber", 1)
    content = call.input.text("content") or "id-only"
    if content not in CONTENTS:
        raise Invalid(f"content must be one of {', '.join(CONTENTS)}, not '{content}'", code="value",
                      expression=("content",))
    chosen = await engine.retained(sid, since, until)
    items: list[tuple[Any, bytes | None]] = []
    for event in chosen:
        body = None
        if content == "full-resource" and event.method != "DELETE":
            try:
                body = (await call.context.repository.vread(event.type, event.id, str(event.vid))).body
            except FhirError:  # the caller may not see it (or it is gone): the event stays, without the resource
                body = None
        items.append((event, body))
    base = call.context.base_url
    status_body = status_resource(sid, str(target.get("status")), str(target.get("criteria")), "query-event",
                                  engine.events_since_start(sid), chosen, base)
    return bundle(sid, status_body, content, items, base, now_ms())
