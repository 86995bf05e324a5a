"""The subscription engine: reads the change feed after each commit, matches topics, makes Tasks, notifies.

Matching runs off the write path: a commit only wakes the engine, which reads the committed versions from
the store's change feed in batches, so ingest speed does not depend on how many subscriptions exist. Its
position in the feed is a durable mark, so events committed while the server was down are still handled
after a restart. Of several instances on one store, the one holding the engine's lease matches and delivers (so
events are numbered, Tasks made and notifications sent once); the others keep the catalog for their write checks and
take over from the stored positions when that lease runs out. https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/,
https://hl7.org/fhir/R4B/subscriptiontopic.html
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy
import httpx
import orjson

from resources.errors import FhirError, Unprocessable
from resources.guard import current_guard
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.index import IndexRows
from resources.search.match import matches_all
from resources.search.paths import fhirpath_model
from resources.store.lease import JobLease
from resources.store.protocol import StoredResource, SubscriptionEvent, Write, every
from subscriptions.cadence import CadenceWorker
from subscriptions.delivery import Channel, DeliveryConfig, DeliveryStats
from subscriptions.endpoints import EndpointPolicy
from subscriptions.followup import FollowUp, Occurrence
from subscriptions.notifications import Event
from subscriptions.pathways import Step, steps_by_topic, stops_by_topic
from subscriptions.subscription import Subscriber, parse_subscription, query_topic
from subscriptions.topics import Topic, Trigger, parse_topic, resolved

log = logging.getLogger("careloop.subscriptions")
CURSOR = "subscriptions:cursor"
# a ValueSet too: topic criteria may test membership (code:in=...), resolved when the catalog loads
CONFIG_TYPES = frozenset({"SubscriptionTopic", "Subscription", "PlanDefinition", "ActivityDefinition", "ValueSet"})
_BATCH = 500
_SAVE_EVERY_S = 2.0
_ACK_SAVE_S = 1.0  # delivery cursors are saved together at most this often (a crash resends at most this much)
_POLL_S = 1.0  # how often the feed is looked at for other instances' commits (a local commit wakes at once)
_STANDBY_COUNTS_S = 2.0  # how often an instance without the lease re-reads the event counts $status shows
LEASE = "subscriptions:engine"


class LeaseLost(Exception):
    """Another instance took the engine's lease: this one stops matching and sending."""


@dataclass(frozen=True)
class EngineConfig:
    """The engine's settings: links, the endpoint policy, retries, service levels and event retention."""

    base_url: str
    policy: EndpointPolicy = field(default_factory=EndpointPolicy)
    retry_delays: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)
    service_levels_ms: dict[str, int] = field(default_factory=lambda: {
        "stat": 30 * 60_000, "asap": 2 * 3_600_000, "urgent": 2 * 3_600_000, "routine": 24 * 3_600_000})
    events_retained: int = 1000


@dataclass
class Catalog:
    """The active topics, subscriptions and pathway steps, as loaded from the store."""

    topics: dict[str, Topic] = field(default_factory=dict)
    by_type: dict[str, list[Topic]] = field(default_factory=dict)
    subscribers: dict[str, Subscriber] = field(default_factory=dict)
    steps: dict[str, list[Step]] = field(default_factory=dict)
    stops: dict[str, list[str]] = field(default_factory=dict)  # topic -> plans whose open Tasks its events cancel
    needed: dict[str, frozenset[str]] = field(default_factory=dict)  # type -> parameters the criteria use

    def index_needs(self) -> dict[str, frozenset[str]]:
        """Per resource type, the search parameters any topic or subscription criteria test."""
        codes: dict[str, set[str]] = {kind: set() for kind in self.by_type}
        for topic in self.topics.values():
            for trigger in topic.triggers:
                for criteria in (trigger.previous, trigger.current):
                    if criteria is not None:
                        codes[trigger.resource_type].update(f.code for f in criteria.filters)
                if trigger.recent is not None:
                    codes[trigger.resource_type].add(trigger.recent[0])
        for subscriber in self.subscribers.values():
            for kind, many in subscriber.filters.items():
                codes.setdefault(kind, set()).update(f.code for c in many for f in c.filters)
        return {kind: frozenset(found) for kind, found in codes.items()}


