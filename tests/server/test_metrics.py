"""Prometheus metrics at /metrics (issue 34, item 4): protected by CARELOOP_METRICS, parsed as Prometheus does.

https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from resources.ids import now_ms
from resources.search.dates import format_instant
from server.metrics import check_settings, interaction_of
from tests.auth.conftest import World, open_world
from tests.subscriptions.conftest import pain_score, subscription
from tests.support.receiver import running_receiver

pytestmark = pytest.mark.anyio
TOKEN = "metrics-secret-0123456789"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(world: World) -> Samples:
    response = await world.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


def task(patient: str, status: str, end_ms: int) -> bytes:
    return orjson.dumps({"resourceType": "Task", "status": status, "intent": "order", "for": {
        "reference": f"Patient/{patient}"}, "restriction": {"period": {"end": format_instant(end_ms)}}})


@pytest.mark.parametrize(("mode", "token", "refused"), [
    ("off", None, False), ("open", None, False), ("token", SecretStr(TOKEN), False),
    ("token", None, True), ("token", SecretStr("short"), True), ("on", None, True), ("", None, True)])
def test_settings(mode: str, token: SecretStr | None, refused: bool) -> None:
    if refused:
        with pytest.raises(SystemExit):
            check_settings(mode, token)
    else:
        check_settings(mode, token)


@pytest.mark.parametrize(("method", "path", "label"), [
    ("GET", "/fhir/Patient/1", "read"), ("GET", "/fhir/Patient", "search-type"), ("POST", "/fhir/Patient", "create"),
    ("POST", "/fhir", "batch"), ("GET", "/fhir/Patient/1/$everything", "operation:everything"),
    ("POST", "/auth/token", "auth"), ("GET", "/readyz", "other")])
def test_interaction_labels(method: str, path: str, label: str) -> None:
    assert interaction_of(method, path) == label


async def test_off_by_default(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        assert (await world.client.get("/metrics")).status_code == 404


async def test_open_needs_no_token(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database, metrics="open") as world:
        response = await world.client.get("/metrics")
        assert response.status_code == 200
        assert ("careloop_store_up", ()) in samples(response.text)


async def test_token_is_required_and_compared(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database, metrics="token", metrics_token=TOKEN) as world:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        world.admin):  # a FHIR access token is not the metrics secret
            refused = await world.client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in refused.text
        assert (await world.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200


def counted(found: Samples, before: Samples, interaction: str, status: str) -> float:
    """Requests of one interaction and status between two scrapes."""
    key = ("careloop_http_requests_total", (("interaction", interaction), ("status", status)))
    return found.get(key, 0) - before.get(key, 0)


async def test_requests_store_tasks_and_audit(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database, metrics="token", metrics_token=TOKEN) as world:
        alice = world.ids["alice"]
        hour = 3_600_000
        # before the first scrape: the Task figures are kept for 30 s once read
        for status, end in (("requested", now_ms() - hour), ("in-progress", now_ms() + hour),
                            ("completed", now_ms() - hour)):
            made = await world.client.post("/fhir/Task", content=task(alice, status, end), headers=world.admin)
            assert made.status_code == 201, made.text
        before = await scrape(world)  # the world's own set-up made requests too
        for _ in range(3):
            assert (await world.client.get(f"/fhir/Patient/{alice}", headers=world.admin)).status_code == 200
        assert (await world.client.get("/fhir/Patient/nobody", headers=world.admin)).status_code == 404
        assert (await world.client.get("/fhir/Patient")).status_code == 401
        found = await scrape(world)
        assert counted(found, before, "read", "200") == 3
        assert counted(found, before, "read", "404") == 1
        assert counted(found, before, "search-type", "401") == 1
        latency = ("careloop_http_request_duration_seconds_count", (("interaction", "read"),))
        assert found[latency] - before.get(latency, 0) == 4
        assert found[("careloop_store_up", ())] == 1
        assert 0 < found[("careloop_store_probe_seconds", ())] < 5
        assert found[("careloop_tasks_open", ())] == 2  # the completed one is not open
        assert found[("careloop_tasks_overdue", ())] == 1
        assert found[("careloop_audit_up", ())] == 1
        assert found[("careloop_audit_queue_depth", ())] == 0  # every answer above waited for its record
        # the scraper's own requests are not counted
        assert not any(labels == (("interaction", "other"), ("status", "200")) for _, labels in found)


async def test_delivery_failures_and_pending_notifications(tmp_path: Path, seeded_database: Path) -> None:
    # one quick retry, then a long wait: the event is still pending when the figures are read
    async with running_receiver() as receiver, open_world(
            tmp_path, seeded_database, metrics="token", metrics_token=TOKEN, subscription_retry_delays=[0.05, 60],
            subscription_allowed_networks=["127.0.0.0/8"]) as world:
        made = await world.client.post("/fhir/Subscription", content=orjson.dumps(subscription(receiver.url)),
                                       headers=world.admin)
        assert made.status_code == 201, made.text
        await receiver.wait_for("handshake")
        before = await scrape(world)
        assert before[("careloop_notification_failed_posts_total", ())] == 0
        assert before[("careloop_notifications_pending", ())] == 0
        receiver.answer = 503
        stored = await world.client.post("/fhir/Observation", content=orjson.dumps(pain_score(world.ids["alice"], 9)),
                                         headers=world.admin)
        assert stored.status_code == 201
        await world.app.state.services.subscriptions.settled()
        await receiver.wait_for("event-notification", count=2)  # the first try and its quick retry
        await asyncio.sleep(0.2)
        found = await scrape(world)
        assert found[("careloop_notification_failed_posts_total", ())] == 2
        assert found[("careloop_notification_failed_subscriptions_total", ())] == 0  # still retrying
        assert found[("careloop_notifications_pending", ())] == 1
        assert found[("careloop_subscription_feed_lag", ())] == 0
