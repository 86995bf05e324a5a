"""Prometheus metrics at /metrics: requests, store latency, notification lag and failures, Tasks, audit queue.

Request counts and latencies are observed by a pure ASGI middleware (only installed when metrics are on);
everything else is read when scraped: a store round trip is timed, the subscription engine's position and
delivery cursors are compared, and the Task counts are searched at most once per `TASK_CACHE_S`.
https://prometheus.github.io/client_python/
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resources.ids import now_ms
from resources.search.dates import date_range
from resources.search.parse import parse_search
from server.audit import classify
from server.context import Services

MODES = ("off", "open", "token")
TASK_CACHE_S = 30.0  # the Task counts are a search each: a scrape every few seconds must not repeat them
OPEN_TASK_STATUSES = "draft,requested,received,accepted,ready,in-progress,on-hold"
_SCAN_PAGE = 500
_SCAN_LIMIT = 20_000  # overdue Tasks are counted from the open ones' deadlines, at most this many read
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

router = APIRouter()
log = logging.getLogger("careloop.metrics")


def interaction_of(method: str, path: str) -> str:
    """The label of a request: its FHIR interaction (operations by name), or the area of a non-FHIR path."""
    if path.startswith("/fhir"):
        interaction, _, _, operation = classify(method, path[len("/fhir"):])
        return f"operation:{operation}" if operation else interaction
    if path.startswith("/auth"):
        return "auth"
    return "other"


@dataclass
class TaskCounts:
    """Open and overdue Tasks, searched at most every TASK_CACHE_S seconds."""

    open: int = 0
    overdue: int = 0
    at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, svc: Services) -> None:
        """Count again when the cached figures are older than TASK_CACHE_S."""
        async with self.lock:
            if time.monotonic() - self.at < TASK_CACHE_S:
                return
            self.open, self.overdue = await _count_tasks(svc)
            self.at = time.monotonic()


async def _count_tasks(svc: Services) -> tuple[int, int]:
    """(open, overdue): the open Tasks' total, and those whose deadline (restriction.period.end, which the
    pathways set and no search parameter reaches) has passed, read page by page up to _SCAN_LIMIT."""
    repository = svc.repository
    params = [("status", OPEN_TASK_STATUSES), ("_count", str(_SCAN_PAGE))]
    page = await repository.store.search(
        parse_search("Task", [*params, ("_total", "accurate")], repository.registry, repository.search_limits).query)
    total, now, overdue, read = page.total or 0, now_ms(), 0, 0
    while True:
        for res in page.resources:
            read += 1
            end = ((orjson.loads(res.body or b"{}").get("restriction") or {}).get("period") or {}).get("end")
            covered = date_range(end) if isinstance(end, str) else None
            if covered is not None and covered[1] < now:
                overdue += 1
        if page.next_cursor is None or read >= _SCAN_LIMIT:
            return total, overdue
        page = await repository.store.search(parse_search(
            "Task", [*params, ("_cursor", page.next_cursor)], repository.registry, repository.search_limits).query)


class _Scraped(Collector):
    """Figures read from the running services when /metrics is asked for (see Metrics.refresh)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.counters: dict[str, float] = {}

    def collect(self) -> Iterable[Metric]:
        gauges = {
            "careloop_store_probe_seconds": "Time of one store round trip (the newest change's number) at scrape",
            "careloop_store_up": "1 when the store answered the probe",
            "careloop_subscription_feed_lag": "Committed changes the subscription engine has not matched yet",
            "careloop_notifications_pending": "Numbered events not yet accepted by their receivers",
            "careloop_tasks_open": "Open Tasks (draft to on-hold), counted at most every 30 s",
            "careloop_tasks_overdue": "Open Tasks past restriction.period.end, counted at most every 30 s",
            "careloop_audit_queue_depth": "Requests waiting for their AuditEvents to be written",
            "careloop_audit_up": "1 when the audit trail can be written",
        }
        for name, text in gauges.items():
            if name in self.values:
                yield GaugeMetricFamily(name, text, value=self.values[name])
        counters = {
            "careloop_notification_failed_posts": "Notification POSTs that failed (each retry counts)",
            "careloop_notification_failed_subscriptions": "Times a subscription was set to error after its retries",
        }
        for name, text in counters.items():
            if name in self.counters:
                yield CounterMetricFamily(name, text, value=self.counters[name])

    def describe(self) -> Iterator[Metric]:
        return iter(())


