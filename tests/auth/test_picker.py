"""The patient picker of a standalone launch (issue 27 item 9): it shows, and accepts, only the patients the
signed-in user may see.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#launch-context-arrives-with-your-access_token
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.auth.conftest import FHIR, REDIRECT, World, _create, challenge

pytestmark = pytest.mark.anyio
CLINICIAN_APP = "launch/patient openid fhirUser user/Patient.rs patient/Observation.rs"
PATIENT_APP = "launch/patient openid fhirUser patient/*.rs"


class Picker:
    """One authorize request signed in up to the picker page."""

    def __init__(self, world: World, scope: str) -> None:
        self.world = world
        self.client_id, _ = world.app_client(scope)
        self.params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": REDIRECT,
                       "scope": scope, "state": secrets.token_urlsafe(8), "aud": FHIR,
                       "code_challenge": challenge("v" * 50), "code_challenge_method": "S256"}
        self.session = ""

    async def open(self, username: str) -> httpx.Response:
        page = await self.world.client.post("/auth/authorize", data={**self.params, "username": username,
                                                                     "password": "secret"})
        assert page.status_code == 200 and "Choose a patient" in page.text, page.text
        self.session = page.text.split("name='session' value='")[1].split("'")[0]
        return page

    async def post(self, **form: str) -> httpx.Response:
        return await self.world.client.post("/auth/authorize", data={**self.params, "session": self.session,
                                                                     **form})


def without_session(text: str) -> str:
    return re.sub(r"name='session' value='[^']*'", "", text)


def listed(page: httpx.Response) -> set[str]:
    return {part.split("'")[0] for part in page.text.split("name='patient' value='")[1:]}


async def test_a_clinician_sees_the_patients_their_patient_scope_reaches_and_can_search_by_name(
        world: World) -> None:
    picker = Picker(world, CLINICIAN_APP)
    page = await picker.open("drsmith")
    assert {world.ids["alice"], world.ids["bob"]} <= listed(page)
    assert "name='q'" in page.text
    found = await picker.post(q="Alpha")
    assert found.status_code == 200 and listed(found) == {world.ids["alice"]}
    assert (await picker.post(q="Nobody-by-this-name")).text.count("name='patient' value=") == 0
    chosen = await picker.post(patient=world.ids["bob"])
    assert chosen.status_code == 302


async def test_a_granular_patient_scope_narrows_the_picker(world: World) -> None:
    practitioner = f"Practitioner/{world.ids['practitioner']}"
    carol = await _create(world.client, world.admin, {"resourceType": "Patient", "name": [{"family": "Gamma",
                          "given": ["Carol"]}], "generalPractitioner": [{"reference": practitioner}]})
    picker = Picker(world, f"launch/patient user/Patient.rs?general-practitioner={practitioner}")
    page = await picker.open("drsmith")
    assert listed(page) == {carol}
    refused = await picker.post(patient=world.ids["bob"])
    missing = await picker.post(patient="no-such-patient")
    assert refused.status_code == missing.status_code == 200 and "Choose a patient" in refused.text
    assert without_session(refused.text) == without_session(missing.text)
    assert (await picker.post(patient=carol)).status_code == 302


async def test_a_clinician_app_without_patient_read_offers_no_patient(world: World) -> None:
    picker = Picker(world, "launch/patient patient/Observation.rs")
    page = await picker.open("drsmith")
    assert listed(page) == set() and "No patients" in page.text
    assert (await picker.post(patient=world.ids["alice"])).status_code == 200


async def test_a_related_person_sees_only_their_patient(world: World) -> None:
    carer = await _create(world.client, world.admin, {"resourceType": "RelatedPerson", "patient": {
        "reference": f"Patient/{world.ids['alice']}"}, "name": [{"family": "Carer"}]})
    world.auth.store.add_user("carer", "secret", f"RelatedPerson/{carer}")
    picker = Picker(world, PATIENT_APP)
    page = await picker.open("carer")
    assert listed(page) == {world.ids["alice"]} and world.ids["bob"] not in page.text
    assert listed(await picker.post(q="Beta")) == set()
    refused = await picker.post(patient=world.ids["bob"])
    assert refused.status_code == 200 and "Choose a patient" in refused.text
    chosen = await picker.post(patient=world.ids["alice"])
    assert chosen.status_code == 302
    code = parse_qs(urlparse(chosen.headers["location"]).query)["code"][0]
    assert world.auth.store.code(code, picker.client_id)["patient"] == world.ids["alice"]  # type: ignore[index]


async def test_a_user_without_fhir_user_gets_no_patient(world: World) -> None:
    world.auth.store.add_user("clerk", "secret", None)
    picker = Picker(world, PATIENT_APP)
    page = await picker.open("clerk")
    assert listed(page) == set() and "No patients" in page.text and world.ids["alice"] not in page.text
    posted = await picker.post(patient=world.ids["alice"])
    assert posted.status_code == 200 and "location" not in posted.headers


async def test_the_picker_escapes_names_and_the_search_text(world: World) -> None:
    await _create(world.client, world.admin, {"resourceType": "Patient", "name": [{"family": "<b>Evil</b>"}]})
    picker = Picker(world, CLINICIAN_APP)
    page = await picker.open("drsmith")
    assert "&lt;b&gt;Evil&lt;/b&gt;" in page.text and "<b>Evil" not in page.text
    searched = await picker.post(q="'><script>x</script>")
    assert "<script>x" not in searched.text and "default-src 'none'" in searched.headers["content-security-policy"]


async def test_a_trainee_picks_from_de_identified_patients_and_cannot_search_by_name(world: World) -> None:
    world.auth.store.add_user("trainee", "secret", f"Practitioner/{world.ids['practitioner']}", roles=("trainee",))
    picker = Picker(world, CLINICIAN_APP)
    page = await picker.open("trainee")
    assert {world.ids["alice"], world.ids["bob"]} <= listed(page)
    assert "Alpha" not in page.text and "Beta" not in page.text  # names are what a trainee does not see
    found = await picker.post(q="Alpha")
    assert found.status_code == 200 and listed(found) == set()  # no oracle by name either
