"""Subscriptions in the R4B form of the Subscriptions Backport IG: topic in criteria, details in extensions.

https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/StructureDefinition-backport-subscription.html
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resources.errors import Unprocessable
from resources.models import resource_types
from resources.search.registry import SearchRegistry
from subscriptions.endpoints import EndpointPolicy
from subscriptions.topics import INTERACTIONS, Criteria, Topic, Trigger, parse_criteria

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"
CONTENTS = ("empty", "id-only", "full-resource")


@dataclass(frozen=True)
class Subscriber:
    """One Subscription as the engine serves it."""

    id: str
    vid: int
    status: str
    topic: str
    filters: dict[str, tuple[Criteria, ...]]  # resource type -> criteria, any of which may match
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    content: str
    heartbeat_s: int | None
    timeout_s: int
    max_count: int
    end_ms: int | None
    tags: tuple[tuple[str, str], ...] = ()  # meta.tag (system, code)


def _tags(body: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """meta.tag as (system, code): whoever decides who may see a notification reads its owner there."""
    tags = (body.get("meta") or {}).get("tag") or []
    return tuple((str(t.get("system") or ""), str(t.get("code") or "")) for t in tags if isinstance(t, dict))


def _extension(element: dict[str, Any] | None, url: str) -> list[dict[str, Any]]:
    return [e for e in (element or {}).get("extension") or [] if e.get("url") == url]


def _positive(channel: dict[str, Any], url: str, name: str) -> int | None:
    found = _extension(channel, url)
    if not found:
        return None
    value = next((v for k, v in found[0].items() if k.startswith("value")), None)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Unprocessable(f"Subscription.channel {name} extension must be a positive whole number",
                            code="business-rule", expression=(f"Subscription.channel.extension({name})",))
    return value


def _headers(channel: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for raw in channel.get("header") or []:
        name, sep, value = str(raw).partition(":")
        if not sep or not name.strip() or any(c in raw for c in "\r\n"):
            raise Unprocessable(f"Subscription.channel.header '{name.strip()}...' must be 'Name: value' on one "
                                "line", code="business-rule", expression=("Subscription.channel.header",))
        out.append((name.strip(), value.strip()))
    return tuple(out)


def query_topic(registry: SearchRegistry, criteria: str) -> Topic:
    """The implicit topic of an R4-style subscription: any change to a resource matching the search."""
    kind = criteria.split("?", 1)[0]
    if kind not in resource_types():
        raise Unprocessable(f"Subscription.criteria '{criteria}' does not start with a resource type",
                            code="business-rule", expression=("Subscription.criteria",))
    current = parse_criteria(registry, kind, criteria, "Subscription.criteria") if "?" in criteria and \
        criteria.split("?", 1)[1] else None
    trigger = Trigger(kind, INTERACTIONS, None, current, False, None)
    return Topic("", criteria, criteria, (trigger,), {})


def parse_subscription(registry: SearchRegistry, body: dict[str, Any], topics: dict[str, Topic],
                       policy: EndpointPolicy, end_ms: int | None = None) -> Subscriber:
    """A Subscription checked against the known topics and the endpoint policy; 422 naming what is wrong."""
    topic_url = str(body.get("criteria") or "")
    topic = topics.get(topic_url)
    if topic is None and "://" not in topic_url.split("?", 1)[0]:
        topic = query_topic(registry, topic_url)  # an R4-style subscription: the criteria is a search
    if topic is None:
        raise Unprocessable(f"Subscription.criteria '{topic_url}' is neither the canonical URL of an active "
                            f"SubscriptionTopic on this server nor a search such as Observation?code=x",
                            code="business-rule", expression=("Subscription.criteria",))
    channel = body.get("channel") or {}
    if channel.get("type") != "rest-hook":
        raise Unprocessable(f"Subscription.channel.type '{channel.get('type')}' is not supported: this server "
                            f"delivers rest-hook notifications", code="not-supported",
                            expression=("Subscription.channel.type",))
    endpoint = str(channel.get("endpoint") or "")
    policy.check_url(endpoint, "Subscription.channel.endpoint")
    payload = channel.get("payload")
    if payload not in (None, "application/fhir+json", "application/json"):
        raise Unprocessable(f"Subscription.channel.payload '{payload}' is not supported: notifications are "
                            f"application/fhir+json", code="not-supported",
                            expression=("Subscription.channel.payload",))
    content_ext = _extension(channel.get("_payload"), PAYLOAD_CONTENT)
    content = str(content_ext[0].get("valueCode")) if content_ext else ("id-only" if payload else "empty")
    if content not in CONTENTS:
        raise Unprocessable(f"Payload content '{content}' is not one of {', '.join(CONTENTS)}",
                            code="business-rule", expression=("Subscription.channel.payload.extension",))
    filters: dict[str, list[Criteria]] = {}
    for n, ext in enumerate(_extension(body.get("_criteria"), FILTER_CRITERIA)):
        text = str(ext.get("valueString") or "")
        kind = text.split("?", 1)[0] if "?" in text else ""
        where = f"Subscription.criteria.extension[{n}]"
        if kind not in topic.resource_types():
            raise Unprocessable(f"{where} '{text}' must start with one of the topic's resource types "
                                f"({', '.join(sorted(topic.resource_types()))}) and '?'", code="business-rule",
                                expression=(where,))
        criteria = parse_criteria(registry, kind, text, where)
        allowed = topic.can_filter_by.get(kind, frozenset()) | topic.can_filter_by.get("*", frozenset())
        if topic.can_filter_by:
            refused = sorted({f.code for f in criteria.filters} - allowed)
            if refused:
                raise Unprocessable(f"{where}: the topic does not allow filtering by {', '.join(refused)} "
                                    f"(it allows {', '.join(sorted(allowed)) or 'nothing'} on {kind})",
                                    code="business-rule", expression=(where,))
        filters.setdefault(kind, []).append(criteria)
    return Subscriber(
        id=str(body.get("id") or ""), vid=int((body.get("meta") or {}).get("versionId") or 0),
        status=str(body.get("status") or "requested"), topic=topic.url,
        filters={k: tuple(v) for k, v in filters.items()}, endpoint=endpoint, headers=_headers(channel),
        content=content, heartbeat_s=_positive(channel, HEARTBEAT_PERIOD, "heartbeat-period"),
        timeout_s=_positive(channel, TIMEOUT, "timeout") or 10, max_count=_positive(channel, MAX_COUNT, "max-count")
        or 50, end_ms=end_ms, tags=_tags(body))
