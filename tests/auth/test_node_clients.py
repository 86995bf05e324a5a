"""Real Node FHIR/SMART clients, unmodified, against a live server (issue 27 item 12): MedplumClient
(`@medplum/core`, client credentials), `fhir-kit-client` with a client_credentials token, and the SMART JS
client (`fhirclient`) doing a standalone launch with PKCE and a refresh.

The packages are pinned in tests/node/package.json and package-lock.json and installed with `npm ci` into a
temp folder once per test session. Without npm or the registry, the tests fail when CI=true and skip otherwise.
https://www.medplum.com/docs/sdk/core.medplumclient, https://docs.smarthealthit.org/client-js/,
https://github.com/Vermonster/fhir-kit-client
"""

from __future__ import annotations

import fcntl
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx
import pytest

from resources.models import resource_types
from server.auth.service import AuthService, auth_path
from server.auth.store import AuthStore
from server.settings import Settings
from tests.conftest import free_port, wait_until_serving

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent.parent
NODE_DIR = ROOT / "tests" / "node"
NODE_FILES = ("package.json", "package-lock.json", ".npmrc", "medplum.mjs", "fhirkit.mjs", "fhirclient.mjs")
NPM_SECONDS = 300
SCRIPT_SECONDS = 90
# npm's own words for "the registry cannot be reached": only these may skip a local run
OFFLINE = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|network")
APP_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"
MEDPLUM_SCOPE = "system/Patient.cruds"
KIT_SCOPE = "system/Patient.cruds system/Observation.cruds"


def _unavailable(reason: str) -> None:
    """Fail in CI (the suite must prove the clients work there), skip with the reason elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Node clients cannot be installed and CI=true: {reason}", pytrace=False)
    pytest.skip(f"Node clients not installed: {reason}")


def _install(folder: Path) -> str | None:
    """Copy tests/node into `folder` and `npm ci` there; None on success, else why it failed."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        return "offline: node or npm is not on PATH"
    folder.mkdir(parents=True, exist_ok=True)
    for name in NODE_FILES:
        shutil.copyfile(NODE_DIR / name, folder / name)
    try:  # npm's normal cache (~/.npm) makes repeated runs fast
        done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=folder,
                              capture_output=True, text=True, timeout=NPM_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return f"offline: npm ci took more than {NPM_SECONDS} s"
    if done.returncode != 0:
        said = done.stderr or done.stdout
        errors = [line for line in said.splitlines() if line.startswith("npm error")][:6] or said.splitlines()[-6:]
        kind = "offline" if OFFLINE.search(said) else "failed"
        return f"{kind}: npm ci exited {done.returncode}: {' | '.join(errors)}"
    return None


