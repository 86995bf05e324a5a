"""Structured logs (issue 34, item 8): a live server's log is JSON lines with an access line per request, and
holds none of the seeded patient names, the client secret or the access token.

https://jsonlines.org/
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from resources.models import resource_types
from server.auth.service import AuthService
from server.logging_json import JsonFormatter, access_fields
from server.settings import Settings
from tests.conftest import free_port, serving

NAMES = ("Quintessa", "Zebrowski-Marlowe", "Ingeborg")


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/fhir/Patient/abc", {"interaction": "read", "type": "Patient", "operation": None}),
    ("GET", "/fhir/Quintessa", {"interaction": "search-type", "type": None, "operation": None}),
    ("POST", "/fhir/Patient/$Quintessa", {"interaction": "operation", "type": "Patient", "operation": None}),
    ("GET", "/fhir/Patient/1/$everything", {"interaction": "operation", "type": "Patient",
                                              "operation": "everything"}),
    ("POST", "/auth/token", {"interaction": "/auth"}),
    ("GET", "/readyz", {"interaction": "/readyz"}),
    ("GET", "/fhir/metadata", {"interaction": "capabilities", "type": None}),
])
def test_access_fields_name_only_what_the_server_knows(method: str, path: str, expected: dict[str, Any]) -> None:
    scope = {"type": "http", "method": method, "path": path, "query_string": b"name=Quintessa", "headers": []}
    found = access_fields(scope, 200, "rid-1", 0.0123)
    assert {k: found.get(k) for k in expected} == expected
    assert found["request_id"] == "rid-1" and found["latency_ms"] == 12.3 and found["status"] == 200
    assert "Quintessa" not in orjson.dumps(found).decode()


def test_formatter_writes_one_json_object() -> None:
    import logging

    record = logging.LogRecord("careloop.access", logging.INFO, __file__, 1, "request %s", ("done",), None)
    record.__dict__.update(request_id="r", status=201)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    found = orjson.loads(line)
    assert found["message"] == "request done" and found["request_id"] == "r" and found["status"] == 201
    assert found["level"] == "info" and found["logger"] == "careloop.access" and found["time"].endswith("+00:00")


def test_a_live_servers_log_is_json_lines_without_names_or_secrets(tmp_path: Path, seeded_database: Path) -> None:
    db = tmp_path / "fhir.db"
    shutil.copyfile(seeded_database, db)
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    auth = AuthService.open(Settings(sqlite_path=str(db), base_url=base), frozenset(resource_types()))
    try:
        record, secret = auth.add_client("clinic EHR", "confidential-symmetric", "system/*.cruds", [], ehr=True)
        auth.store.add_user("ingeborg", "a-password-only-she-knows", None, "Ingeborg Quintessa")
    finally:
        auth.close()
    assert secret is not None
    env = {**os.environ, "CARELOOP_LOG_FORMAT": "json", "CARELOOP_LOG_LEVEL": "info", "CARELOOP_BASE_URL": base,
           "CARELOOP_VALIDATION_WORKERS": "0"}
    log = tmp_path / "server.log"
    with log.open("w") as out, serving(port, db, env, base, stdout=out):
        token = httpx.post(f"http://127.0.0.1:{port}/auth/token", data={
            "grant_type": "client_credentials", "scope": "system/*.cruds"}, auth=(record.client_id, secret)
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "content-type": "application/fhir+json"}
        made = httpx.post(f"{base}/Patient", headers=headers, content=orjson.dumps({
            "resourceType": "Patient", "name": [{"family": NAMES[1], "given": [NAMES[0]]}]}))
        assert made.status_code == 201, made.text
        searched = httpx.get(f"{base}/Patient", params={"name": NAMES[0], "_total": "accurate"}, headers=headers)
        assert searched.status_code == 200 and searched.json()["total"] == 1
        assert httpx.get(f"{base}/Patient", params={"family": NAMES[1]}, headers={
            "Authorization": "Bearer not-a-token"}).status_code == 401
        refused = httpx.post(f"{base}/Patient", headers=headers, content=b'{"resourceType": "Patient", "name": '
                             b'[{"family": "Quintessa", "given": 7}]}')
        assert refused.status_code in (400, 422)
        signin = httpx.post(f"http://127.0.0.1:{port}/auth/token", data={
            "grant_type": "client_credentials", "scope": "system/*.cruds"}, auth=(record.client_id, "wrong" + secret))
        assert signin.status_code == 401
    text = log.read_text()
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]  # every line is one JSON object
    for secret_or_name in (*NAMES, secret, token, "a-password-only-she-knows"):
        assert secret_or_name not in text
    access = [e for e in lines if e["logger"] == "careloop.access"]
    search = next(e for e in access if e.get("interaction") == "search-type" and e["status"] == 200)
    assert search["request_id"] == searched.headers["x-request-id"]
    assert search["client"] == record.client_id and search["type"] == "Patient" and search["latency_ms"] > 0
    assert any(e.get("interaction") == "create" and e["status"] == 201 for e in access)
    assert any(e.get("interaction") == "search-type" and e["status"] == 401 and e.get("client") is None
               for e in access)
    assert any(e.get("interaction") == "/auth" and e["status"] == 401 for e in access)
