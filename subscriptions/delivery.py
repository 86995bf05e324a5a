"""Rest-hook delivery for one subscription: handshake, ordered notifications with retries, heartbeats.

Each subscription has its own queue and sender, so a slow or failing endpoint delays only itself. Every
POST re-resolves the endpoint and connects to the address it checked (no DNS rebinding, no redirects).
A sender starts from its delivery cursor: the stored events after the last one its receiver accepted are
sent first (after a restart, or when an errored subscription is requested again), then the queued ones.
https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/channels.html#rest-hook
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx

from resources.ids import now_ms
from subscriptions.endpoints import BlockedEndpoint, EndpointPolicy
from subscriptions.notifications import Event, bundle, status_resource
from subscriptions.subscription import Subscriber

log = logging.getLogger("careloop.subscriptions")
# (subscription id, status, error text) -> record it on the stored Subscription
StatusWriter = Callable[[str, str, str | None], Awaitable[None]]
# (subscription id, after number, at most, with bodies) -> the stored events after that number, oldest first
BacklogReader = Callable[[str, int, int, bool], Awaitable[list[tuple[Event, bytes | None]]]]
# (subscription id, newest accepted number) -> advance the delivery cursor
AckWriter = Callable[[str, int], None]


@dataclass(frozen=True)
class DeliveryConfig:
    """How hard to try: retry delays (seconds) after a failed POST, and where links point."""

    base_url: str
    policy: EndpointPolicy
    retry_delays: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)


class DeliveryFailed(Exception):
    """The endpoint refused or could not be reached."""


def _pinned(url: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The URL with its host replaced by the checked address (the Host header keeps the name)."""
    parts = urlsplit(url)
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


@dataclass
class DeliveryStats:
    """Failures of every subscription's sender together (read by the metrics)."""

    failed_posts: int = 0  # each failed attempt, retries included
    failed_subscriptions: int = 0  # set to error once the retries ran out


