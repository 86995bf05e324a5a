"""Train the zstd dictionary that compresses stored resource bodies in the SQLite store.

The samples are the R4B examples and the Synthea patients vendored for the tests, serialised as the store
writes them (compact JSON, server id and meta last). A dictionary that has shipped must never change: bodies
written with it name its number, so a retrained dictionary is written under the next number.
https://facebook.github.io/zstd/#small-data
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import zstandard

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TARGET = ROOT / "resources" / "store" / "sqlite"


def _resources(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if document.get("resourceType") == "Bundle":
        for entry in document.get("entry", []):
            if isinstance(entry.get("resource"), dict):
                yield from _resources(entry["resource"])
    else:
        yield document


def samples() -> list[bytes]:
    """Every vendored resource in its stored form, in a fixed order."""
    found = []
    for path in sorted([*DATA.glob("synthea/*.json"), *DATA.glob("examples/*.json")]):
        for number, resource in enumerate(_resources(orjson.loads(path.read_bytes()))):
            stored = dict(resource)
            stored["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{path.name}/{number}"))
            stored["meta"] = {"versionId": "1", "lastUpdated": "2026-11-24T05:24:57.705Z"}
            found.append(orjson.dumps(stored))
    return found


def main() -> None:
    """Train and write body-dictionary-N.zstd."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("number", type=int, help="the dictionary's number (never reuse one that shipped)")
    parser.add_argument("--size", type=int, default=32 * 1024)
    args = parser.parse_args()
    found = samples()
    trained = zstandard.train_dictionary(args.size, found, level=3, threads=0)
    target = TARGET / f"body-dictionary-{args.number}.zstd"
    target.write_bytes(trained.as_bytes())
    print(f"{target}: {len(trained.as_bytes())} bytes from {len(found)} samples")  # noqa: T201


if __name__ == "__main__":
    main()
