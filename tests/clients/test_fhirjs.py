"""fhir.js, unmodified, sorting a search (issue 33 item 8): it sends `_sort:desc=...`, the DSTU2 form.

The package is pinned in tests/node/package.json and installed with `npm ci` into a temp folder, as for the
other Node clients (tests/auth/test_node_clients.py). https://github.com/FHIR/fhir.js
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.auth.test_node_clients import NODE_DIR, _install, _unavailable
from tests.clients.conftest import Live

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fhirjs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fhirjs")
    failed = _install(folder)
    if failed:
        if failed.startswith("offline"):
            _unavailable(failed)
        pytest.fail(failed)
    shutil.copyfile(NODE_DIR / "fhirjs.mjs", folder / "fhirjs.mjs")
    return folder


def test_fhir_js_sort_desc_and_asc(fhirjs: Path, live: Live) -> None:
    family = f"Fhirjs{uuid.uuid4().hex[:8]}"
    for born in ("1990-01-01", "1970-01-01", "1980-01-01"):
        created = httpx.post(f"{live.base}/Patient", json={"resourceType": "Patient", "name": [{"family": family}],
                                                            "birthDate": born},
                             headers={"Authorization": f"Bearer {live.token}",
                                      "Content-Type": "application/fhir+json"}, timeout=30)
        assert created.status_code == 201, created.text
    done = subprocess.run(["node", "fhirjs.mjs", json.dumps({"fhirBase": live.base, "token": live.token,
                                                             "family": family})],
                          cwd=fhirjs, capture_output=True, text=True, timeout=90, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["ok"], result
    assert result["desc"] == ["1990-01-01", "1980-01-01", "1970-01-01"]
    assert result["asc"] == ["1970-01-01", "1980-01-01", "1990-01-01"]