def _action(change: StoredResource) -> str:
    if change.deleted:
        return "delete"
    return "create" if change.vid == 1 or change.method == "POST" else "update"


def _method(action: str) -> str:
    return {"create": "POST", "update": "PUT", "delete": "DELETE"}[action]


# may the owner of this subscription see this resource (its type, body and index rows)?
Audience = Callable[[Subscriber, str, dict[str, Any], IndexRows], bool]


class SubscriptionEngine:
    """Topics, subscriptions and pathways over one repository's change feed."""

    def __init__(self, repository: Repository, config: EngineConfig, client: httpx.AsyncClient | None = None) -> None:
        self.repository = repository
        self.config = config
        self.catalog = Catalog()
        self.channels: dict[str, Channel] = {}
        self.counts: dict[str, int] = {}  # events numbered, including those of the batch being matched
        self.recorded: dict[str, int] = {}  # events numbered and committed to the store
        self.delivered: dict[str, int] = {}  # the newest event number each receiver accepted
        self._pending: list[tuple[str, Event, bytes | None]] = []
        self._saved_delivered: dict[str, int] = {}
        self._ack_task: asyncio.Task[None] | None = None
        self.stats = DeliveryStats()
        self.cursor = 0
        self._client = client or httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._owns_client = client is None
        self._wake = asyncio.Event()
        self._dirty = True
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._fhirpath: dict[str, Any] = {}
        self._saved_counts: dict[str, int] = {}
        self._saved_at = 0.0
        # may a subscription's owner see this resource (patient consent)? None: everyone sees everything
        self.audience: Audience | None = None
        self.followup = FollowUp(repository, config.service_levels_ms, config.base_url)
        self.cadence = CadenceWorker(repository)  # chronic programmes: the next Task of each activity
        self.lease = JobLease(repository.store, LEASE)
        self.active = False  # holds the lease: matches the feed, makes Tasks and sends notifications
        self._config_seq = 0  # the feed position up to which catalog changes (of any instance) were looked for
        self._counts_at = 0.0

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the catalog, take the lease when free (then find the feed position: now, on first start) and start
        watching."""
        self._config_seq = await self.repository.store.last_seq()
        if await self.lease.held():
            await self._take_over()
        else:
            await self._reload()
        self._task = asyncio.create_task(self._loop(), name="subscription-engine")
        self._wake.set()

    async def _take_over(self) -> None:
        """Become the instance that matches and sends: from the stored positions, which another may have moved."""
        store = self.repository.store
        found = await store.mark(CURSOR)
        self.cursor = found if found is not None else await store.last_seq()
        if found is None:
            await store.set_mark(CURSOR, self.cursor)
        for known in (self.counts, self.recorded, self.delivered, self._saved_counts, self._saved_delivered):
            known.clear()
        self._pending.clear()
        await self._stop_channels()
        self.active = True
        await self._reload()
        self.cadence.start()

    async def _stand_by(self) -> None:
        """Another instance holds the lease: stop sending, keep the catalog and the event counts current."""
        if self.active:
            log.info("Subscription engine: another instance holds the lease; standing by")
            self.active = False
            await self._stop_channels()
            await self.cadence.close()
        await self._watch_config()
        if self._dirty:
            await self._reload()
        if time.monotonic() - self._counts_at > _STANDBY_COUNTS_S:
            store = self.repository.store
            for sid in list(self.catalog.subscribers):
                self.recorded[sid] = await store.mark(f"subscription:{sid}:events") or 0
            self._counts_at = time.monotonic()

    async def _stop_channels(self) -> None:
        for channel in list(self.channels.values()):
            await channel.stop()
        self.channels.clear()

    async def _watch_config(self) -> None:
        """Reload the catalog when another instance wrote a topic, subscription or pathway (local writes set
        _dirty through on_commit)."""
        store = self.repository.store
        until = await store.last_seq()
        if until > self._config_seq:
            if await store.changes(self._config_seq, until, CONFIG_TYPES, 1):
                self._dirty = True
            self._config_seq = until

    async def close(self) -> None:
        """Stop watching and sending."""
        await self.cadence.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ack_task is not None:
            self._ack_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ack_task
        if self._task is not None and self.active:
            with contextlib.suppress(FhirError, LeaseLost):  # the store may already be unavailable
                await self._save_position(force=True)
        await self._stop_channels()
        self.active = False
        with contextlib.suppress(FhirError):  # another instance takes over at once, not when the lease runs out
            await self.lease.release()
        if self._owns_client:
            await self._client.aclose()

    def on_commit(self, writes: list[Write]) -> None:
        """A commit happened: wake the engine (and reload the catalog when its resources changed)."""
        if any(w.type in CONFIG_TYPES for w in writes):
            self._dirty = True
        self._idle.clear()
        self._wake.set()

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until every committed change has been matched (for tests and benchmarks)."""
        self._wake.set()
        await asyncio.wait_for(self._idle.wait(), timeout)

    # -- write checks -----------------------------------------------------------------------------
    def check(self, resource_type: str, resource: dict[str, Any]) -> None:
        """Refuse topics and subscriptions the engine could not serve (422 naming the element)."""
        if resource_type == "SubscriptionTopic":
            parse_topic(self.repository.registry, resource)
        elif resource_type == "Subscription":
            if str((resource.get("meta") or {}).get("versionId")) == "1" and resource.get("status") == "active":
                resource["status"] = "requested"  # a new subscription becomes active through its handshake
            if resource.get("status") not in ("requested", "active", "error", "off"):
                raise Unprocessable(f"Subscription.status '{resource.get('status')}' is not requested, active, "
                                    f"error or off", code="business-rule", expression=("Subscription.status",))
            subscriber = parse_subscription(self.repository.registry, resource, self.catalog.topics,
                                            self.config.policy)
            self._check_reach(subscriber)

    def _check_reach(self, subscriber: Subscriber) -> None:
        """403 when the writer may not search what the topic reports; 422 when it may search only some of it.

        Notifications are not narrowed to the writer's scopes yet, so a writer whose scopes are limited to a
        patient or to granular filters on a watched type may not subscribe to it (SECURITY.md case 58).
        """
        guard = current_guard()
        if guard is None:
            return
        topic = self.catalog.topics.get(subscriber.topic) or query_topic(self.repository.registry,
                                                                          subscriber.topic)
        for kind in sorted(topic.resource_types()):
            guard.require(kind, "s")
            # patient consent narrows each notification (audience); only the scopes' own limits refuse here
            if guard.restricts(kind, "s", consent=False):
                raise Unprocessable(f"The access token reaches only some {kind} resources (a patient context or "
                                    f"granular scopes), and notifications are not narrowed to it: subscribing "
                                    f"to this topic needs search access to every {kind}", code="business-rule",
                                    expression=("Subscription.criteria",))

    # -- catalog ----------------------------------------------------------------------------------
    async def _reload(self) -> None:
        self._dirty = False
        store, registry = self.repository.store, self.repository.registry
        catalog = Catalog()
        async for found in every(store, "SubscriptionTopic"):
            body = orjson.loads(found.body or b"{}")
            if body.get("status") not in ("active", "draft"):
                continue
            try:
                topic = await resolved(parse_topic(registry, body), self.repository.resolve)
            except FhirError as exc:
                log.warning("SubscriptionTopic/%s is not served: %s", found.id, exc)
                continue
            catalog.topics[topic.url] = topic
            for kind in topic.resource_types():
                catalog.by_type.setdefault(kind, []).append(topic)
        templates: dict[str, dict[str, Any]] = {}
        async for found in every(store, "ActivityDefinition"):
            body = orjson.loads(found.body or b"{}")
            if body.get("url"):
                templates[str(body["url"])] = body
        plans = [orjson.loads(found.body or b"{}") async for found in every(store, "PlanDefinition")]
        catalog.steps = steps_by_topic(plans, templates)
        catalog.stops = stops_by_topic(plans)
        async for found in every(store, "Subscription"):
            body = orjson.loads(found.body or b"{}")
            if body.get("status") not in ("requested", "active"):
                continue
            try:
                subscriber = parse_subscription(registry, body, catalog.topics, self.config.policy)
            except FhirError as exc:
                log.warning("Subscription/%s is not served: %s", found.id, exc)
                continue
            catalog.subscribers[found.id] = subscriber
            if subscriber.topic not in catalog.topics:  # an R4-style subscription: its criteria is its topic
                implicit = catalog.topics[subscriber.topic] = query_topic(registry, subscriber.topic)
                for kind in implicit.resource_types():
                    catalog.by_type.setdefault(kind, []).append(implicit)
        catalog.needed = catalog.index_needs()
        self.catalog = catalog
        if self.active:
            await self._sync_channels()

    async def _sync_channels(self) -> None:
        wanted = self.catalog.subscribers
        for sid in [s for s in self.channels if s not in wanted]:
            await self.channels.pop(sid).stop()
        for sid, subscriber in wanted.items():
            channel = self.channels.get(sid)
            if channel is not None and channel.task is not None and not channel.task.done():
                channel.replace(subscriber)
                continue
            store = self.repository.store
            if sid not in self.counts:
                self.counts[sid] = self.recorded[sid] = await store.mark(f"subscription:{sid}:events") or 0
            if sid not in self.delivered:
                # no cursor yet: a new subscription (0), or one from before events were kept, with nothing known to
                # be pending; the cursor is saved with the next batch's events, in the same transaction
                found = await store.mark(f"subscription:{sid}:delivered")
                self.delivered[sid] = found if found is not None else self.counts[sid]
                if found is not None:
                    self._saved_delivered[sid] = found
            channel = Channel(subscriber, DeliveryConfig(self.config.base_url, self.config.policy,
                                                         self.config.retry_delays),
                              self._client, self._write_status, self.recorded[sid], acked=self.delivered[sid],
                              backlog=self._backlog, on_ack=self._on_ack, stats=self.stats)
            self.channels[sid] = channel
            channel.start()

    async def _write_status(self, subscription_id: str, status: str, error: str | None) -> None:
        """Record a status the engine decided on the stored Subscription (unless a client changed it since)."""
        try:
            stored = await self.repository.read("Subscription", subscription_id)
        except FhirError:
            return
        body = orjson.loads(stored.body or b"{}")
        if body.get("status") == status and body.get("error") == error:
            return
        body["status"] = status
        if error:
            body["error"] = error
        else:
            body.pop("error", None)
        try:
            await self.repository.update("Subscription", subscription_id, body, if_match=stored.vid)
        except FhirError as exc:  # changed meanwhile: the newer version decides
            log.info("Subscription/%s status not recorded: %s", subscription_id, exc)

    # -- the feed ---------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # other instances' commits wake no one here: look each second
                await asyncio.wait_for(self._wake.wait(), _POLL_S)
            self._wake.clear()
            try:
                if not await self.lease.held():
                    await self._stand_by()
                    if not self._wake.is_set():
                        self._idle.set()
                    continue
                if not self.active:
                    log.info("Subscription engine: this instance took the lease; resuming from the stored positions")
                    await self._take_over()
                await self._watch_config()
                if self._dirty:
                    await self._reload()
                await self._drain()
            except asyncio.CancelledError:
                raise
            except LeaseLost:
                log.warning("Subscription engine: the lease ran out during a batch; another instance takes over")
                continue
            except Exception:  # keep watching: a failure here must not end every subscription
                log.exception("Subscription engine: a batch failed; retrying shortly")
                await asyncio.sleep(1.0)
                self._wake.set()
                continue
            if not self._wake.is_set():
                self._idle.set()

    async def _drain(self) -> None:
        store = self.repository.store
        until = await store.last_seq()
        watched = set(self.catalog.by_type)
        while self.cursor < until:
            if not await self.lease.held():  # renewed batch by batch: a long backlog must not let it run out
                raise LeaseLost()
            batch = await store.changes(self.cursor, until, watched, _BATCH)
            tasks: list[Occurrence] = []
            start, counts = self.cursor, dict(self.counts)
            try:
                for n, change in enumerate(batch):
                    await self._handle(change, tasks)
                    if n % 50 == 49:
                        await asyncio.sleep(0)  # let requests in: matching shares the event loop with them
                if tasks:
                    await self.followup.run(tasks, self.catalog.steps, self.catalog.stops)
                self.cursor = batch[-1].seq if len(batch) == _BATCH else until
                await self._save_position(force=bool(tasks) or bool(self._pending))
            except BaseException:  # the batch is matched again, with the same numbers
                self.cursor, self.counts = start, counts
                self._pending.clear()
                raise
            self._dispatch()

    async def _save_position(self, force: bool = False) -> None:
        """Persist the batch's numbered events with the feed position, the event counts and the delivery cursors,
        in one transaction: at once after a batch that made Tasks or events, otherwise at most every few seconds
        (a commit with nothing to match costs no write of its own; after a crash the unsaved stretch is read
        again and matches nothing)."""
        if not force and time.monotonic() - self._saved_at < _SAVE_EVERY_S:
            return
        if not self.lease.surely_held():  # another instance may number the same events: it decides
            raise LeaseLost()
        marks = {CURSOR: self.cursor}
        marks.update({f"subscription:{sid}:events": n for sid, n in self.counts.items()
                      if self._saved_counts.get(sid) != n})
        delivered = dict(self.delivered)
        marks.update({f"subscription:{sid}:delivered": n for sid, n in delivered.items()
                      if self._saved_delivered.get(sid) != n})
        rows = [SubscriptionEvent(sid, e.number, e.at_ms, e.type, e.id, e.vid, e.method, e.withheld)
                for sid, e, _ in self._pending]
        # keep the newest `events_retained` for $events, and every event its receiver has not accepted yet
        keep = self.config.events_retained
        trim = {sid: min(self.counts[sid] - keep, delivered.get(sid, 0)) for sid in {r.subscription for r in rows}}
        await self.repository.store.record_events(rows, marks, {s: n for s, n in trim.items() if n > 0})
        self._saved_counts = dict(self.counts)
        self._saved_delivered.update(delivered)
        self._saved_at = time.monotonic()

    def _dispatch(self) -> None:
        """Hand the batch's events, now committed, to their senders (never before: a receiver only ever sees
        numbers the store holds)."""
        for sid, event, body in self._pending:
            self.recorded[sid] = event.number
            channel = self.channels.get(sid)
            if channel is not None:
                channel.events_since_start = event.number
                channel.queue.put_nowait((event, body))
        self._pending.clear()

    def _on_ack(self, subscription_id: str, number: int) -> None:
        """A receiver accepted events up to `number`: its cursor is saved within a second, with the others."""
        self.delivered[subscription_id] = max(number, self.delivered.get(subscription_id, 0))
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._save_acks(), name="subscription-delivery-cursors")

    async def _save_acks(self) -> None:
        await asyncio.sleep(_ACK_SAVE_S)
        delivered = dict(self.delivered)
        marks = {f"subscription:{sid}:delivered": n for sid, n in delivered.items()
                 if self._saved_delivered.get(sid) != n}
        if not marks or not self.lease.surely_held():
            return
        try:
            await self.repository.store.record_events([], marks, {})
        except FhirError as exc:  # the next acceptance or the next batch saves them
            log.warning("Delivery cursors not saved: %s", exc)
            return
        self._saved_delivered.update(delivered)

    async def _backlog(self, subscription_id: str, after: int, limit: int, bodies: bool,
                       ) -> list[tuple[Event, bytes | None]]:
        """Stored events after a number, with the versions' bodies when the payload carries them."""
        store = self.repository.store
        found = await store.subscription_events(subscription_id, after, None, limit)
        items: list[tuple[Event, bytes | None]] = []
        for e in found:
            body = None
            if bodies and e.method != "DELETE" and not e.withheld:
                version = await store.vread(e.type, e.id, e.vid)
                body = version.body if version is not None else None
            items.append((Event(e.number, e.at_ms, e.type, e.id, e.vid, e.method, e.withheld), body))
        return items

    async def _handle(self, change: StoredResource, tasks: list[Occurrence]) -> None:
        topics = self.catalog.by_type.get(change.type, [])
        action = _action(change)
        current = orjson.loads(change.body) if change.body else None
        previous: dict[str, Any] | None = None
        if change.vid > 1 and any(t.previous or t.fhirpath for topic in topics for t in topic.triggers
                                  if t.resource_type == change.type):
            before = await self.repository.store.vread(change.type, change.id, change.vid - 1)
            previous = orjson.loads(before.body) if before and before.body else None
        indexer, only = self.repository.indexer, self.catalog.needed.get(change.type, frozenset())
        rows_now = indexer.extract(change.type, current, only=only) if current is not None else None
        rows_before = indexer.extract(change.type, previous, only=only) if previous is not None else None
        for topic in topics:
            if not any(self._fires(t, change.type, action, previous, current, rows_before, rows_now)
                       for t in topic.triggers):
                continue
            focus = current if current is not None else previous
            rows = rows_now if rows_now is not None else rows_before
            if topic.url in self.catalog.steps or topic.url in self.catalog.stops:
                found = self.followup.occurrence(topic, change, current, rows_now)
                if found is not None:
                    tasks.append(found)
            if focus is not None and rows is not None:
                self._notify(topic, change, action, focus, rows)

    def _fires(self, trigger: Trigger, kind: str, action: str, previous: dict[str, Any] | None,
               current: dict[str, Any] | None, rows_before: IndexRows | None, rows_now: IndexRows | None) -> bool:
        if trigger.resource_type != kind or action not in trigger.interactions:
            return False
        # a side that does not exist (no previous version on create, none current on delete) passes its test
        results = []
        if trigger.previous is not None:
            results.append(previous is None or rows_before is None
                           or matches_all(trigger.previous.filters, previous, rows_before))
        if trigger.current is not None:
            results.append(current is None or rows_now is None
                           or matches_all(trigger.current.filters, current, rows_now))
        if results and not (all(results) if trigger.require_both else any(results)):
            return False
        if trigger.recent is not None:
            code, window = trigger.recent
            rows = rows_now if rows_now is not None else rows_before
            oldest = now_ms() - window
            if rows is not None and not all(high >= oldest for c, _, high in rows.dates if c == code):
                return False
        if trigger.fhirpath:
            return self._fhirpath_true(trigger.fhirpath, previous, current)
        return True

    def _fhirpath_true(self, expression: str, previous: dict[str, Any] | None, current: dict[str, Any] | None,
                       ) -> bool:
        compiled = self._fhirpath.get(expression)
        if compiled is None:
            compiled = self._fhirpath[expression] = fhirpathpy.compile(expression, model=fhirpath_model())
        try:
            result = compiled(current or previous or {}, {"current": current, "previous": previous})
        except Exception:  # noqa: BLE001 -- an expression that fails on this resource does not fire
            return False
        return bool(result) and result[0] is True

    def _notify(self, topic: Topic, change: StoredResource, action: str, focus: dict[str, Any],
                rows: IndexRows) -> None:
        for sid, subscriber in self.catalog.subscribers.items():
            if subscriber.topic != topic.url:
                continue
            if subscriber.end_ms is not None and subscriber.end_ms < now_ms():
                continue
            criteria = subscriber.filters.get(change.type)
            if criteria and not any(matches_all(c.filters, focus, rows) for c in criteria):
                continue
            number = self.counts.get(sid, 0) + 1
            self.counts[sid] = number
            withheld = self.audience is not None and not self.audience(subscriber, change.type, focus, rows)
            event = Event(number, change.updated_ms, change.type, change.id, change.vid, _method(action), withheld)
            self._pending.append((sid, event, None if withheld else change.body))

    # -- queries ($status, $events) ----------------------------------------------------------------
    def events_since_start(self, subscription_id: str) -> int:
        """How many events the subscription has had (those committed to the store)."""
        return self.recorded.get(subscription_id, 0)

    def pending_notifications(self) -> int:
        """Events committed to the store that their receivers have not accepted yet (subscriptions that are
        active or retrying; one in error or off numbers no more events and waits to be requested again)."""
        return sum(max(0, self.recorded.get(sid, 0) - self.delivered.get(sid, 0)) for sid in self.channels)

    async def retained(self, subscription_id: str, since: int | None, until: int | None) -> list[Event]:
        """The events numbered in [since, until] for $events, oldest first, from the store: at most the newest
        `events_retained` of the range."""
        newest = until if until is not None else self.recorded.get(subscription_id, 0)
        after = max((since or 1) - 1, newest - self.config.events_retained)
        found = await self.repository.store.subscription_events(subscription_id, after, until,
                                                               self.config.events_retained)
        return [Event(e.number, e.at_ms, e.type, e.id, e.vid, e.method, e.withheld) for e in found]
