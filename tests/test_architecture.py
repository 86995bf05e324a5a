"""The dependency rule of DESIGN.md, checked with import-linter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_resources_imports_no_sibling_package() -> None:
    siblings = ("server", "consent", "subscriptions", "operations", "terminology")
    for path in (ROOT / "resources").rglob("*.py"):
        text = path.read_text()
        for name in siblings:
            assert f"from {name}" not in text and f"import {name}" not in text, path
