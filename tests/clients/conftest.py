"""A live server with authorization on for real client libraries, and a backend token (the clinic's EHR client).

https://hl7.org/fhir/smart-app-launch/backend-services.html
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, serving

ROOT = Path(__file__).parent.parent.parent


@dataclass(frozen=True)
class Live:
    """Where the live server answers, and a bearer token good for every interaction."""

    base: str
    token: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    port = free_port()
    db = tmp_path_factory.mktemp("clients") / "live.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    env.update({"CARELOOP_LOG_LEVEL": "warning", "CARELOOP_TERMINOLOGY_SEED": "false",
                "CARELOOP_SUBSCRIPTION_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
                "CARELOOP_SUBSCRIPTION_RETRY_DELAYS": "[0.2, 0.2]"})
    base = f"http://127.0.0.1:{port}/fhir"
    with serving(port, db, env, base, stdout=subprocess.DEVNULL):
        added = subprocess.run([sys.executable, "-m", "server", "clients", "add", "--name", "client tests",
                                "--type", "confidential-symmetric", "--scope", "system/*.cruds", "--ehr", "--json",
                                "--db", str(db)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        client = json.loads(added.stdout)
        token = httpx.post(f"http://127.0.0.1:{port}/auth/token", auth=(client["client_id"], client["client_secret"]),
                           data={"grant_type": "client_credentials", "scope": "system/*.cruds"}, timeout=30)
        assert token.status_code == 200, token.text
        yield Live(base, token.json()["access_token"])
