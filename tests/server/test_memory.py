"""Start-up memory: freed heap goes back to the system, and the SQLite server never loads the MongoDB driver.

https://man7.org/linux/man-pages/man3/malloc_trim.3.html
"""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

from server.memory import release_free_memory


def test_freed_heap_is_returned_where_glibc_is_the_c_library() -> None:
    has_trim = ctypes.util.find_library("c") is not None and hasattr(ctypes.CDLL(ctypes.util.find_library("c")),
                                                                      "malloc_trim")
    assert release_free_memory() is has_trim


def test_the_sqlite_server_does_not_import_pymongo(tmp_path: object) -> None:
    # pymongo costs every process about 14 MB; only CARELOOP_STORE=mongodb needs it
    script = ("import sys\nfrom server.app import build_services\nfrom server.settings import Settings\n"
              f"build_services(Settings(auth='off', sqlite_path={str(tmp_path)!r} + '/m.db'))\n"
              "print('pymongo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


_WORKER_SCRIPT = """
import multiprocessing, os, signal, sys, time
from starlette.testclient import TestClient
from server.app import create_app
from server.settings import Settings

app = create_app(Settings(auth='off', sqlite_path=sys.argv[1], validation_workers=1, terminology_seed=False))
good = {'resourceType': 'Patient', 'active': True}
bad = {'resourceType': 'Patient', 'active': 'true', 'birthDate': '1990-01-01'}
with TestClient(app) as client:
    codes = [client.post('/fhir/Patient', json=good).status_code, client.post('/fhir/Patient', json=bad).status_code]
    unknown = client.post('/fhir/Patient', json={'resourceType': 'Patient', 'nonsense': 1}).status_code
    print('models in the serving process:', 'fhir.resources' in sys.modules)
    for child in multiprocessing.active_children():
        if child.name.startswith('SpawnProcess'):
            os.kill(child.pid, signal.SIGKILL)
            child.join()
    after = [client.post('/fhir/Patient', json=bad).status_code, client.post('/fhir/Patient', json=good).status_code]
    print('codes:', codes, unknown, after)
    print('workers again:', any(c.name.startswith('SpawnProcess') and c.is_alive()
                                for c in multiprocessing.active_children()))
    stored = client.get('/fhir/Patient', params={'_summary': 'count'}).json()['total']
    print('stored:', stored)
"""


def test_with_a_worker_the_models_live_there_alone_and_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    # the R4B models are ~70 MB: the serving process must not hold a second copy of the worker's
    out = subprocess.run([sys.executable, "-c", _WORKER_SCRIPT, str(tmp_path / "w.db")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "models in the serving process: False" in lines
    # the worker refuses "true" for a boolean and an unknown element; after its death the checks still hold
    assert "codes: [201, 400] 400 [400, 201]" in lines, out.stdout
    assert "workers again: True" in lines
    assert "stored: 2" in lines  # the two valid ones, nothing of the refused