@dataclass
class Channel:
    """The sender of one subscription's notifications."""

    subscriber: Subscriber
    config: DeliveryConfig
    client: httpx.AsyncClient
    write_status: StatusWriter
    events_since_start: int = 0
    queue: asyncio.Queue[tuple[Event, bytes | None]] = field(default_factory=asyncio.Queue)
    last_sent: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    delivered: int = 0
    acked: int = 0  # the newest event number the receiver accepted (the delivery cursor)
    backlog: BacklogReader | None = None
    on_ack: AckWriter | None = None
    stats: DeliveryStats = field(default_factory=DeliveryStats)

    def start(self) -> None:
        """Run the sender (the handshake first when the subscription is only requested)."""
        self.task = asyncio.create_task(self._run(), name=f"subscription-{self.subscriber.id}")

    async def stop(self) -> None:
        """Stop sending; queued notifications stay stored and are sent by the next sender from the cursor."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def replace(self, subscriber: Subscriber) -> None:
        """Serve a newer version of the same subscription (new endpoint, headers or content)."""
        self.subscriber = subscriber

    async def post(self, payload: bytes) -> None:
        """One POST of a notification Bundle; DeliveryFailed unless the endpoint answers 2xx."""
        sub = self.subscriber
        try:
            addresses = await self.config.policy.resolve(sub.endpoint)
        except BlockedEndpoint as exc:
            raise DeliveryFailed(str(exc)) from exc
        parts = urlsplit(sub.endpoint)
        headers = {"content-type": "application/fhir+json", "host": parts.netloc.rsplit("@", 1)[-1]}
        headers.update(dict(sub.headers))
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        try:
            response = await self.client.post(_pinned(sub.endpoint, addresses[0]), content=payload,
                                              headers=headers, timeout=sub.timeout_s, extensions=extensions)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{exc.__class__.__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"the endpoint answered {response.status_code}")
        self.last_sent = time.monotonic()

    async def _post_with_retries(self, payload: bytes) -> str | None:
        """None once delivered; the last error when every attempt failed."""
        error = None
        for delay in (0.0, *self.config.retry_delays):
            if delay:
                await asyncio.sleep(delay)
            try:
                await self.post(payload)
                return None
            except DeliveryFailed as exc:
                error = str(exc)
                self.stats.failed_posts += 1
        self.stats.failed_subscriptions += 1
        return error

    def _payload(self, kind: str, batch: list[tuple[Event, bytes | None]] | None = None,
                 status: str = "active") -> bytes:
        """A notification Bundle of this subscription: handshake, heartbeat or the events of a batch."""
        sub, base = self.subscriber, self.config.base_url
        items = batch or []
        resource = status_resource(sub.id, status, sub.topic, kind, self.events_since_start,
                                   [event for event, _ in items], base)
        content = sub.content if kind == "event-notification" else "empty"
        return bundle(sub.id, resource, content, items, base, now_ms())

    async def handshake(self) -> bool:
        """The handshake of a requested subscription; records active or error on the Subscription."""
        payload = self._payload("handshake", status="requested")
        error = await self._post_with_retries(payload)
        if error is None:
            await self.write_status(self.subscriber.id, "active", None)
            return True
        await self.write_status(self.subscriber.id, "error", f"Handshake failed: {error}")
        return False

    async def _run(self) -> None:
        try:
            if self.subscriber.status == "requested" and not await self.handshake():
                return
            if not await self._catch_up():
                return
            while True:
                item = await self._next()
                if item is None:
                    await self._heartbeat()
                    continue
                batch = [item]
                while len(batch) < self.subscriber.max_count and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                batch = [(e, b) for e, b in batch if e.number > self.acked]  # already sent from the store
                if batch and batch[0][0].number > self.acked + 1 and not await self._catch_up():
                    return
                batch = [(e, b) for e, b in batch if e.number > self.acked]
                if batch and not await self._send(batch):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not end notifications silently for every other subscription
            log.exception("Subscription/%s: sender stopped", self.subscriber.id)

    async def _send(self, batch: list[tuple[Event, bytes | None]]) -> bool:
        """Deliver one batch with retries; advance the cursor on success, record error after the last retry."""
        error = await self._post_with_retries(self._payload("event-notification", batch))
        if error is not None:
            log.warning("Subscription/%s: notification failed after retries: %s", self.subscriber.id, error)
            await self.write_status(self.subscriber.id, "error", f"Delivery failed: {error}")
            return False
        self.delivered += len(batch)
        self.acked = batch[-1][0].number
        if self.on_ack is not None:
            self.on_ack(self.subscriber.id, self.acked)
        return True

    async def _catch_up(self) -> bool:
        """Send the stored events after the cursor, max-count at a time; False once the subscription failed."""
        if self.backlog is None:
            return True
        full = self.subscriber.content == "full-resource"
        while self.acked < self.events_since_start:
            batch = await self.backlog(self.subscriber.id, self.acked, self.subscriber.max_count, full)
            if not batch:  # trimmed by retention: the numbers show the receiver the gap
                return True
            if not await self._send(batch):
                return False
        return True

    async def _next(self) -> tuple[Event, bytes | None] | None:
        """The next queued event, or None when a heartbeat is due first."""
        period = self.subscriber.heartbeat_s
        if period is None:
            return await self.queue.get()
        wait = max(0.0, self.last_sent + period - time.monotonic())
        try:
            return await asyncio.wait_for(self.queue.get(), timeout=wait)
        except TimeoutError:
            return None

    async def _heartbeat(self) -> None:
        payload = self._payload("heartbeat")
        try:
            await self.post(payload)
        except DeliveryFailed as exc:  # a missed heartbeat is itself the signal; the next one tries again
            log.info("Subscription/%s: heartbeat failed: %s", self.subscriber.id, exc)
            self.last_sent = time.monotonic()
