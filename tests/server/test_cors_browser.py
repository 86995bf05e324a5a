"""CORS in a real browser: headless Chromium runs a page's fetch() against a live server, preflight and all.

The page (served from its own origin by a static HTTP server) POSTs a Patient with a Bearer token and FHIR JSON,
which forces a preflight, and writes what it could read of the answer into the DOM; Chromium dumps the DOM.
https://fetch.spec.whatwg.org/#cors-preflight-fetch
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, wait_until_serving

ROOT = Path(__file__).parent.parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.slow

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>CORS probe</title></head><body>
<pre id="out">pending</pre>
<script>
fetch(%(api)s + "/Patient", {method: "POST", headers: {"Authorization": "Bearer " + %(token)s,
      "Content-Type": "application/fhir+json"},
      body: JSON.stringify({resourceType: "Patient", name: [{family: %(family)s}]})})
  .then(r => { document.getElementById("out").textContent = JSON.stringify({status: r.status,
      location: r.headers.get("Location"), etag: r.headers.get("ETag")}); })
  .catch(e => { document.getElementById("out").textContent = JSON.stringify({error: String(e)}); });
</script></body></html>"""


def _need_chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed; .ci/run installs it (tools/install-chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium, or run tools/install-chromium as root)")
    return CHROMIUM


def cli(db: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "server", *args, "--db", str(db)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live server with authorization on, and a backend token good for writing Patients."""
    _need_chromium()
    port = free_port()
    db = tmp_path_factory.mktemp("cors") / "live.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    env.update({"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_TERMINOLOGY_SEED": "false",
                "CARELOOP_PATHWAYS_SEED": "false", "CARELOOP_CORS_CACHE_SECONDS": "0.2"})
    process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--db", str(db)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_until_serving(process, base)
        client = json.loads(cli(db, "clients", "add", "--name", "probe backend", "--type", "confidential-symmetric",
                                "--scope", "system/*.cruds", "--json"))
        token = httpx.post(f"http://127.0.0.1:{port}/auth/token", auth=(client["client_id"], client["client_secret"]),
                           data={"grant_type": "client_credentials", "scope": "system/*.cruds"}, timeout=30)
        assert token.status_code == 200, token.text
        yield {"base": base, "db": db, "token": token.json()["access_token"]}
    finally:
        process.terminate()
        process.wait(timeout=30)


class _Page:
    """A static HTTP server on a loopback port of its own (an origin of its own) serving one page at /."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the signature http.server calls)
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Page:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_page(api: dict[str, Any], family: str, register: bool) -> dict[str, Any]:
    """Serve the probe page from a fresh origin (registered as a client's redirect URI or not) and run it."""
    page = PAGE % {"api": json.dumps(api["base"]), "token": json.dumps(api["token"]), "family": json.dumps(family)}
    with _Page(page) as served, tempfile.TemporaryDirectory() as profile:
        if register:
            cli(api["db"], "clients", "add", "--name", "browser app", "--type", "public", "--scope",
                "launch/patient patient/*.rs", "--redirect-uri", f"{served.origin}/callback")
        done = subprocess.run([_need_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                               "--virtual-time-budget=15000", "--dump-dom", f"{served.origin}/"],
                              capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no page in Chromium's output: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    outcome: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return outcome


def families(api: dict[str, Any], family: str) -> int:
    response = httpx.get(f"{api['base']}/Patient", params={"family": family, "_summary": "count"},
                         headers={"Authorization": f"Bearer {api['token']}"}, timeout=30)
    total: int = response.json()["total"]
    return total


def test_a_registered_origin_reads_the_answer_and_its_exposed_headers(api: dict[str, Any]) -> None:
    outcome = run_page(api, "Allowed", register=True)
    assert outcome.get("status") == 201, outcome
    assert outcome["location"].startswith(f"{api['base']}/Patient/"), outcome
    assert outcome["etag"] == 'W/"1"', outcome
    assert families(api, "Allowed") == 1


def test_another_origin_fails_the_preflight_and_nothing_is_written(api: dict[str, Any]) -> None:
    outcome = run_page(api, "Refused", register=False)
    assert "error" in outcome and "Failed to fetch" in outcome["error"], outcome
    assert families(api, "Refused") == 0  # the preflight was refused, so the POST was never sent
