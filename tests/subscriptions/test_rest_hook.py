"""Rest-hook subscriptions end to end: a real receiver gets the handshake, notifications and heartbeats.

https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/channels.html#rest-hook
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create
from tests.factories import observation, patient
from tests.subscriptions.conftest import engine, pain_score, status_becomes, subscribe, subscription
from tests.support.receiver import Receiver

pytestmark = pytest.mark.anyio


async def test_handshake_then_filtered_full_resource_notifications(app: FastAPI, client: httpx.AsyncClient,
                                                                    receiver: Receiver) -> None:
    mine, other = await create(client, patient()), await create(client, patient(family="Other"))
    sub = await subscribe(client, subscription(receiver.url, filters=(f"Observation?patient={mine['id']}",)))
    assert sub["status"] == "requested"
    handshake = (await receiver.wait_for("handshake"))[0]
    assert handshake.body["type"] == "history"
    assert handshake.status["subscription"]["reference"].endswith(f"Subscription/{sub['id']}")
    assert handshake.headers["authorization"] == "Bearer receiver-secret"
    assert handshake.headers["content-type"] == "application/fhir+json"
    await status_becomes(client, sub["id"], "active")

    await create(client, pain_score(other["id"], 8))  # another patient: filtered out
    await create(client, pain_score(mine["id"], 2))  # below the topic's threshold
    high = await create(client, pain_score(mine["id"], 7))
    note = (await receiver.wait_for("event-notification"))[0]
    await engine(app).settled()
    await asyncio.sleep(0.2)
    assert len(receiver.of_type("event-notification")) == 1
    status = note.status
    assert status["eventsSinceSubscriptionStart"] == "1"
    assert status["topic"] == "http://careloop.health/fhir/SubscriptionTopic/pain-score-high"
    event = status["notificationEvent"][0]
    assert event["eventNumber"] == "1"
    focus = note.body["entry"][1]
    assert event["focus"]["reference"].endswith(f"/Observation/{high['id']}")
    assert event["focus"]["reference"] == focus["fullUrl"]  # the Backport IG's form: unversioned, as the entry
    assert focus["resource"]["id"] == high["id"]
    assert focus["resource"]["valueQuantity"]["value"] == 7
    assert focus["request"] == {"method": "POST", "url": "Observation"}

    changed = {**high, "valueQuantity": {**high["valueQuantity"], "value": 9}}
    await client.put(f"/fhir/Observation/{high['id']}", content=body(changed), headers=FHIR_JSON)
    second = (await receiver.wait_for("event-notification", 2))[1]
    assert second.status["eventsSinceSubscriptionStart"] == "2"
    assert second.body["entry"][1]["request"] == {"method": "PUT", "url": f"Observation/{high['id']}"}


async def test_id_only_and_empty_payloads(client: httpx.AsyncClient, receiver: Receiver) -> None:
    someone = await create(client, patient())
    await subscribe(client, subscription(receiver.url, content="id-only"))
    await subscribe(client, subscription(receiver.url, content="empty"))
    await receiver.wait_for("handshake", 2)
    stored = await create(client, pain_score(someone["id"], 6))
    notes = await receiver.wait_for("event-notification", 2)
    shapes = sorted(len(n.body["entry"]) for n in notes)
    assert shapes == [1, 2]
    id_only = next(n for n in notes if len(n.body["entry"]) == 2).body["entry"][1]
    assert "resource" not in id_only
    assert id_only["fullUrl"].endswith(f"/Observation/{stored['id']}")


async def test_r4_style_query_criteria(client: httpx.AsyncClient, receiver: Receiver) -> None:
    someone = await create(client, patient())
    sub = subscription(receiver.url, topic="Observation?code=http://loinc.org|2339-0")
    await subscribe(client, sub)
    await receiver.wait_for("handshake")
    await create(client, observation(f"Patient/{someone['id']}", code="8480-6", value=120, unit="mm[Hg]"))
    glucose = await create(client, observation(f"Patient/{someone['id']}"))
    note = (await receiver.wait_for("event-notification"))[0]
    assert note.body["entry"][1]["resource"]["id"] == glucose["id"]


async def test_events_are_batched_up_to_max_count(app: FastAPI, client: httpx.AsyncClient,
                                                  receiver: Receiver) -> None:
    someone = await create(client, patient())
    await subscribe(client, subscription(receiver.url, max_count=10))
    await receiver.wait_for("handshake")
    entries = [{"resource": pain_score(someone["id"], 5 + n % 5), "request": {"method": "POST", "url": "Observation"}}
               for n in range(25)]
    response = await client.post("/fhir", content=body({"resourceType": "Bundle", "type": "transaction",
                                                        "entry": entries}), headers=FHIR_JSON)
    assert response.status_code == 200
    await engine(app).settled()
    deadline = asyncio.get_running_loop().time() + 10
    while sum(len(n.status.get("notificationEvent", [])) for n in receiver.of_type("event-notification")) < 25:
        assert asyncio.get_running_loop().time() < deadline, "not every event was delivered"
        await asyncio.sleep(0.05)
    notes = receiver.of_type("event-notification")
    assert all(len(n.status["notificationEvent"]) <= 10 for n in notes)
    numbers = [int(e["eventNumber"]) for n in notes for e in n.status["notificationEvent"]]
    assert numbers == list(range(1, 26))


async def test_heartbeat(client: httpx.AsyncClient, receiver: Receiver) -> None:
    await subscribe(client, subscription(receiver.url, heartbeat=1))
    await receiver.wait_for("handshake")
    beat = (await receiver.wait_for("heartbeat", timeout=5))[0]
    assert beat.body["entry"][0]["resource"]["status"] == "active"
    assert len(beat.body["entry"]) == 1


async def test_failing_endpoint_puts_subscription_in_error(app: FastAPI, client: httpx.AsyncClient,
                                                          receiver: Receiver) -> None:
    receiver.answer = 500
    sub = await subscribe(client, subscription(receiver.url))
    await receiver.wait_for("handshake", 3)  # the first try and two retries
    stored = await status_becomes(client, sub["id"], "error")
    assert "500" in stored["error"]
    someone = await create(client, patient())
    await create(client, pain_score(someone["id"], 9))
    await engine(app).settled()
    await asyncio.sleep(0.2)
    assert receiver.of_type("event-notification") == []  # a subscription in error gets nothing more


async def test_status_and_events_operations(app: FastAPI, client: httpx.AsyncClient, receiver: Receiver) -> None:
    someone = await create(client, patient())
    sub = await subscribe(client, subscription(receiver.url))
    await receiver.wait_for("handshake")
    made = [await create(client, pain_score(someone["id"], v)) for v in (5, 6, 7)]
    await receiver.wait_for("event-notification")
    await engine(app).settled()

    status = (await client.get(f"/fhir/Subscription/{sub['id']}/$status")).json()
    assert status["resourceType"] == "Bundle" and status["type"] == "searchset"
    state = status["entry"][0]["resource"]
    assert state["type"] == "query-status" and state["status"] == "active"
    assert state["eventsSinceSubscriptionStart"] == "3"
    listed = (await client.get("/fhir/Subscription/$status", params={"id": sub["id"]})).json()
    assert listed["total"] == 1

    events = (await client.get(f"/fhir/Subscription/{sub['id']}/$events",
                               params={"eventsSinceNumber": "2", "content": "full-resource"})).json()
    assert events["type"] == "history"
    head = events["entry"][0]["resource"]
    assert head["type"] == "query-event"
    assert [e["eventNumber"] for e in head["notificationEvent"]] == ["2", "3"]
    assert [e["resource"]["id"] for e in events["entry"][1:]] == [made[1]["id"], made[2]["id"]]
    bad = await client.get(f"/fhir/Subscription/{sub['id']}/$events", params={"content": "everything"})
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == ["content"]


async def test_events_are_served_from_the_store_after_a_restart(settings: Settings, receiver: Receiver) -> None:
    kept = settings.model_copy(update={"subscription_events_retained": 4})
    async with client_for(kept) as client:
        someone = await create(client, patient())
        sub = await subscribe(client, subscription(receiver.url))
        await receiver.wait_for("handshake")
        made = [await create(client, pain_score(someone["id"], 4 + n)) for n in range(6)]
        delivered = await receiver.wait_for("event-notification")
        while sum(len(n.status.get("notificationEvent", [])) for n in delivered) < 6:
            delivered = await receiver.wait_for("event-notification", len(delivered) + 1)
    async with client_for(kept) as client:  # a new process on the same file: nothing held in memory
        events = (await client.get(f"/fhir/Subscription/{sub['id']}/$events",
                                   params={"content": "full-resource"})).json()
        head = events["entry"][0]["resource"]
        assert head["eventsSinceSubscriptionStart"] == "6"
        assert [e["eventNumber"] for e in head["notificationEvent"]] == ["3", "4", "5", "6"]  # the newest 4 kept
        assert [e["resource"]["id"] for e in events["entry"][1:]] == [m["id"] for m in made[2:]]
        ranged = (await client.get(f"/fhir/Subscription/{sub['id']}/$events",
                                   params={"eventsSinceNumber": "4", "eventsUntilNumber": "5"})).json()
        assert [e["eventNumber"] for e in ranged["entry"][0]["resource"]["notificationEvent"]] == ["4", "5"]
        bad = await client.get(f"/fhir/Subscription/{sub['id']}/$events", params={"eventsSinceNumber": "many"})
        assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
