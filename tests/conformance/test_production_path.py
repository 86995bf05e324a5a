"""The production path: the server refuses to start without MongoDB, and the compose file and image say what
`docker compose up` needs (no Docker engine runs here, so their content is what can be checked).

https://docs.docker.com/compose/compose-file/
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent.parent


def test_server_refuses_to_start_when_mongodb_is_unreachable(tmp_path: Path) -> None:
    env = {**os.environ, "CARELOOP_STORE": "mongodb", "CARELOOP_MONGODB_URL": "mongodb://127.0.0.1:9/",
           "CARELOOP_MONGODB_TIMEOUT_MS": "300", "CARELOOP_AUTH": "off", "CARELOOP_LOG_LEVEL": "warning"}
    result = subprocess.run([sys.executable, "-m", "server", "serve", "--port", "0", "--db",
                             str(tmp_path / "unused.db")], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode != 0
    assert "MongoDB at mongodb://127.0.0.1:9/ is unreachable" in result.stdout + result.stderr


def test_compose_runs_a_self_initiating_replica_set_and_the_server_on_it() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mongo, server = compose["services"]["mongo"], compose["services"]["careloop"]
    assert "--replSet" in mongo["command"]
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])
    assert any(v.startswith("mongo-data:") for v in mongo["volumes"])
    assert server["build"] == "." and server["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert server["environment"]["CARELOOP_STORE"] == "mongodb"
    assert "replicaSet=rs0" in server["environment"]["CARELOOP_MONGODB_URL"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "server", "serve"]' in dockerfile and "HEALTHCHECK" in dockerfile
    for package in ("server", "resources", "consent", "operations", "subscriptions", "terminology"):
        assert f"COPY {package} ./{package}" in dockerfile
