"""A fresh clone set up as the README says (issue 33 items 1, 4, 5): `make run`, then the README's own shell
blocks, pasted as written (only `<secret>` filled in and the port moved to a free one), run twice.

https://www.gnu.org/software/make/manual/make.html
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent.parent
START_SECONDS = 900  # pip install of the runtime dependencies, then the first start's terminology seed


def _shell_blocks(readme: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL)


def _clone(into: Path) -> Path:
    """The tracked files of this checkout, as a clone would have them (the working tree's versions)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`make run` in a fresh clone on a free port; yields the clone, port, what it printed and the secret."""
    clone = _clone(tmp_path_factory.mktemp("fresh") / "careloop")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARELOOP_", "VIRTUAL_ENV"))}
    env.update({"CARELOOP_PORT": str(port), "CARELOOP_VALIDATION_WORKERS": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    process = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    printed: list[str] = []
    try:
        deadline = time.monotonic() + START_SECONDS
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            printed.append(line)
            if "Authorization: Bearer" in line:
                break
        output = "".join(printed)
        secret = re.search(r"client_secret:\s+(\S+)", output)
        assert secret, output
        _wait_until_answering(port)
        yield {"clone": str(clone), "port": str(port), "output": output, "secret": secret.group(1)}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def _wait_until_answering(port: int) -> None:
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("the server never answered")


def test_make_run_installs_only_the_runtime_and_prints_no_warning(started: dict[str, str]) -> None:
    venv = Path(started["clone"]) / ".venv" / "bin"
    assert (venv / "careloop").exists()
    assert not (venv / "pytest").exists() and not (venv / "ruff").exists()
    for noise in ("BuildBackendWarning", "Please be careful", "SetuptoolsDeprecationWarning", "Traceback"):
        assert noise not in started["output"], started["output"]


def _run_readme(started: dict[str, str]) -> str:
    readme = (Path(started["clone"]) / "README.md").read_text()
    blocks = [b for b in _shell_blocks(readme) if "curl" in b]
    assert len(blocks) >= 2, "the README's first-request examples are gone"
    script = "set -euo pipefail\n" + "\n".join(blocks)
    script = script.replace("<secret>", started["secret"]).replace("127.0.0.1:8080", f"127.0.0.1:{started['port']}")
    done = subprocess.run(["bash", "-c", script], cwd=started["clone"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_readme_commands_run_as_written_twice(started: dict[str, str]) -> None:
    first = _run_readme(started)
    ids = re.findall(r"^patient id: (\S+)$", first, flags=re.MULTILINE)
    assert len(ids) == 1 and "_history" not in ids[0], first[-3000:]
    summary = [line for line in first.splitlines() if re.match(r"^\d{3} ", line)]
    assert [line.split()[0] for line in summary] == ["201", "201", "201"], first[-3000:]
    assert len(first) < 20_000  # a summary, not the 150 KB answer of a whole transaction
    second = _run_readme(started)
    assert re.findall(r"^patient id: (\S+)$", second, flags=re.MULTILINE) == ids  # the same patient, not a new one
    assert [line.split()[0] for line in second.splitlines() if re.match(r"^\d{3} ", line)] == ["200"] * 3
    secret = started["secret"]
    base = f"http://127.0.0.1:{started['port']}"
    token = httpx.post(f"{base}/auth/token", auth=("careloop-dev", secret),
                       data={"grant_type": "client_credentials", "scope": "system/*.rs"}).json()["access_token"]
    found = httpx.get(f"{base}/fhir/Patient", params={"identifier": "urn:oid:1.2.3|MRN-1", "_total": "accurate"},
                      headers={"Authorization": f"Bearer {token}"}).json()
    assert found["total"] == 1
    assert json.loads(json.dumps(found))["entry"][0]["resource"]["id"] == ids[0]
