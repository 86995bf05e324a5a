"""SMART against a live server process: the first-start development client, the CLI, the python `fhirclient`
SMART client doing authorize + PKCE + callback + token, and a backend client over real TCP.

https://github.com/smart-on-fhir/client-py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fhirclient import client as fhir_client
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.conftest import free_port, serving

ROOT = Path(__file__).parent.parent.parent
REDIRECT = "http://localhost:9999/callback"


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args, "--db", str(db)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`python -m server serve` with authorization on (the default), on a fresh store."""
    port = free_port()
    db = tmp_path_factory.mktemp("smart") / "live.db"
    env = {k: v for k, v in os.environ.items() if k != "CARELOOP_AUTH"}
    env.update({"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_TERMINOLOGY_SEED": "false",
                "CARELOOP_BASE_URL": f"http://localhost:{port}/fhir"})
    base = f"http://localhost:{port}"
    with serving(port, db, env, f"{base}/fhir", stdout=subprocess.PIPE) as process:
        yield {"base": base, "db": str(db), "banner": _banner(process)}


def _banner(process: subprocess.Popen[str]) -> str:
    """What the server printed at start, up to the curl line that reads /fhir/Patient with the token."""
    assert process.stdout is not None
    lines: list[str] = []
    while len(lines) < 30:
        line = process.stdout.readline()
        lines.append(line)
        if not line or "Authorization: Bearer" in line:
            break
    return "".join(lines)


def test_first_start_prints_a_working_development_client(live: dict[str, str]) -> None:
    banner = live["banner"]
    client_id = re.search(r"client_id:\s+(\S+)", banner)
    secret = re.search(r"client_secret:\s+(\S+)", banner)
    assert client_id and secret, banner
    assert "curl" in banner and "/fhir/Patient" in banner
    token = httpx.post(f"{live['base']}/auth/token", data={"grant_type": "client_credentials",
                                                           "scope": "system/*.rs"},
                       auth=(client_id.group(1), secret.group(1)))
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    read = httpx.get(f"{live['base']}/fhir/Patient", headers=bearer)
    assert read.status_code == 200 and read.json()["type"] == "searchset"
    assert httpx.get(f"{live['base']}/fhir/Patient").status_code == 401


def test_cli_manages_clients(live: dict[str, str]) -> None:
    db = Path(live["db"])
    added = cli(db, "clients", "add", "--name", "HIS", "--type", "confidential-symmetric", "--scope",
                "system/*.rs", "--json")
    assert added.returncode == 0, added.stderr
    record = json.loads(added.stdout)
    assert record["client_secret"] and record["type"] == "confidential-symmetric"
    listed = json.loads(cli(db, "clients", "list", "--json").stdout)
    assert record["client_id"] in {c["client_id"] for c in listed}
    assert cli(db, "clients", "remove", record["client_id"]).returncode == 0
    assert record["client_id"] not in {c["client_id"] for c in json.loads(cli(db, "clients", "list", "--json").stdout)}
    bad = cli(db, "clients", "add", "--name", "x", "--type", "public", "--scope", "patient/Observation.dus")
    assert bad.returncode != 0 and "order" in bad.stderr


def _admin_token(live: dict[str, str]) -> str:
    added = json.loads(cli(Path(live["db"]), "clients", "add", "--name", "admin", "--type", "confidential-symmetric",
                           "--scope", "system/*.cruds", "--json").stdout)
    response = httpx.post(f"{live['base']}/auth/token", data={"grant_type": "client_credentials",
                                                              "scope": "system/*.cruds"},
                          auth=(added["client_id"], added["client_secret"]))
    token: str = response.json()["access_token"]
    return token


def test_fhirclient_standalone_launch_with_pkce(live: dict[str, str]) -> None:
    db = Path(live["db"])
    admin = {"Authorization": f"Bearer {_admin_token(live)}", "content-type": "application/fhir+json"}
    patient = httpx.post(f"{live['base']}/fhir/Patient", headers=admin, json={
        "resourceType": "Patient", "name": [{"family": "Chen", "given": ["Mei"]}], "gender": "female"}).json()
    assert cli(db, "users", "add", "mei", "--password", "pw-123", "--fhir-user",
               f"Patient/{patient['id']}").returncode == 0
    scope = "launch/patient openid fhirUser offline_access patient/*.rs"
    app = json.loads(cli(db, "clients", "add", "--name", "Patient app", "--type", "public", "--scope", scope,
                         "--redirect-uri", REDIRECT, "--json").stdout)
    smart = fhir_client.FHIRClient(settings={"app_id": app["client_id"], "api_base": f"{live['base']}/fhir",
                                             "redirect_uri": REDIRECT, "scope": scope})
    authorize_url = smart.authorize_url
    query = parse_qs(urlparse(authorize_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["aud"] == [f"{live['base']}/fhir"]
    page = httpx.get(authorize_url)
    assert page.status_code == 200 and "Sign in" in page.text
    form = {k: v[0] for k, v in query.items()}
    signed_in = httpx.post(f"{live['base']}/auth/authorize", data={**form, "username": "mei", "password": "pw-123"})
    assert signed_in.status_code == 302
    smart.handle_callback(signed_in.headers["location"])
    assert smart.ready and smart.patient_id == patient["id"]
    assert smart.patient.name[0].family == "Chen"  # read through fhirclient with the access token
    bundle = smart.server.request_json("Observation")
    assert bundle["resourceType"] == "Bundle"
    assert smart.reauthorize()  # the refresh token, rotated


def test_backend_client_with_an_ec_key_over_tcp(live: dict[str, str]) -> None:
    key = ECKey.generate_key("P-384", auto_kid=True)
    keys = Path(live["db"]).parent / "device-jwks.json"
    keys.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    added = json.loads(cli(Path(live["db"]), "clients", "add", "--name", "Glucometer vendor", "--type",
                           "confidential-asymmetric", "--scope", "system/Observation.c", "--jwks", str(keys),
                           "--json").stdout)
    now = int(time.time())
    assertion = jwt.encode({"alg": "ES384", "kid": key.kid, "typ": "JWT"}, {
        "iss": added["client_id"], "sub": added["client_id"], "aud": f"{live['base']}/auth/token",
        "exp": now + 120, "jti": str(uuid.uuid4())}, key, algorithms=["ES384"])
    response = httpx.post(f"{live['base']}/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/Observation.c",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] <= 300
    reading = httpx.post(f"{live['base']}/fhir/Observation", headers={
        "Authorization": f"Bearer {response.json()['access_token']}", "content-type": "application/fhir+json"},
        json={"resourceType": "Observation", "status": "final", "code": {"text": "glucose"}})
    assert reading.status_code == 201
