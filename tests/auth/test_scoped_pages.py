"""A patient-scoped search pages through the patient's compartment in order, and never beyond it.

Under a `patient/` scope every search carries the patient's compartment, which then drives the query: it is read
from the compartment index in row-id order and the client's own parameters are tested on each entry
(compile._driver). https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

import pytest

from tests.auth.conftest import World, _create
from tests.factories import observation

pytestmark = pytest.mark.anyio
SCOPE = "launch/patient openid fhirUser patient/Observation.rs"


async def _walk(world: World, token: str, query: str) -> list[str]:
    seen: list[str] = []
    url: str | None = f"/fhir/Observation?{query}&_count=2"
    while url:
        response = await world.client.get(url, headers=world.bearer(token))
        assert response.status_code == 200, response.text
        bundle = response.json()
        seen.extend(e["resource"]["id"] for e in bundle.get("entry", []))
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return seen


async def test_a_patient_scope_pages_through_its_compartment_in_order(world: World) -> None:
    alice, bob = world.ids["alice"], world.ids["bob"]
    glucose = []
    for n in range(5):
        glucose.append(await _create(world.client, world.admin, observation(f"Patient/{alice}", value=5.0 + n)))
        await _create(world.client, world.admin, observation(f"Patient/{bob}", value=9.0))
    gone = glucose.pop(2)
    assert (await world.client.delete(f"/fhir/Observation/{gone}", headers=world.admin)).status_code == 200
    client_id, _ = world.app_client(SCOPE)
    token = (await world.authorize(client_id, SCOPE, "alice"))["access_token"]
    heart_rates = [world.ids["alice_vital"], world.ids["alice_lab"]]
    # row-id order is creation order; Bob's readings (and Bob's Observation about Alice) are never reached
    assert await _walk(world, token, "status=final") == [*heart_rates, *glucose]
    assert await _walk(world, token, "code=2339-0") == glucose
    assert await _walk(world, token, "code=http://loinc.org|8867-4") == heart_rates
    assert await _walk(world, token, "code:not=8867-4") == glucose
    assert await _walk(world, token, "code=2339-0&value-quantity=ge7") == glucose[2:]
    assert await _walk(world, token, "category=vital-signs") == [world.ids["alice_vital"]]
