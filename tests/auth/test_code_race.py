"""An authorization code is redeemed once, even by concurrent requests against a live server (RFC 6749 §4.1.2).

The token endpoint runs authlib in a thread pool, so the race needs real threads and real TCP: a uvicorn server
in a thread of the test process, on a free port.
https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import uvicorn

from server.app import create_app
from server.auth.service import AuthService
from server.settings import Settings
from tests.auth.conftest import REDIRECT, World, challenge
from tests.conftest import free_port

SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"
CONCURRENT = 12
ROUNDS = 3


@dataclass
class Live:
    """A live server, its auth service, and a patient user with a public app to sign in to."""

    base: str
    auth: AuthService
    client_id: str


@pytest.fixture
def live(tmp_path: Path, seeded_database: Path) -> Iterator[Live]:
    shutil.copyfile(seeded_database, tmp_path / "fhir.db")
    port = free_port()
    app = create_app(Settings(sqlite_path=str(tmp_path / "fhir.db"), validation_workers=0,
                              base_url=f"http://127.0.0.1:{port}/fhir"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the live server did not start"
        time.sleep(0.05)
    try:
        base = f"http://127.0.0.1:{port}"
        auth: AuthService = app.state.services.auth
        admin, secret = auth.add_client("admin", "confidential-symmetric", "system/*.cruds", [])
        token = httpx.post(f"{base}/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                           auth=(admin.client_id, secret or "")).json()["access_token"]
        created = httpx.post(f"{base}/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Race"}]},
                             headers={"Authorization": f"Bearer {token}", "content-type": "application/fhir+json"})
        assert created.status_code == 201, created.text
        auth.store.add_user("carol", "secret", f"Patient/{created.json()['id']}", "Carol C")
        app_client, _ = auth.add_client("app", "public", SCOPE, [REDIRECT])
        yield Live(base, auth, app_client.client_id)
    finally:
        server.should_exit = True
        thread.join(30)


def _code(live: Live) -> tuple[str, str]:
    """An authorization code (and its PKCE verifier) for carol, through the real authorize page."""
    verifier = secrets.token_urlsafe(48)
    params = {"response_type": "code", "client_id": live.client_id, "redirect_uri": REDIRECT, "scope": SCOPE,
              "state": secrets.token_urlsafe(16), "aud": f"{live.base}/fhir", "code_challenge": challenge(verifier),
              "code_challenge_method": "S256"}
    response = httpx.post(f"{live.base}/auth/authorize", data={**params, "username": "carol", "password": "secret"})
    assert response.status_code == 302, response.text
    return parse_qs(urlparse(response.headers["location"]).query)["code"][0], verifier


def _redeem_together(base: str, form: dict[str, str]) -> list[httpx.Response]:
    """CONCURRENT token requests for one code, released at the same moment from their own threads."""
    start = threading.Barrier(CONCURRENT)

    def redeem(_: int) -> httpx.Response:
        with httpx.Client(base_url=base) as client:
            start.wait()
            return client.post("/auth/token", data=form)

    with ThreadPoolExecutor(CONCURRENT) as pool:
        return list(pool.map(redeem, range(CONCURRENT)))


def test_concurrent_redemptions_of_one_code_issue_one_token(live: Live) -> None:
    for _ in range(ROUNDS):
        code, verifier = _code(live)
        answers = _redeem_together(live.base, {"grant_type": "authorization_code", "code": code,
                                               "redirect_uri": REDIRECT, "code_verifier": verifier,
                                               "client_id": live.client_id})
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) == 1, statuses
        assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code != 200)
        # the other eleven were replays of a redeemed code: the one token issued is revoked as well
        issued = next(a.json() for a in answers if a.status_code == 200)
        read = httpx.get(f"{live.base}/fhir/Patient", headers={"Authorization": f"Bearer {issued['access_token']}"})
        assert read.status_code == 401


@pytest.mark.anyio
async def test_a_second_redemption_revokes_what_the_first_issued(world: World) -> None:
    client_id, _ = world.app_client(SCOPE)
    code, verifier = await world.code(client_id, SCOPE, "alice")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            "client_id": client_id}
    first = await world.client.post("/auth/token", data=form)
    assert first.status_code == 200, first.text
    issued = first.json()
    read = await world.client.get("/fhir/Patient", headers=world.bearer(issued["access_token"]))
    assert read.status_code == 200
    other = await world.authorize(client_id, SCOPE, "alice")  # another sign-in of the same user and app

    again = await world.client.post("/auth/token", data=form)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    after = await world.client.get("/fhir/Patient", headers=world.bearer(issued["access_token"]))
    assert after.status_code == 401 and 'error="invalid_token"' in after.headers["www-authenticate"]
    refresh = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                           "refresh_token": issued["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    # what other codes issued is untouched
    untouched = await world.client.get("/fhir/Patient", headers=world.bearer(other["access_token"]))
    assert untouched.status_code == 200
    renewed = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                           "refresh_token": other["refresh_token"]})
    assert renewed.status_code == 200, renewed.text


@pytest.mark.anyio
async def test_a_code_answered_with_an_error_is_still_spent(world: World) -> None:
    client_id, _ = world.app_client(SCOPE)
    code, verifier = await world.code(client_id, SCOPE, "alice")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id}
    wrong = await world.client.post("/auth/token", data={**form, "code_verifier": secrets.token_urlsafe(48)})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    right = await world.client.post("/auth/token", data={**form, "code_verifier": verifier})
    assert right.status_code == 400 and right.json()["error"] == "invalid_grant"
