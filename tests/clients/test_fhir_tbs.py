"""fhir-tbs, the Topic-Based Subscription library for aiohttp applications, as a real subscriber (issue 33 item
12): it registers its own Subscription through fhirpy, gets the handshake and a notification, and its handler
resolves the notification's focus.

https://github.com/beda-software/fhir-tbs and
https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/notifications.html
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from fhir_tbs import SubscriptionDefinitionWithHandler, setup_tbs
from fhir_tbs.r4b import R4BTBS
from fhirpy import AsyncFHIRClient

from tests.clients.conftest import Live
from tests.conftest import free_port
from tests.subscriptions.conftest import PAIN_TOPIC, pain_score

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


async def test_fhir_tbs_handler_resolves_the_focus(live: Live) -> None:
    client = AsyncFHIRClient(live.base, authorization=f"Bearer {live.token}")
    patient = client.resource("Patient", name=[{"family": "Subscriber"}])
    await patient.save()
    seen: list[tuple[str, list[Any]]] = []
    arrived = asyncio.Event()

    async def on_pain(app: web.Application, reference: str, included: list[Any], timestamp: str | None) -> None:
        seen.append((reference, included))
        arrived.set()

    definition: SubscriptionDefinitionWithHandler[Any] = {
        "topic": PAIN_TOPIC, "handler": on_pain, "payload_content": "full-resource", "webhook_id": "pain",
        "filter_by": [{"resource_type": "Observation", "filter_parameter": "patient", "value": patient.id}]}
    tbs = R4BTBS(subscriptions=[definition])
    app = web.Application()
    port = free_port()
    # fhir-tbs hands fhirpy its typed (pydantic) resources: the documented way to serialise them
    typed = AsyncFHIRClient(live.base, authorization=f"Bearer {live.token}",
                            dump_resource=lambda r: r.model_dump(by_alias=True, exclude_none=True, mode="json"))
    setup_tbs(app, tbs, webhook_path_prefix="webhook", manage_subscriptions=True,
              app_url=f"http://127.0.0.1:{port}", get_fhir_client=lambda _: typed)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        registered = await client.resources("Subscription").search(url=f"http://127.0.0.1:{port}/webhook/pain") \
            .fetch_all()
        assert len(registered) == 1
        for _ in range(100):  # the handshake makes it active
            if (await client.reference("Subscription", registered[0].id).to_resource())["status"] == "active":
                break
            await asyncio.sleep(0.1)
        high = client.resource("Observation", **{k: v for k, v in pain_score(patient.id, 8).items()
                                                 if k != "resourceType"})
        await high.save()
        await asyncio.wait_for(arrived.wait(), 30)
    finally:
        await runner.cleanup()
    reference, _ = seen[0]
    # absolute and unversioned, as the entry's fullUrl: on this server's base it is Type/id (a versioned URL was
    # Type/id/_history/n, which the handler could not resolve)
    assert reference == f"{live.base}/Observation/{high.id}"
    resource_type, id_ = reference.removeprefix(f"{live.base}/").split("/")
    resolved = await client.reference(resource_type, id_).to_resource()
    assert resolved["id"] == high.id and resolved["valueQuantity"]["value"] == 8
