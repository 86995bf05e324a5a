"""Fixtures for subscription tests: loopback endpoints allowed, quick retries, a real receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from resources.ids import now_ms
from resources.search.dates import format_instant
from server.settings import Settings
from subscriptions.engine import SubscriptionEngine
from subscriptions.subscription import FILTER_CRITERIA, HEARTBEAT_PERIOD, MAX_COUNT, PAYLOAD_CONTENT
from tests.conftest import FHIR_JSON, body
from tests.support.receiver import Receiver, running_receiver

PAIN_TOPIC = "http://careloop.health/fhir/SubscriptionTopic/pain-score-high"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test receiver listens on loopback, which only an operator's allowance opens; retries are quick."""
    return settings.model_copy(update={"subscription_allowed_networks": ["127.0.0.0/8"],
                                       "subscription_retry_delays": [0.05, 0.05]})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as found:
        yield found


def engine(app: FastAPI) -> SubscriptionEngine:
    """The app's subscription engine."""
    found: SubscriptionEngine = app.state.services.subscriptions
    return found


def subscription(endpoint: str, topic: str = PAIN_TOPIC, filters: tuple[str, ...] = (), content: str = "full-resource",
                 heartbeat: int | None = None, max_count: int | None = None, **extra: Any) -> dict[str, Any]:
    """A Backport rest-hook Subscription in its R4B form."""
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                               "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]},
                               "header": ["Authorization: Bearer receiver-secret"]}
    channel_ext = []
    if heartbeat is not None:
        channel_ext.append({"url": HEARTBEAT_PERIOD, "valueUnsignedInt": heartbeat})
    if max_count is not None:
        channel_ext.append({"url": MAX_COUNT, "valuePositiveInt": max_count})
    if channel_ext:
        channel["extension"] = channel_ext
    resource: dict[str, Any] = {"resourceType": "Subscription", "status": "requested", "reason": "test",
                                "criteria": topic, "channel": channel}
    if filters:
        resource["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": f} for f in filters]}
    resource.update(extra)
    return resource


async def subscribe(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    """Create a Subscription and return it as stored."""
    response = await client.post("/fhir/Subscription", content=body(resource), headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    stored: dict[str, Any] = response.json()
    return stored


def just_now() -> str:
    """The current instant, as FHIR writes it."""
    return format_instant(now_ms())


def pain_score(patient_id: str, value: int, when: str | None = None) -> dict[str, Any]:
    """A pain score (LOINC 72514-3, 0 to 10), taken now unless `when` says otherwise."""
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
            "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": when or just_now(),
            "valueQuantity": {"value": value, "unit": "{score}", "system": "http://unitsofmeasure.org",
                              "code": "{score}"}}


async def status_becomes(client: httpx.AsyncClient, subscription_id: str, status: str) -> dict[str, Any]:
    """Poll the stored Subscription until the engine has recorded a status (as a client would)."""
    for _ in range(200):
        stored: dict[str, Any] = (await client.get(f"/fhir/Subscription/{subscription_id}")).json()
        if stored["status"] == status:
            return stored
        await asyncio.sleep(0.05)
    raise AssertionError(f"Subscription/{subscription_id} stayed {stored['status']}, not {status}")
