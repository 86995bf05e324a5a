"""/docs and the OpenAPI document (issue 33 item 7): Swagger UI served locally from its package, the SMART security
scheme behind an Authorize button, the auth endpoints described, and the two answers schemathesis found
undescribed (DELETE's media type, `POST $reindex`'s 202).

https://spec.openapis.org/oas/v3.1.0#security-scheme-object, https://swagger.io/docs/open-source-tools/swagger-ui/
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis

from server.settings import Settings
from tests.conftest import client_for, free_port, serving

ROOT = Path(__file__).parent.parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ORIGIN = "http://localhost:8080"


def _auth_on(tmp_path: Path) -> Settings:
    return Settings(sqlite_path=str(tmp_path / "docs.db"), validation_workers=0, terminology_seed=False,
                    pathways_seed=False, audit="off", base_url=f"{ORIGIN}/fhir")


@pytest.mark.anyio
async def test_openapi_describes_smart_and_the_auth_endpoints(tmp_path: Path) -> None:
    async with client_for(_auth_on(tmp_path)) as client:
        schema: dict[str, Any] = (await client.get(f"{ORIGIN}/openapi.json")).json()
        smart = schema["components"]["securitySchemes"]["smart"]
        assert smart["type"] == "oauth2"
        code, credentials = smart["flows"]["authorizationCode"], smart["flows"]["clientCredentials"]
        assert code["authorizationUrl"] == f"{ORIGIN}/auth/authorize"
        assert code["tokenUrl"] == credentials["tokenUrl"] == f"{ORIGIN}/auth/token"
        assert "system/*.cruds" in credentials["scopes"] and "launch/patient" in code["scopes"]
        discovery = (await client.get(f"{ORIGIN}/fhir/.well-known/smart-configuration")).json()
        assert discovery["token_endpoint"] == credentials["tokenUrl"]
        assert discovery["authorization_endpoint"] == code["authorizationUrl"]
        assert "S256" in discovery["code_challenge_methods_supported"]
        assert schema["security"] == [{"smart": []}]
        assert schema["paths"]["/fhir/metadata"]["get"]["security"] == []
        for path, method in (("/auth/token", "post"), ("/auth/authorize", "get"), ("/auth/introspect", "post"),
                             ("/auth/revoke", "post"), ("/auth/jwks", "get"), ("/auth/launch", "post"),
                             ("/fhir/.well-known/smart-configuration", "get"),
                             ("/.well-known/oauth-authorization-server", "get")):
            assert method in schema["paths"][path], path
        token_form = schema["paths"]["/auth/token"]["post"]["requestBody"]["content"]
        assert "grant_type" in token_form["application/x-www-form-urlencoded"]["schema"]["properties"]


@pytest.mark.anyio
async def test_docs_page_loads_its_assets_from_this_server(tmp_path: Path) -> None:
    async with client_for(_auth_on(tmp_path)) as client:
        page = await client.get(f"{ORIGIN}/docs")
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(url.startswith("/docs/assets/") for url in assets), assets
        assert "cdn" not in page.text.lower()
        for url in assets:
            answer = await client.get(f"{ORIGIN}{url}")
            assert answer.status_code == 200 and len(answer.content) > 500, url
        assert "usePkceWithAuthorizationCodeGrant" in page.text
        assert (await client.get(f"{ORIGIN}/docs/oauth2-redirect")).status_code == 200


def test_delete_and_reindex_answers_match_the_description(live_server: str) -> None:
    schema = schemathesis.openapi.from_url(live_server.removesuffix("/fhir") + "/openapi.json")
    document = schema.raw_schema
    for path in ("/fhir/{type}/{id}", "/fhir/{type}"):
        assert "application/json" not in document["paths"][path]["delete"]["responses"]["200"].get("content", {})
    assert "202" in document["paths"]["/fhir/$reindex"]["post"]["responses"]
    checked = [0]
    for path, method in (("/fhir/{type}/{id}", "DELETE"), ("/fhir/$reindex", "POST")):
        operation = schema[path][method]

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=8, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def run(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            case.validate_response(response, checks=(schemathesis.checks.content_type_conformance,
                                                      schemathesis.checks.status_code_conformance))
            checked[0] += 1

        run()
    assert checked[0] >= 4


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live server with authorization on (the Authorize button needs the security scheme)."""
    port = free_port()
    db = tmp_path_factory.mktemp("docs") / "live.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    env.update({"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_TERMINOLOGY_SEED": "false",
                "CARELOOP_PATHWAYS_SEED": "false"})
    with serving(port, db, env, f"http://127.0.0.1:{port}/fhir"):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_docs_renders_offline_with_an_authorize_button(docs_server: str) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed; .ci/run installs it (tools/install-chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium, or run tools/install-chromium as root)")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                               # offline: no name but loopback resolves, so a CDN asset could not load
                               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                               "--virtual-time-budget=20000", "--dump-dom", f"{docs_server}/docs"],
                              capture_output=True, text=True, timeout=180, check=False)
    dom = done.stdout
    assert 'class="swagger-ui' in dom, f"Swagger UI did not render: {dom[-2000:]} {done.stderr[-2000:]}"
    assert re.search(r'<button class="btn authorize[^"]*"', dom), dom[-3000:]
    assert "CareLoop FHIR server" in dom
    assert "/auth/token" in dom or "opblock" in dom  # the operations (auth endpoints among them) are listed
    assert "Failed to load API definition" not in dom
