"""EHR launch contexts (issue 27 item 1): who may create one, for which patient, and that it is used once.

https://hl7.org/fhir/smart-app-launch/app-launch.html#launch-app-ehr-launch
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.auth.conftest import FHIR, REDIRECT, World, _create, challenge, open_world

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent.parent
EHR_APP = "launch openid fhirUser user/*.rs"
CLINICIAN = "openid fhirUser user/*.rs"


@pytest.fixture
async def short_world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    """A world whose launches live one second."""
    async with open_world(tmp_path, seeded_database, launch_seconds=1) as found:
        yield found


async def user_token(world: World, username: str, scope: str = CLINICIAN) -> str:
    client_id, _ = world.app_client(scope)
    token: str = (await world.authorize(client_id, scope, username))["access_token"]
    return token


async def new_launch(world: World, token: str, **form: str) -> httpx.Response:
    return await world.client.post("/auth/launch", data=form, headers=world.bearer(token))


async def sign_in_with_launch(world: World, client_id: str, scope: str, username: str,
                              launch: str) -> httpx.Response:
    """The authorize request of an EHR launch, posted with the user's credentials."""
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
              "state": secrets.token_urlsafe(8), "aud": FHIR, "code_challenge": challenge("v" * 50),
              "code_challenge_method": "S256", "launch": launch}
    return await world.client.post("/auth/authorize", data={**params, "username": username, "password": "secret"})


def code_of(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    return parse_qs(urlparse(response.headers["location"]).query)["code"][0]


def oauth_error(response: httpx.Response) -> str:
    return str(response.json()["error"])


async def test_the_reported_takeover_no_longer_works(world: World) -> None:
    # the review's attack: any system/ token registers a launch for bob ...
    attacker = await world.backend_token("system/Observation.c")
    created = await new_launch(world, attacker, patient=world.ids["bob"])
    assert created.status_code == 403 and oauth_error(created) == "insufficient_scope"
    assert "launch" not in created.json()
    # ... and even a launch for bob made by a real EHR gives alice no token for bob
    ehr_launch = (await new_launch(world, await user_token(world, "drsmith"), patient=world.ids["bob"])).json()
    client_id, _ = world.app_client("launch openid fhirUser patient/*.rs")
    answer = await sign_in_with_launch(world, client_id, "launch openid fhirUser patient/*.rs", "alice",
                                       ehr_launch["launch"])
    assert answer.status_code == 400 and oauth_error(answer) == "invalid_request"
    assert "location" not in answer.headers


async def test_a_patient_user_keeps_their_own_patient_context(world: World) -> None:
    launch = (await new_launch(world, await user_token(world, "drsmith"), patient=world.ids["alice"])).json()
    scope = "launch openid fhirUser patient/*.rs"
    client_id, _ = world.app_client(scope)
    token = await world.authorize(client_id, scope, "alice", extra={"launch": launch["launch"]})
    assert token["patient"] == world.ids["alice"]
    bob = await world.client.get(f"/fhir/Observation/{world.ids['bob_vital']}",
                                 headers=world.bearer(token["access_token"]))
    assert bob.status_code == 404


async def test_a_related_person_uses_only_a_launch_for_their_patient(world: World) -> None:
    carer = await _create(world.client, world.admin, {"resourceType": "RelatedPerson", "patient": {
        "reference": f"Patient/{world.ids['alice']}"}})
    world.auth.store.add_user("carer", "secret", f"RelatedPerson/{carer}")
    clinician = await user_token(world, "drsmith")
    scope = "launch openid fhirUser patient/*.rs"
    client_id, _ = world.app_client(scope)
    for_bob = (await new_launch(world, clinician, patient=world.ids["bob"])).json()["launch"]
    refused = await sign_in_with_launch(world, client_id, scope, "carer", for_bob)
    assert refused.status_code == 400 and oauth_error(refused) == "invalid_request"
    for_alice = (await new_launch(world, clinician, patient=world.ids["alice"])).json()["launch"]
    code = code_of(await sign_in_with_launch(world, client_id, scope, "carer", for_alice))
    assert (world.auth.store.code(code, client_id) or {})["patient"] == world.ids["alice"]


@pytest.mark.parametrize("scope", ["system/*.rs", "system/Observation.c"])
async def test_a_backend_client_not_registered_as_an_ehr_may_not_create_launches(world: World, scope: str) -> None:
    created = await new_launch(world, await world.backend_token(scope), patient=world.ids["alice"])
    assert created.status_code == 403 and oauth_error(created) == "insufficient_scope"


async def test_a_patient_user_may_not_create_launches(world: World) -> None:
    created = await new_launch(world, await user_token(world, "alice"), patient=world.ids["alice"])
    assert created.status_code == 403 and oauth_error(created) == "insufficient_scope"


async def test_no_token_is_401(world: World) -> None:
    created = await world.client.post("/auth/launch", data={"patient": world.ids["alice"]})
    assert created.status_code == 401 and oauth_error(created) == "invalid_token"


async def test_a_practitioner_user_and_a_registered_ehr_may_create_launches(world: World) -> None:
    by_clinician = await new_launch(world, await user_token(world, "drsmith"), patient=world.ids["alice"],
                                    encounter=world.ids["alice_enc"])
    assert by_clinician.status_code == 201, by_clinician.text
    assert by_clinician.json()["patient"] == world.ids["alice"] and by_clinician.json()["launch"]
    record, secret = world.auth.add_client("EHR", "confidential-symmetric", "system/*.rs", [], ehr=True)
    token = (await world.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                                     auth=(record.client_id, secret or ""))).json()["access_token"]
    by_ehr = await new_launch(world, token, patient=world.ids["bob"])
    assert by_ehr.status_code == 201, by_ehr.text


