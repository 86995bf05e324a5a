"""The command line a newcomer meets (issue 33 items 1-3 and 6): `careloop` on PATH, `serve --help` listing every
setting, `clients reset-secret`, what each start says about credentials, and a taken port refused at once.

https://packaging.python.org/en/latest/specifications/entry-points/#use-for-scripts
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.cli import DEV_CLIENT, _dev_client
from server.portcheck import port_in_use
from server.settings import Settings
from tests.conftest import client_for

ROOT = Path(__file__).parent.parent.parent
CARELOOP = Path(sys.executable).parent / "careloop"


def careloop(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CARELOOP), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)


def test_console_script_is_installed() -> None:
    assert CARELOOP.exists(), "pip install -e . did not install the careloop console script"
    shown = careloop("--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: careloop ")
    for command in ("serve", "clients", "users", "audit"):
        assert command in shown.stdout


def test_serve_help_lists_every_setting_with_default() -> None:
    shown = careloop("serve", "--help")
    assert shown.returncode == 0
    text = shown.stdout
    for name, field in Settings.model_fields.items():
        variable = f"CARELOOP_{name.upper()}"
        assert f"  {variable}  (default: " in text, variable
        default = field.get_default(call_default_factory=True)
        if isinstance(default, str | int | float) and not isinstance(default, bool):
            assert f"{variable}  (default: {default})" in text, variable
    assert "CARELOOP_SUBSCRIPTION_RETRY_DELAYS  (default: [0.5, 2.0, 10.0, 30.0])" in text


async def _token(settings: Settings, secret: str) -> str:
    async with client_for(settings) as client:  # loopback: plain http is allowed there only
        answer = await client.post("http://localhost:8080/auth/token", auth=(DEV_CLIENT, secret),
                                   data={"grant_type": "client_credentials", "scope": "system/Patient.rs"})
    return "token" if answer.status_code == 200 else str(answer.json()["error"])


@pytest.mark.anyio
async def test_reset_secret_prints_a_new_working_secret(tmp_path: Path) -> None:
    db = tmp_path / "reset.db"
    settings = Settings(sqlite_path=str(db), validation_workers=0, terminology_seed=False, pathways_seed=False,
                        audit="off")
    created = careloop("clients", "reset-secret", DEV_CLIENT, "--db", str(db), "--json")
    assert created.returncode == 0, created.stderr  # no development client yet: the reset creates it
    first = json.loads(created.stdout)["client_secret"]
    renewed = careloop("clients", "reset-secret", DEV_CLIENT, "--db", str(db))
    assert renewed.returncode == 0, renewed.stderr
    assert "the old one no longer works" in renewed.stdout and "TOKEN=$(curl" in renewed.stdout
    second = renewed.stdout.split("client_secret:")[1].split()[0]
    assert second != first
    assert await _token(settings, first) == "invalid_client"
    assert await _token(settings, second) == "token"
    unknown = careloop("clients", "reset-secret", "nobody", "--db", str(db))
    assert unknown.returncode == 1 and "no client nobody" in unknown.stderr
    public = json.loads(careloop("clients", "add", "--name", "app", "--type", "public", "--scope", "patient/*.rs",
                                 "--redirect-uri", "http://localhost:9/cb", "--db", str(db), "--json").stdout)
    refused = careloop("clients", "reset-secret", public["client_id"], "--db", str(db))
    assert refused.returncode == 1 and "only confidential-symmetric clients have a secret" in refused.stderr


def test_every_start_says_where_credentials_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(sqlite_path=str(tmp_path / "starts.db"))
    _dev_client(settings)
    first = capsys.readouterr().out
    assert "client_secret:" in first and f"careloop clients reset-secret {DEV_CLIENT}" in first
    _dev_client(settings)
    second = capsys.readouterr().out
    assert "client_secret:" not in second
    assert "printed on the first start" in second and f"careloop clients reset-secret {DEV_CLIENT}" in second
    assert str(tmp_path / "starts-auth.db") in second
    db = str(tmp_path / "starts.db")
    assert careloop("clients", "add", "--name", "gateway", "--type", "confidential-symmetric", "--scope",
                    "system/*.rs", "--db", db).returncode == 0
    assert careloop("clients", "remove", DEV_CLIENT, "--db", db).returncode == 0
    _dev_client(settings)
    third = capsys.readouterr().out
    assert "There is no development client" in third and "creates it again" in third


def test_a_taken_port_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
        started = time.monotonic()
        done = careloop("serve", "--port", str(port), "--db", str(tmp_path / "busy.db"), env=env)
        took = time.monotonic() - started
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert f"pid {os.getpid()}" in done.stderr  # who holds it
    assert "--port" in done.stderr and "CARELOOP_PORT" in done.stderr
    assert not (tmp_path / "busy-auth.db").exists()  # nothing was started or created
    assert "Traceback" not in done.stderr
    assert took < 30


def test_readme_and_security_doc_use_the_console_script() -> None:
    for doc in (ROOT / "README.md", ROOT / "docs" / "security.md"):
        text = doc.read_text()
        assert "python -m server" not in text, doc
    assert ".venv/bin/careloop clients add" in (ROOT / "README.md").read_text()


def test_port_check_without_a_holder() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_in_use("127.0.0.1", port) is None  # a free port is no obstacle