@pytest.fixture(scope="session")
def node_clients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder with tests/node installed; one `npm ci` per session, shared by the xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, common to its workers
    folder, marker = root / "node-clients", root / "node-clients.result"
    with (root / "node-clients.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker installs, the others wait for its result
        if not marker.exists():
            marker.write_text(_install(folder) or "ok")
    result = marker.read_text()
    if result.startswith("offline"):
        _unavailable(result)
    assert result == "ok", result  # a broken lock file or package fails everywhere
    return folder


@dataclass
class Live:
    """A live server with SMART on, and what the test registered in its auth store."""

    base: str
    fhir: str
    db: Path
    log: Path
    secrets: dict[str, str]
    app_port: int
    app_client: str
    patient: str
    observation: str

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _register(db: Path, app_redirect: str) -> dict[str, str]:
    """Clients in the server's auth store before it starts, as `python -m server clients add` makes them."""
    auth = AuthService.open(Settings(sqlite_path=str(db)), frozenset(resource_types()))
    try:
        found: dict[str, str] = {}
        for name, kind, scope, uris in (("admin", "confidential-symmetric", "system/*.cruds", []),
                                        ("medplum", "confidential-symmetric", MEDPLUM_SCOPE, []),
                                        ("fhirkit", "confidential-symmetric", KIT_SCOPE, []),
                                        ("app", "public", APP_SCOPE, [app_redirect])):
            # the backends play the clinic's own systems (--ehr): they record care without a collection consent
            record, secret = auth.add_client(f"node {name}", kind, scope, uris, client_id=f"node-{name}",
                                             ehr=kind != "public")
            found[name] = record.client_id
            if secret:
                found[f"{name}_secret"] = secret
        return found
    finally:
        auth.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`python -m server serve` on a free loopback port with SMART on, a patient user and her data."""
    folder = tmp_path_factory.mktemp("node-live")
    db, log = folder / "live.db", folder / "server.log"
    port, app_port = free_port(), free_port()
    registered = _register(db, f"http://127.0.0.1:{app_port}/callback")
    env = {k: v for k, v in os.environ.items() if k != "CARELOOP_AUTH"}
    env.update({"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_TERMINOLOGY_SEED": "false"})
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port",
                                    str(port), "--db", str(db)], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, f"{base}/fhir")
        token = httpx.post(f"{base}/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                           auth=(registered["admin"], registered["admin_secret"])).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}", "content-type": "application/fhir+json"}
        patient = httpx.post(f"{base}/fhir/Patient", headers=admin, json={
            "resourceType": "Patient", "name": [{"family": "Okafor", "given": ["Ada"]}]}).json()["id"]
        observation = httpx.post(f"{base}/fhir/Observation", headers=admin, json={
            "resourceType": "Observation", "status": "final", "code": {"text": "heart rate"},
            "subject": {"reference": f"Patient/{patient}"}}).json()["id"]
        store = AuthStore(auth_path(Settings(sqlite_path=str(db)))).open()
        try:  # the running server reads users from the same SQLite file at sign-in
            store.add_user("ada", "ada-pw-1", f"Patient/{patient}", "Ada Okafor")
        finally:
            store.close()
        secrets = {k: v for k, v in registered.items() if k.endswith("_secret")}
        yield Live(base, f"{base}/fhir", db, log, secrets, app_port, registered["app"], patient, observation)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _run(folder: Path, script: str, live: Live, args: dict[str, Any]) -> dict[str, Any]:
    """Run one Node client script and return the JSON line it printed."""
    done = subprocess.run(["node", script, json.dumps(args)], cwd=folder, capture_output=True, text=True,
                          timeout=SCRIPT_SECONDS, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{script} printed nothing (exit {done.returncode}): {done.stderr[-3000:]}\n{live.log_tail()}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok") and done.returncode == 0, f"{script}: {result}\n{done.stderr[-3000:]}\n{live.log_tail()}"
    return result


def test_node_packages_are_pinned_exactly() -> None:
    manifest = json.loads((NODE_DIR / "package.json").read_text())
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    assert set(manifest["dependencies"]) == {"@medplum/core", "fhirclient", "fhir-kit-client", "fhir.js"}
    for name, version in manifest["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} must be pinned exactly, not {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    assert "node_modules/" in (ROOT / ".gitignore").read_text().splitlines()


def test_medplum_client_credentials_login_then_create_read_search(node_clients: Path, live: Live) -> None:
    result = _run(node_clients, "medplum.mjs", live, {
        "base": f"{live.base}/", "clientId": "node-medplum", "clientSecret": live.secrets["medplum_secret"],
        "family": "Medplumson"})
    # startClientLogin sends client_id and client_secret in the body and no scope: the registered scopes come back
    assert result["scope"] == MEDPLUM_SCOPE and result["clientId"] == "node-medplum"
    created = result["created"]["id"]
    assert result["created"]["versionId"] == "1"
    assert result["read"] == {"id": created, "family": "Medplumson", "birthDate": "1980-02-03"}
    assert result["searchIds"] == [created] and result["searchBundleType"] == "searchset"
    stored = httpx.get(f"{live.fhir}/Patient/{created}", headers=_admin(live)).json()
    assert stored["name"][0]["given"] == ["Medplum"]


def test_fhir_kit_client_with_a_client_credentials_token(node_clients: Path, live: Live) -> None:
    result = _run(node_clients, "fhirkit.mjs", live, {
        "fhirBase": live.fhir, "clientId": "node-fhirkit", "clientSecret": live.secrets["fhirkit_secret"],
        "scope": KIT_SCOPE, "family": "Kitson"})
    assert result["auth"] == {"tokenUrl": f"{live.base}/auth/token", "authorizeUrl": f"{live.base}/auth/authorize"}
    assert result["capability"]["fhirVersion"].startswith("4.3")
    assert result["capability"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert result["tokenScope"] == KIT_SCOPE
    created = result["created"]["id"]
    assert result["created"]["versionId"] == "1" and result["read"] == {"id": created, "family": "Kitson"}
    assert result["search"] == {"type": "searchset", "ids": [created]}
    assert result["updated"] == {"versionId": "2", "gender": "other"}
    assert result["reread"] == {"versionId": "2", "gender": "other", "birthDate": "1975-05-06"}
    assert result["observationIds"] == [result["observation"]["id"]]


def test_fhirclient_pkce_launch_then_refresh_without_client_id(node_clients: Path, live: Live) -> None:
    app = subprocess.Popen(["node", "fhirclient.mjs", json.dumps({
        "fhirBase": live.fhir, "clientId": live.app_client, "scope": APP_SCOPE, "port": live.app_port})],
        cwd=node_clients, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    app_url = f"http://127.0.0.1:{live.app_port}"
    try:
        _wait_for(app, app_url)
        with httpx.Client(timeout=SCRIPT_SECONDS) as browser:
            result = _browse(browser, app_url, live)
        out, err = app.communicate(timeout=SCRIPT_SECONDS)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(timeout=10)
    assert app.returncode == 0 and result.get("ok"), f"{result}\n{out}\n{err}\n{live.log_tail()}"
    assert json.loads(out.splitlines()[-1]) == result
    assert result["pkce"] is True and result["patientId"] == live.patient
    assert result["fhirUser"] == f"Patient/{live.patient}" and result["family"] == "Okafor"
    assert result["observationIds"] == [live.observation]
    assert set(result["scope"].split()) == set(APP_SCOPE.split())
    # the library's own refresh: no client_id in the body, and the session goes on with rotated tokens
    assert result["refreshSentClientId"] is False
    assert result["refreshed"] == {"newAccessToken": True, "newRefreshToken": True, "patient": live.patient,
                                   "readAfterRefresh": live.patient}


def _admin(live: Live) -> dict[str, str]:
    token = httpx.post(f"{live.base}/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                       auth=("node-admin", live.secrets["admin_secret"])).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _wait_for(app: subprocess.Popen[str], url: str) -> None:
    """Wait until the Node app answers; fail if it exits first."""
    deadline = time.monotonic() + SCRIPT_SECONDS
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/ready", timeout=2)
            return
        except httpx.TransportError:
            if app.poll() is not None:
                out, err = app.communicate()
                raise AssertionError(f"the fhirclient app exited: {out}\n{err}") from None
            time.sleep(0.1)
    raise AssertionError("the fhirclient app did not start")


def _form_fields(page: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the page's form, as a browser would submit them."""
    action = re.search(r"<form[^>]*action='([^']*)'", page)
    assert action, page
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r"<input type='hidden' name='([^']*)' value='([^']*)'>", page)}
    return html.unescape(action.group(1)), fields


def _browse(browser: httpx.Client, app_url: str, live: Live) -> dict[str, Any]:
    """The user's browser: open the app, follow it to sign-in, sign in, follow the redirect back to the app."""
    launch = browser.get(f"{app_url}/launch")
    assert launch.status_code == 302, launch.text
    authorize_url = launch.headers["location"]
    assert authorize_url.startswith(f"{live.base}/auth/authorize?"), authorize_url
    page = browser.get(authorize_url)
    assert page.status_code == 200 and "Sign in" in page.text, page.text
    action, fields = _form_fields(page.text)
    answer = browser.post(urljoin(authorize_url, action), data={**fields, "username": "ada", "password": "ada-pw-1"})
    if answer.status_code == 200 and "Choose a patient" in answer.text:  # only if the server asks
        action, fields = _form_fields(answer.text)
        answer = browser.post(urljoin(authorize_url, action), data={**fields, "patient": live.patient})
    assert answer.status_code == 302, answer.text
    callback = answer.headers["location"]
    assert urlparse(callback).netloc == f"127.0.0.1:{live.app_port}", callback
    response = browser.get(callback)
    found: dict[str, Any] = response.json()
    return found
