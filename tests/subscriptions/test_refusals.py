"""Subscriptions and topics the server cannot serve are refused with 422 naming the element; nothing is stored.

Endpoints on private, loopback or link-local addresses are refused unless the operator allows the network
(SECURITY.md case 55). https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for
from tests.subscriptions.conftest import PAIN_TOPIC, subscription

pytestmark = pytest.mark.anyio


async def refused(client: httpx.AsyncClient, resource: dict[str, Any], code: str, expression: str) -> str:
    response = await client.post(f"/fhir/{resource['resourceType']}", content=body(resource), headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == code
    assert issue["expression"][0].startswith(expression), issue
    stored = (await client.get(f"/fhir/{resource['resourceType']}", params={"_count": "200"})).json()
    assert all(e["resource"].get("reason") != "refused" for e in stored.get("entry", []))
    return str(issue["diagnostics"])


@pytest.mark.parametrize("endpoint", [
    "http://127.0.0.1:9/hook", "http://localhost/hook", "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/hook", "http://[::1]/hook", "http://127.0.0.1:27017/", "http://[::ffff:127.0.0.1]/x",
    "http://192.168.1.20/hook",
])
async def test_private_endpoints_are_refused(settings: Settings, endpoint: str) -> None:
    closed = settings.model_copy(update={"subscription_allowed_networks": []})
    async with client_for(closed) as client:
        text = await refused(client, subscription(endpoint, reason="refused"), "business-rule",
                             "Subscription.channel.endpoint")
        assert "public addresses" in text


@pytest.mark.parametrize("endpoint", ["file:///etc/passwd", "gopher://example.org/", "hook", "https://u:p@x.org/"])
async def test_endpoints_that_are_not_http_urls(client: httpx.AsyncClient, endpoint: str) -> None:
    await refused(client, subscription(endpoint, reason="refused"), "business-rule", "Subscription.channel.endpoint")


async def test_unknown_topic_channel_and_filters(client: httpx.AsyncClient) -> None:
    url = "https://receiver.example.org/hook"
    text = await refused(client, subscription(url, topic="http://x.org/SubscriptionTopic/none", reason="refused"),
                         "business-rule", "Subscription.criteria")
    assert "SubscriptionTopic" in text
    email = subscription(url, reason="refused")
    email["channel"]["type"] = "email"
    await refused(client, email, "not-supported", "Subscription.channel.type")
    text = await refused(client, subscription(url, filters=("Observation?code=1234-5",), reason="refused"),
                         "business-rule", "Subscription.criteria.extension")
    assert "does not allow filtering by code" in text
    await refused(client, subscription(url, filters=("Patient?name=x",), reason="refused"), "business-rule",
                  "Subscription.criteria.extension")
    await refused(client, subscription(url, filters=("Observation?unknown=1",), reason="refused"), "business-rule",
                  "Subscription.criteria.extension")
    chained = subscription(url, filters=("Observation?patient.name=smith",), reason="refused")
    text = await refused(client, chained, "business-rule", "Subscription.criteria.extension")


async def test_topics_the_engine_cannot_evaluate(client: httpx.AsyncClient) -> None:
    base = {"resourceType": "SubscriptionTopic", "url": "http://x.org/topic", "status": "active"}
    await refused(client, {**base, "resourceTrigger": [{"resource": "Unicorn"}]}, "business-rule",
                  "SubscriptionTopic.resourceTrigger[0].resource")
    chain = {"resource": "Observation", "queryCriteria": {"current": "Observation?subject.name=x"}}
    await refused(client, {**base, "resourceTrigger": [chain]}, "business-rule",
                  "SubscriptionTopic.resourceTrigger[0].queryCriteria.current")
    broken = {"resource": "Observation", "fhirPathCriteria": "%current.value.where("}
    await refused(client, {**base, "resourceTrigger": [broken]}, "business-rule",
                  "SubscriptionTopic.resourceTrigger[0].fhirPathCriteria")
    await refused(client, base, "required", "SubscriptionTopic.resourceTrigger")


async def test_a_new_subscription_starts_requested(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Subscription", content=body(subscription(
        "https://receiver.example.org/hook", topic=PAIN_TOPIC, status="active")), headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.json()["status"] == "requested"  # it becomes active through its handshake
