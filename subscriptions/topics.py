"""SubscriptionTopics as the engine uses them: per resource type, the interactions and criteria that fire them.

A topic's query criteria are search strings evaluated on the version before and after a change, in memory;
its FHIRPath criteria run with %previous and %current. Parsing refuses what cannot be judged on one resource.
https://hl7.org/fhir/R4B/subscriptiontopic.html
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

import fhirpathpy

from resources.errors import Unprocessable
from resources.models import resource_types
from resources.search.codesets import needs_resolution
from resources.search.match import evaluable
from resources.search.parse import parse_search
from resources.search.paths import fhirpath_model
from resources.search.query import Filter, SearchQuery
from resources.search.registry import SearchRegistry
from subscriptions.pathways import duration_ms

_DEFINITION = "http://hl7.org/fhir/StructureDefinition/"
RECENT_WITHIN = "http://careloop.health/fhir/StructureDefinition/topic-recent-within"
INTERACTIONS = frozenset({"create", "update", "delete"})


@dataclass(frozen=True)
class Criteria:
    """Filters for one side of a change: the previous or the current version."""

    text: str
    filters: tuple[Filter, ...]


@dataclass(frozen=True)
class Trigger:
    """One resourceTrigger: the type, the interactions and the tests on the versions around the change."""

    resource_type: str
    interactions: frozenset[str]
    previous: Criteria | None
    current: Criteria | None
    require_both: bool
    fhirpath: str | None
    recent: tuple[str, int] | None = None  # (date parameter, window in ms): the event's own time must be recent


@dataclass(frozen=True)
class Topic:
    """An active SubscriptionTopic: its canonical URL, triggers and the filters subscribers may use."""

    id: str
    url: str
    title: str
    triggers: tuple[Trigger, ...]
    can_filter_by: dict[str, frozenset[str]]  # resource type -> parameter codes ("*": any type)

    def resource_types(self) -> set[str]:
        """The types whose changes this topic watches."""
        return {t.resource_type for t in self.triggers}


def type_of(resource: str) -> str:
    """`Encounter` or `http://hl7.org/fhir/StructureDefinition/Encounter` -> `Encounter`."""
    return resource[len(_DEFINITION):] if resource.startswith(_DEFINITION) else resource


def parse_criteria(registry: SearchRegistry, resource_type: str, text: str, where: str) -> Criteria:
    """`Type?a=b&c=d` or `a=b&c=d` as filters on one resource; 422 naming what cannot be used."""
    query = text.split("?", 1)[1] if "?" in text else text
    named = text.split("?", 1)[0] if "?" in text else resource_type
    if named != resource_type:
        raise Unprocessable(f"{where} '{text}' names {named}, but the trigger is on {resource_type}",
                            code="business-rule", expression=(where,))
    params = parse_qsl(query, keep_blank_values=True)
    if not params:
        raise Unprocessable(f"{where} '{text}' has no search parameters", code="business-rule", expression=(where,))
    for key, _ in params:
        if key.startswith("_") and key.partition(":")[0] not in ("_id", "_lastUpdated", "_tag", "_profile",
                                                               "_security", "_source"):
            raise Unprocessable(f"{where} '{text}': {key} is not a filter", code="business-rule",
                                expression=(where,))
    try:
        parsed = parse_search(resource_type, params, registry, strict=True)
    except Exception as exc:  # noqa: BLE001 -- any parse failure is reported as this element's error
        raise Unprocessable(f"{where} '{text}' is not a valid search: {exc}", code="business-rule",
                            expression=(where,)) from exc
    for flt in parsed.query.filters:
        reason = evaluable(flt)
        if reason:
            raise Unprocessable(f"{where} '{text}' cannot be evaluated on one resource: {reason}",
                                code="business-rule", expression=(where,))
    return Criteria(text, parsed.query.filters)


def _trigger(registry: SearchRegistry, raw: dict[str, Any], n: int) -> Trigger:
    where = f"SubscriptionTopic.resourceTrigger[{n}]"
    resource_type = type_of(str(raw.get("resource") or ""))
    if resource_type not in resource_types():
        raise Unprocessable(f"{where}.resource '{raw.get('resource')}' is not a resource type",
                            code="business-rule", expression=(f"{where}.resource",))
    interactions = frozenset(raw.get("supportedInteraction") or INTERACTIONS)
    query = raw.get("queryCriteria") or {}
    previous = (parse_criteria(registry, resource_type, query["previous"], f"{where}.queryCriteria.previous")
                if query.get("previous") else None)
    current = (parse_criteria(registry, resource_type, query["current"], f"{where}.queryCriteria.current")
               if query.get("current") else None)
    fhirpath = raw.get("fhirPathCriteria")
    if fhirpath:
        try:  # the parser accepts some broken text; a trial run on an empty resource finds the rest
            empty = {"resourceType": resource_type}
            fhirpathpy.compile(fhirpath, model=fhirpath_model())(empty, {"current": empty, "previous": empty})
        except Exception as exc:  # noqa: BLE001 -- reported as this element's error
            raise Unprocessable(f"{where}.fhirPathCriteria does not compile: {exc}", code="business-rule",
                                expression=(f"{where}.fhirPathCriteria",)) from exc
    return Trigger(resource_type, interactions, previous, current, bool(query.get("requireBoth", False)), fhirpath,
                   _recent(registry, resource_type, raw, where))


def _recent(registry: SearchRegistry, resource_type: str, raw: dict[str, Any], where: str) -> tuple[str, int] | None:
    """The recency rule of a trigger: its date parameter must lie within a window before now (or be absent)."""
    found = [e for e in raw.get("extension") or [] if e.get("url") == RECENT_WITHIN]
    if not found:
        return None
    parts = {e.get("url"): e for e in found[0].get("extension") or []}
    code = (parts.get("parameter") or {}).get("valueCode")
    window = duration_ms((parts.get("within") or {}).get("valueDuration"))
    param = registry.get(resource_type, str(code)) if code else None
    if param is None or param.type != "date" or window is None:
        raise Unprocessable(f"{where}: the {RECENT_WITHIN} extension needs a date search parameter of "
                            f"{resource_type} (parameter) and a Duration in s, min, h, d or wk (within)",
                            code="business-rule", expression=(f"{where}.extension",))
    return str(code), window


def parse_topic(registry: SearchRegistry, body: dict[str, Any]) -> Topic:
    """A SubscriptionTopic resource as a Topic; 422 for a trigger the engine cannot evaluate."""
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise Unprocessable("SubscriptionTopic.url is required: subscriptions name the topic by it",
                            code="required", expression=("SubscriptionTopic.url",))
    triggers = tuple(_trigger(registry, raw, n) for n, raw in enumerate(body.get("resourceTrigger") or []))
    if not triggers:
        raise Unprocessable("SubscriptionTopic needs a resourceTrigger: this server raises events from resource "
                            "changes", code="required", expression=("SubscriptionTopic.resourceTrigger",))
    can_filter: dict[str, set[str]] = {}
    for entry in body.get("canFilterBy") or []:
        kind = type_of(str(entry.get("resource") or "*"))
        if entry.get("filterParameter"):
            can_filter.setdefault(kind, set()).add(str(entry["filterParameter"]))
    return Topic(str(body.get("id") or ""), url, str(body.get("title") or url), triggers,
                 {k: frozenset(v) for k, v in can_filter.items()})


async def resolved(topic: Topic, resolve: Callable[[SearchQuery], Awaitable[SearchQuery]]) -> Topic:
    """The topic with `:in` (and other terminology) filters expanded into codes, e.g. a clinic-edited ValueSet."""

    async def one(kind: str, criteria: Criteria | None) -> Criteria | None:
        if criteria is None or not needs_resolution(SearchQuery(kind, criteria.filters)):
            return criteria
        return Criteria(criteria.text, (await resolve(SearchQuery(kind, criteria.filters))).filters)

    triggers = tuple([replace(t, previous=await one(t.resource_type, t.previous),
                              current=await one(t.resource_type, t.current)) for t in topic.triggers])
    return replace(topic, triggers=triggers)
