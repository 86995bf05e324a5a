"""The command line: `python -m server --help` and `serve --help`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def test_help_lists_serve() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout


def test_serve_help_names_settings() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0
    assert "--port" in result.stdout and "CARELOOP_PORT" in result.stdout


def test_unknown_command_fails_clearly() -> None:
    result = run("fly")
    assert result.returncode != 0
    assert "invalid choice" in result.stderr
