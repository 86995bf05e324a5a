"""Helpers shared by the benchmarks: pinned subprocesses, free ports, waiting for readiness, results."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).parent.parent
PYTHON = sys.executable


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """The command run on one core (taskset), or as is where that is not possible."""
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) <= cpu:
        return list(command)
    return ["taskset", "-c", str(cpu), *command]


def start(command: Sequence[str], ready_url: str, env: dict[str, str] | None = None,
          timeout: float = 120) -> subprocess.Popen[bytes]:
    """Start a server process and wait until ready_url answers 200."""
    # servers run without the token check unless a benchmark turns it on (env CARELOOP_AUTH=on) and sends one
    defaults = {"CARELOOP_AUTH": "off"}
    process = subprocess.Popen(list(command), cwd=ROOT, env={**defaults, **os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command} did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server process."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children_rss_mb(pid: int) -> float:
    """Resident memory of a process's child processes (the validation workers) in MiB."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += rss_mb(int(child))
            except OSError:
                continue
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadgen(port: int, paths: list[str], connections: int, seconds: float, warmup: float,
            cpu: int | None, server_pid: int | None = None, token: str | None = None,
            pair: tuple[int, list[str]] | None = None) -> dict[str, Any]:
    """Run bench/loadgen.py in its own process and return its summary (with server CPU use when given a pid).

    pair: a second server's port and paths, requested in turn with the first (its summary under "pair").
    """
    paths_file = ROOT / "bench" / "out" / f"paths-{port}.json"
    paths_file.parent.mkdir(exist_ok=True)
    paths_file.write_text(json.dumps(paths))
    command = [PYTHON, "-m", "bench.loadgen", "--port", str(port), "--paths", str(paths_file),
               "--connections", str(connections), "--seconds", str(seconds), "--warmup", str(warmup)]
    if pair is not None:
        pair_file = ROOT / "bench" / "out" / f"paths-{pair[0]}.json"
        pair_file.write_text(json.dumps(pair[1]))
        command += ["--pair-port", str(pair[0]), "--pair-paths", str(pair_file)]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if token:
        command += ["--token", token]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    before = None
    if server_pid is not None:
        time.sleep(warmup)
        before = cpu_seconds(server_pid)
    stdout, _ = process.communicate()
    summary: dict[str, Any] = json.loads(stdout)
    if server_pid is not None and before is not None:
        used = cpu_seconds(server_pid) - before
        summary["server_cpu_s"] = used
        summary["req_per_cpu_s"] = summary["requests"] / used if used else 0.0
    return summary


def median(values: Sequence[float]) -> float:
    """The median of a few values."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def backend_client(db: str, scope: str = "system/*.cruds") -> tuple[str, str]:
    """Register a backend client with the server's CLI; its id and secret."""
    added = subprocess.run([PYTHON, "-m", "server", "clients", "add", "--name", "bench", "--type",
                            "confidential-symmetric", "--scope", scope, "--json", "--db", db], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    client = json.loads(added.stdout)
    return client["client_id"], client["client_secret"]


def fetch_token(base: str, client: tuple[str, str], scope: str = "system/*.cruds") -> str:
    """An access token by client_credentials (backend tokens live five minutes: long runs fetch anew)."""
    origin = base.rsplit("/fhir", 1)[0]
    response = httpx.post(f"{origin}/auth/token", data={"grant_type": "client_credentials", "scope": scope},
                          auth=client, timeout=30)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def backend_token(base: str, db: str, scope: str = "system/*.cruds") -> str:
    """Register a backend client and get one access token."""
    return fetch_token(base, backend_client(db, scope), scope)


def record(name: str, figures: dict[str, object]) -> None:
    """Keep a benchmark's figures in bench/out/<name>.json for the report."""
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2))
