"""Start-up memory: freed heap goes back to the system, and the SQLite server never loads the MongoDB driver.

https://man7.org/linux/man-pages/man3/malloc_trim.3.html
"""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

from server.memory import limit_arenas, release_free_memory


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


_CHURN_SCRIPT = """
import os, random, sys, threading
from resources.store.sqlite.memo import BoundedMemo
from server.memory import limit_arenas

def rss_mib():
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith('VmRSS'))

limited = limit_arenas(int(sys.argv[1]))
memo = BoundedMemo(8 * 1024 * 1024)
start = rss_mib()

def churn(seed):
    rng = random.Random(seed)
    for _ in range(120_000):  # bodies restored and evicted by three threads, as reader threads do
        stored = os.urandom(rng.randint(150, 600))
        if memo.get(stored) is None:
            memo.put(stored, b'x' * rng.randint(500, 3000))

threads = [threading.Thread(target=churn, args=(n,)) for n in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(limited, round((rss_mib() - start) / (memo.held_bytes / 2**20), 2))
"""


def test_no_arena_limit_is_set_for_zero() -> None:
    assert limit_arenas(0) is False


@pytest.mark.skipif(not Path("/proc/self/status").exists() or ctypes.util.find_library("c") is None,
                    reason="needs Linux's /proc and a C library with mallopt")
def test_with_one_arena_threads_churning_the_memo_grow_the_process_little_beyond_what_it_holds() -> None:
    # with glibc's default, three threads churning an 8 MiB memo grew the process about twice what it held
    runs = {}
    for arenas in ("1", "0"):
        out = subprocess.run([sys.executable, "-c", _CHURN_SCRIPT, arenas], capture_output=True, text=True,
                             timeout=120, check=True)
        runs[arenas] = out.stdout.split()
    assert runs["1"][0] == "True" and runs["0"][0] == "False"
    assert float(runs["1"][1]) < 1.5, runs
    assert float(runs["1"][1]) < float(runs["0"][1]), runs
