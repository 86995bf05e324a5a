"""The authorization server accepts plain http only on loopback: redirect URIs and its own issuer (issue 34, item 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from server.app import create_app
from server.auth.store import ClientRecord
from server.auth.transport import issuer_problem, redirect_uri_problem
from server.settings import Settings
from tests.auth.conftest import FHIR, World, challenge

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("uri", "allowed"), [
    ("https://app.example/callback", True),
    ("https://app.example:8443/cb?x=1", True),
    ("http://localhost:9999/callback", True),
    ("http://127.0.0.1:53211/cb", True),
    ("http://127.8.9.1/cb", True),
    ("http://[::1]:8000/cb", True),
    ("com.example.app:/oauth2redirect", True),
    ("http://app.example/callback", False),
    ("http://10.0.0.5:8080/cb", False),
    ("http://localhost.evil.example/cb", False),
    ("http://127.0.0.1.evil.example/cb", False),
    ("https://app.example/cb#frag", False),
    ("https://app.example/cb#", False),
    ("javascript:alert(1)", False),
    ("data:text/html,hi", False),
    ("file:///etc/passwd", False),
    ("myapp:/cb", False),
    ("/relative/cb", False),
    ("https:///nohost", False),
    ("http://[::1/cb", False),
])
def test_redirect_uri_rules(uri: str, allowed: bool) -> None:
    problem = redirect_uri_problem(uri)
    assert (problem is None) is allowed, problem
    if problem:
        assert uri in problem


@pytest.mark.parametrize(("issuer", "allowed"), [
    ("https://clinic.example/auth", True),
    ("http://localhost:8080/auth", True),
    ("http://127.0.0.1:8080/auth", True),
    ("http://[::1]:8080/auth", True),
    ("http://clinic.example/auth", False),
    ("http://192.168.1.20:8080/auth", False),
])
def test_issuer_rules(issuer: str, allowed: bool) -> None:
    assert (issuer_problem(issuer) is None) is allowed


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CARELOOP_SQLITE_PATH": str(tmp_path / "fhir.db"), **(env or {})}
    environment.pop("CARELOOP_BASE_URL", None)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=120)


def test_cli_refuses_a_plain_http_redirect_and_stores_nothing(tmp_path: Path) -> None:
    refused = _cli(tmp_path, "clients", "add", "--name", "web", "--type", "public", "--scope",
                   "patient/*.rs", "--redirect-uri", "https://ok.example/cb", "--redirect-uri",
                   "http://app.example/callback")
    assert refused.returncode == 2
    assert "http://app.example/callback" in refused.stderr and "https" in refused.stderr
    listed = _cli(tmp_path, "clients", "list")
    assert listed.returncode == 0, listed.stderr
    assert "ok.example" not in listed.stdout
    accepted = _cli(tmp_path, "clients", "add", "--name", "native", "--type", "public", "--scope",
                    "patient/*.rs", "--redirect-uri", "http://127.0.0.1:7777/cb")
    assert accepted.returncode == 0, accepted.stderr
    assert "redirect_uris: ['http://127.0.0.1:7777/cb']" in accepted.stdout


@pytest.mark.anyio
async def test_a_plain_http_redirect_registered_before_the_rule_is_never_followed(world: World) -> None:
    insecure = "http://app.example/callback"
    # written to the store directly, as a client registered by an earlier version would be
    world.auth.store.add_client(ClientRecord("legacy-app", "legacy", "public", "patient/*.rs", [insecure]))
    params = {"response_type": "code", "client_id": "legacy-app", "scope": "patient/*.rs", "state": "s1",
              "aud": FHIR, "code_challenge": challenge("v" * 50), "code_challenge_method": "S256"}
    for extra in ({"redirect_uri": insecure}, {}):  # named, or left to the client's only registered URI
        response = await world.client.get("/auth/authorize", params={**params, **extra})
        assert response.status_code == 400, response.text
        assert "location" not in response.headers
        assert urlparse(response.headers.get("location", "")).netloc != "app.example"


@pytest.mark.parametrize("overrides", [{"base_url": "http://clinic.example/fhir"},
                                       {"host": "192.168.1.20"}])
def test_the_server_refuses_a_plain_http_issuer_off_loopback(tmp_path: Path, overrides: dict[str, str]) -> None:
    settings = Settings(sqlite_path=str(tmp_path / "fhir.db"), validation_workers=0, **overrides)
    with pytest.raises(ValueError, match="not https"):
        create_app(settings)


@pytest.mark.parametrize("overrides", [{"base_url": "https://clinic.example/fhir"},
                                       {"base_url": "http://clinic.example/fhir", "auth": "off"},
                                       {"host": "0.0.0.0"}, {"host": "127.0.0.1"}])
def test_https_loopback_or_no_authorization_server_start(tmp_path: Path, overrides: dict[str, str]) -> None:
    create_app(Settings(sqlite_path=str(tmp_path / "fhir.db"), validation_workers=0, **overrides))


def test_serve_says_why_it_will_not_start(tmp_path: Path) -> None:
    found = _cli(tmp_path, "serve", "--port", "0", env={"CARELOOP_BASE_URL": "http://clinic.example/fhir"})
    assert found.returncode == 2
    assert "error: the authorization server's issuer http://clinic.example/auth is not https" in found.stderr
    assert "Traceback" not in found.stderr
