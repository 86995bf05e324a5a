"""The password sign-in of /auth/authorize (issue 27 item 6): off the event loop, the same cost for unknown
users, per-user and per-address throttling with 429 + Retry-After, and a lockout the CLI lifts.

https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-authorization-code,
https://www.rfc-editor.org/rfc/rfc6585#section-4
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.settings import Settings
from tests.auth.conftest import FHIR, REDIRECT, World, challenge, open_world
from tests.conftest import free_port, serving

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent.parent
SCOPE = "launch/patient openid fhirUser patient/*.rs"


def cli(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args, "--db", str(db)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def authorize_form(client_id: str, aud: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": SCOPE,
            "state": "s", "aud": aud, "code_challenge": challenge("v" * 50), "code_challenge_method": "S256"}


async def sign_in(client: httpx.AsyncClient, client_id: str, username: str, password: str,
                  aud: str = FHIR) -> httpx.Response:
    return await client.post("/auth/authorize", data={**authorize_form(client_id, aud), "username": username,
                                                      "password": password})


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["content-type"].startswith("text/html") and "Too many" in response.text
    assert "location" not in response.headers


@pytest.fixture
async def strict_world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    """A world allowing 5 failed sign-ins per address in 10 minutes."""
    async with open_world(tmp_path, seeded_database, signin_address_failures=5,
                          signin_address_window_seconds=600) as found:
        yield found


async def test_thirty_wrong_passwords_lock_the_account_until_an_administrator_unlocks_it(world: World,
                                                                                       tmp_path: Path) -> None:
    client_id, _ = world.app_client(SCOPE)
    answers = [await sign_in(world.client, client_id, "alice", f"guess-{i}") for i in range(30)]
    assert answers[0].status_code == 401
    assert_throttled(answers[-1])
    # locked: the right password does not get in either
    assert_throttled(await sign_in(world.client, client_id, "alice", "secret"))
    listed = {u["username"]: u for u in json.loads(cli(tmp_path / "fhir.db", "users", "list", "--json").stdout)}
    assert listed["alice"]["locked"] is True and listed["bob"]["locked"] is False
    unlocked = cli(tmp_path / "fhir.db", "users", "unlock", "alice")
    assert unlocked.returncode == 0, unlocked.stderr
    assert (await sign_in(world.client, client_id, "alice", "secret")).status_code == 302
    missing = cli(tmp_path / "fhir.db", "users", "unlock", "nobody")
    assert missing.returncode != 0 and "nobody" in missing.stderr


async def test_the_lockout_survives_a_restart(world: World, tmp_path: Path) -> None:
    client_id, _ = world.app_client(SCOPE)
    for i in range(12):
        await sign_in(world.client, client_id, "bob", f"guess-{i}")
    settings = Settings(sqlite_path=str(tmp_path / "fhir.db"), validation_workers=0, base_url=FHIR)
    restarted = create_app(settings)
    async with restarted.router.lifespan_context(restarted), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=restarted), base_url="http://localhost:8080") as client:
        assert_throttled(await sign_in(client, client_id, "bob", "secret"))


async def test_a_successful_sign_in_resets_the_count(world: World) -> None:
    client_id, _ = world.app_client(SCOPE)
    for _ in range(2):
        for i in range(8):
            assert (await sign_in(world.client, client_id, "alice", f"guess-{i}")).status_code == 401
        assert (await sign_in(world.client, client_id, "alice", "secret")).status_code == 302


async def test_unknown_user_names_are_counted_like_known_ones(world: World) -> None:
    client_id, _ = world.app_client(SCOPE)
    known = [(await sign_in(world.client, client_id, "alice", "x")).status_code for _ in range(12)]
    unknown = [(await sign_in(world.client, client_id, "nobody", "x")).status_code for _ in range(12)]
    assert known == unknown and known[-1] == 429


async def test_too_many_failures_from_one_address_answer_429(strict_world: World) -> None:
    world = strict_world
    client_id, _ = world.app_client(SCOPE)
    answers = [await sign_in(world.client, client_id, f"user-{i}", "x") for i in range(6)]
    assert [a.status_code for a in answers[:4]] == [401] * 4
    assert_throttled(answers[4])  # the fifth failure is the last one counted
    assert_throttled(answers[5])
    assert int(answers[5].headers["retry-after"]) <= 600
    # the address is held back whoever it names, even with a right password
    assert_throttled(await sign_in(world.client, client_id, "alice", "secret"))
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app, client=("10.9.8.7", 5000)),
                              base_url="http://localhost:8080")
    async with other:
        assert (await sign_in(other, client_id, "alice", "secret")).status_code == 302


async def test_an_unknown_user_costs_as_much_as_a_wrong_password(world: World) -> None:
    client_id, _ = world.app_client(SCOPE)

    async def timed(username: str) -> float:
        started = time.perf_counter()
        assert (await sign_in(world.client, client_id, username, "wrong")).status_code == 401
        return time.perf_counter() - started

    await timed("alice")  # warm-up
    wrong, unknown = [], []
    for i in range(4):
        wrong.append(await timed("alice"))
        unknown.append(await timed(f"nobody-{i}"))
    assert statistics.median(unknown) >= 0.5 * statistics.median(wrong), (unknown, wrong)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`python -m server serve` with a user and a public app, throttling set high so every attempt is hashed."""
    port = free_port()
    db = tmp_path_factory.mktemp("signin") / "live.db"
    env = {k: v for k, v in os.environ.items() if k != "CARELOOP_AUTH"}
    env.update({"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_TERMINOLOGY_SEED": "false",
                "CARELOOP_SUBSCRIPTIONS": "false", "CARELOOP_SIGNIN_USER_FAILURES": "1000",
                "CARELOOP_SIGNIN_ADDRESS_FAILURES": "1000"})
    assert cli(db, "users", "add", "alice", "--password", "secret", "--fhir-user", "Patient/a", env=env).returncode == 0
    app = json.loads(cli(db, "clients", "add", "--name", "app", "--type", "public", "--scope", SCOPE,
                         "--redirect-uri", REDIRECT, "--json", env=env).stdout)
    base = f"http://127.0.0.1:{port}"
    with serving(port, db, env, f"{base}/fhir", stdout=subprocess.DEVNULL):
        yield {"base": base, "client_id": app["client_id"]}


async def test_forty_wrong_passwords_do_not_stall_other_requests(live: dict[str, str]) -> None:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=live["base"], limits=limits, timeout=60) as client:
        await client.get("/fhir/metadata")
        storm = [asyncio.create_task(sign_in(client, live["client_id"], "alice", f"wrong-{i}", f"{live['base']}/fhir"))
                 for i in range(40)]
        await asyncio.sleep(0.05)
        latencies = []
        while not all(task.done() for task in storm):
            started = time.perf_counter()
            assert (await client.get("/fhir/metadata")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
        answers = await asyncio.gather(*storm)
    assert {a.status_code for a in answers} == {401}
    # on the event loop the storm held metadata back 2.5-3.7 s; off it, under 0.5 s on a busy 2-core machine
    assert latencies and max(latencies) < 1.0, latencies