class Metrics:
    """The app's own registry: request metrics observed by the middleware, the rest read at scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("careloop_http_requests", "HTTP requests by interaction and status",
                                ("interaction", "status"), registry=self.registry)
        self.latency = Histogram("careloop_http_request_duration_seconds", "Time to answer, by interaction",
                                 ("interaction",), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.scraped = _Scraped()
        self.registry.register(self.scraped)
        self.tasks = TaskCounts()

    def observe(self, interaction: str, status: int, seconds: float) -> None:
        """One answered request."""
        self.requests.labels(interaction, str(status)).inc()
        self.latency.labels(interaction).observe(seconds)

    async def refresh(self, svc: Services) -> None:
        """Read the figures that live in the services (a failing part is reported as down, not raised)."""
        values, counters = self.scraped.values, self.scraped.counters
        store = svc.repository.store
        started = time.perf_counter()
        try:
            newest = await store.last_seq()
        except Exception:  # noqa: BLE001 - a store that cannot answer is what this figure reports
            values["careloop_store_up"] = 0
            values.pop("careloop_store_probe_seconds", None)
            newest = None
        else:
            values["careloop_store_up"] = 1
            values["careloop_store_probe_seconds"] = time.perf_counter() - started
        engine = svc.subscriptions
        if engine is not None:
            if newest is not None:
                values["careloop_subscription_feed_lag"] = max(0, newest - engine.cursor)
            values["careloop_notifications_pending"] = engine.pending_notifications()
            counters["careloop_notification_failed_posts"] = engine.stats.failed_posts
            counters["careloop_notification_failed_subscriptions"] = engine.stats.failed_subscriptions
        if svc.audit is not None:
            values["careloop_audit_queue_depth"] = svc.audit.recorder.queue_depth
            values["careloop_audit_up"] = 1 if svc.audit.recorder.ready and svc.audit.problem is None else 0
        if newest is not None:
            try:
                await self.tasks.refresh(svc)
            except Exception as exc:  # noqa: BLE001 - the last figures stay; a scrape must still answer
                log.warning("Task counts for /metrics not refreshed: %s", exc)
            if self.tasks.at > float("-inf"):
                values["careloop_tasks_open"] = self.tasks.open
                values["careloop_tasks_overdue"] = self.tasks.overdue


class MetricsMiddleware:
    """Counts and times every HTTP request by interaction and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            if path != "/metrics":  # the scraper's own requests would only measure the scraper
                self.metrics.observe(interaction_of(scope["method"], path), status, time.perf_counter() - started)


def _allowed(request: Request, svc: Services) -> bool:
    """Whether the caller may read the metrics under CARELOOP_METRICS."""
    mode = svc.settings.metrics
    if mode == "open":
        return True
    secret = svc.settings.metrics_token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return (mode == "token" and secret is not None and scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(), secret.get_secret_value().encode()))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The Prometheus text exposition; 404 when metrics are off, 401 without the configured bearer token."""
    svc: Services = request.app.state.services
    found: Metrics | None = getattr(request.app.state, "metrics", None)
    if found is None or svc.settings.metrics == "off":
        return JSONResponse({"error": "not_found"}, status_code=404)
    if not _allowed(request, svc):
        return JSONResponse({"error": "invalid_token", "error_description": "the metrics token is required"},
                            status_code=401, headers={"www-authenticate": 'Bearer realm="metrics"'})
    await found.refresh(svc)
    return Response(generate_latest(found.registry), media_type=CONTENT_TYPE_LATEST,
                    headers={"cache-control": "no-store"})


def check_settings(mode: str, token: Any) -> None:
    """SystemExit for a metrics mode that is not one, or token mode without a token."""
    if mode not in MODES:
        raise SystemExit(f"CARELOOP_METRICS={mode!r}: use one of {', '.join(MODES)}")
    if mode == "token" and (token is None or len(token.get_secret_value()) < 16):
        raise SystemExit("CARELOOP_METRICS=token needs CARELOOP_METRICS_TOKEN (16 characters or more)")
