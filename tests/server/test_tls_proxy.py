"""The shipped TLS proxy (deploy/Caddyfile, the compose file's `tls` profile) in front of a live server: HTTPS with
HSTS, https in discovery and in tokens' audience, and working tokens through it (issue 34, item 5).

Runs Debian's `caddy` with the very Caddyfile the compose file mounts. https://caddyserver.com/docs/caddyfile
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port, serving
from tests.server.test_tls import self_signed

ROOT = Path(__file__).parent.parent.parent
CADDY = shutil.which("caddy")


def test_compose_tls_profile_mounts_the_caddyfile_and_the_server_trusts_only_it() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    proxy, server = compose["services"]["tls-proxy"], compose["services"]["careloop"]
    assert proxy["profiles"] == ["tls"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    address = proxy["networks"]["default"]["ipv4_address"]
    assert server["environment"]["CARELOOP_TRUSTED_PROXIES"] == f'["{address}"]'
    assert proxy["environment"]["CARELOOP_UPSTREAM"] == "careloop:8080"
    # the plain-http port is published on the host's loopback only: other machines come in through TLS
    assert server["ports"] == ["127.0.0.1:8080:8080"]


@pytest.mark.skipif(CADDY is None, reason="caddy is not installed (tools/install-caddy installs it as root)")
def test_caddy_proxy_serves_careloop_over_tls(tmp_path: Path, seeded_database: Path) -> None:
    cert, key = self_signed(tmp_path)
    db = tmp_path / "fhir.db"
    shutil.copyfile(seeded_database, db)
    port, tls_port, http_port = free_port(), free_port(), free_port()
    public = f"https://127.0.0.1:{tls_port}"
    env = {**os.environ, "CARELOOP_LOG_LEVEL": "warning", "CARELOOP_VALIDATION_WORKERS": "0",
           "CARELOOP_BASE_URL": f"{public}/fhir", "CARELOOP_TRUSTED_PROXIES": '["127.0.0.1"]'}
    proxy_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
                 "XDG_CONFIG_HOME": str(tmp_path / "config"), "CARELOOP_PROXY_SITE": public,
                 "CARELOOP_PROXY_TLS": f"{cert} {key}", "CARELOOP_UPSTREAM": f"127.0.0.1:{port}",
                 "CARELOOP_PROXY_HTTP_PORT": str(http_port)}
    with serving(port, db, env, f"http://127.0.0.1:{port}/fhir"):
        proxy = subprocess.Popen([str(CADDY), "run", "--config", str(ROOT / "deploy" / "Caddyfile"), "--adapter",
                                  "caddyfile"], env=proxy_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as client:
                deadline = time.monotonic() + 60
                while True:
                    assert proxy.poll() is None, proxy.stderr.read() if proxy.stderr else "caddy exited"
                    try:
                        answer = client.get(f"{public}/fhir/metadata")
                        break
                    except httpx.TransportError:
                        assert time.monotonic() < deadline, "the proxy did not start"
                        time.sleep(0.3)
                assert answer.status_code == 200
                assert answer.headers["strict-transport-security"] == "max-age=31536000"
                smart = client.get(f"{public}/fhir/.well-known/smart-configuration").json()
                assert smart["token_endpoint"] == f"{public}/auth/token"
                assert smart["issuer"] == f"{public}/auth"
                # a backend client gets a token through the proxy and reads with it
                made = subprocess.run(
                    [sys.executable, "-m", "server", "clients", "add", "--name", "proxy-test", "--type",
                     "confidential-symmetric", "--scope", "system/Patient.rs", "--db", str(db)],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
                assert made.returncode == 0, made.stderr
                fields = dict(line.split(": ", 1) for line in made.stdout.splitlines() if ": " in line)
                token = client.post(f"{public}/auth/token",
                                    data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
                                    auth=(fields["client_id"], fields["client_secret"]))
                assert token.status_code == 200, token.text
                bundle = client.get(f"{public}/fhir/Patient",
                                    headers={"Authorization": f"Bearer {token.json()['access_token']}"})
                assert bundle.status_code == 200, bundle.text
                assert bundle.json()["link"][0]["url"].startswith(f"{public}/fhir/Patient")
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)