async def test_a_missing_or_invisible_patient_gets_the_same_answer(world: World) -> None:
    practitioner = f"Practitioner/{world.ids['practitioner']}"
    narrow = await user_token(world, "drsmith", f"openid fhirUser user/Patient.rs?general-practitioner={practitioner}")
    invisible = await new_launch(world, narrow, patient=world.ids["bob"])
    missing = await new_launch(world, narrow, patient="no-such-patient")
    assert invisible.status_code == missing.status_code == 400
    assert invisible.json() == missing.json() and oauth_error(missing) == "invalid_request"
    wide = await user_token(world, "drsmith")
    assert (await new_launch(world, wide, patient="no-such-patient")).json() == missing.json()


@pytest.mark.parametrize("encounter", ["no-such-encounter", "alice_enc"])
async def test_the_encounter_must_exist_and_belong_to_the_patient(world: World, encounter: str) -> None:
    token = await user_token(world, "drsmith")
    created = await new_launch(world, token, patient=world.ids["bob"], encounter=world.ids.get(encounter, encounter))
    assert created.status_code == 400 and oauth_error(created) == "invalid_request"


async def test_a_launch_is_used_once(world: World) -> None:
    launch = (await new_launch(world, await user_token(world, "drsmith"), patient=world.ids["alice"])).json()
    client_id, _ = world.app_client(EHR_APP)
    code_of(await sign_in_with_launch(world, client_id, EHR_APP, "drsmith", launch["launch"]))
    again = await sign_in_with_launch(world, client_id, EHR_APP, "drsmith", launch["launch"])
    assert again.status_code == 400 and oauth_error(again) == "invalid_request"


async def test_a_launch_is_used_once_even_concurrently(world: World) -> None:
    launch = (await new_launch(world, await user_token(world, "drsmith"), patient=world.ids["alice"])).json()
    client_id, _ = world.app_client(EHR_APP)
    answers = await asyncio.gather(*(sign_in_with_launch(world, client_id, EHR_APP, "drsmith", launch["launch"])
                                     for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [302] + [400] * 7


async def test_a_launch_expires(short_world: World) -> None:
    world = short_world
    launch = (await new_launch(world, await user_token(world, "drsmith"), patient=world.ids["alice"])).json()
    await asyncio.sleep(1.2)
    client_id, _ = world.app_client(EHR_APP)
    late = await sign_in_with_launch(world, client_id, EHR_APP, "drsmith", launch["launch"])
    assert late.status_code == 400 and oauth_error(late) == "invalid_request"


async def test_a_launch_bound_to_a_client_serves_only_that_client(world: World) -> None:
    mine, _ = world.app_client(EHR_APP)
    other, _ = world.app_client(EHR_APP)
    created = await new_launch(world, await user_token(world, "drsmith"), patient=world.ids["alice"], client_id=mine)
    assert created.status_code == 201, created.text
    refused = await sign_in_with_launch(world, other, EHR_APP, "drsmith", created.json()["launch"])
    assert refused.status_code == 400 and oauth_error(refused) == "invalid_request"
    code_of(await sign_in_with_launch(world, mine, EHR_APP, "drsmith", created.json()["launch"]))


def test_the_cli_registers_an_ehr_client(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "server", *args, "--db", str(tmp_path / "x.db")], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)

    added = cli("clients", "add", "--name", "EHR", "--type", "confidential-symmetric", "--scope", "system/*.rs",
                "--ehr", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["ehr"] is True
    plain = json.loads(cli("clients", "add", "--name", "app", "--type", "public", "--scope", "patient/*.rs",
                           "--json").stdout)
    listed = {c["client_id"]: c["ehr"] for c in json.loads(cli("clients", "list", "--json").stdout)}
    assert listed == {json.loads(added.stdout)["client_id"]: True, plain["client_id"]: False}
    assert "ehr" in cli("clients", "list").stdout
