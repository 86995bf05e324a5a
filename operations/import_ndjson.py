"""Bulk $import: NDJSON files loaded line by line through the write pipeline, in transactions, with an error file.

Each batch of lines is one transaction through the same processor as a transaction Bundle (full validation,
write hooks, the caller's scopes and Consents); a batch that fails is halved until the lines at fault stand alone,
and each of those is written as its own create or update, whose error lands in the error file with its line
number. Every imported resource carries the `import` tag, so follow-up pathways do not start from it.
https://github.com/smart-on-fhir/bulk-import/blob/master/import.md
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from operations.bulk_jobs import BulkJob
from resources.bundle_entries import Entry, EntryResult
from resources.errors import FhirError, Invalid
from resources.models import resource_types
from resources.repository import Repository
from resources.store.protocol import ReadSource
from resources.transaction import TransactionProcessor

IMPORT_TAG = {"system": "http://careloop.health/fhir/CodeSystem/careloop", "code": "import"}
LINE = "http://careloop.health/fhir/StructureDefinition/import-line"
SOURCE = "http://careloop.health/fhir/StructureDefinition/import-source"
BATCH = 500
ERRORS_FILE = "errors.ndjson"


@dataclass
class Tally:
    """What an import did so far: lines read, resources loaded per type, lines refused."""

    lines: int = 0
    loaded: dict[str, int] = field(default_factory=dict)
    failed: int = 0


@dataclass(frozen=True)
class Line:
    """One parsed line of an input file."""

    number: int
    resource_type: str
    resource: dict[str, Any]


def tagged(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with the import tag in meta.tag (once), so pathways skip it (docs/bulk-data.md)."""
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if isinstance(t, dict)]
    if not any(t.get("system") == IMPORT_TAG["system"] and t.get("code") == IMPORT_TAG["code"] for t in tags):
        tags.append(dict(IMPORT_TAG))
    meta["tag"] = tags
    return {**resource, "meta": meta}


def outcome(source: str, number: int, error: FhirError) -> dict[str, Any]:
    """An OperationOutcome for a refused line: its issues, with the file and line number as extensions."""
    return {"resourceType": "OperationOutcome",
            "extension": [{"url": SOURCE, "valueString": source}, {"url": LINE, "valueInteger": number}],
            "issue": [{"severity": i.severity, "code": i.code, "diagnostics": f"line {number}: {i.diagnostics}",
                       **({"expression": list(i.expression)} if i.expression else {})} for i in error.issues]}


def parse_line(number: int, raw: bytes, expected_type: str | None) -> Line:
    """A line as a resource to write; Invalid naming what is wrong with it."""
    try:
        resource = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"not valid JSON ({exc})", code="structure") from exc
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(kind, str) or kind not in resource_types():
        raise Invalid("not a FHIR resource (no known resourceType)", code="structure")
    if expected_type is not None and kind != expected_type:
        raise Invalid(f"a {kind} in a file of {expected_type}", code="invalid")
    return Line(number, kind, tagged(resource))


def _entry(index: int, line: Line) -> Entry:
    id_ = line.resource.get("id")
    if isinstance(id_, str) and id_:
        return Entry(index, "PUT", f"{line.resource_type}/{id_}", line.resource_type, id_, [], line.resource, None,
                     None, [])
    return Entry(index, "POST", line.resource_type, line.resource_type, None, [], line.resource, None, None, [])


async def _no_reads(url: str, source: ReadSource) -> EntryResult:
    raise AssertionError("an import transaction has no GET entries")


class Importer:
    """Loads NDJSON files into the repository for one job."""

    def __init__(self, job: BulkJob, repository: Repository, base_url: str, batch: int = BATCH) -> None:
        self.job = job
        self.repository = repository
        self.base_url = base_url
        self.batch = batch
        self.tally = Tally()
        self._errors: IO[bytes] | None = None
        self._pending: list[tuple[int, bytes]] = []

    async def run(self, files: list[tuple[Path, str, str | None]]) -> None:
        """Load each (path, name shown in errors, expected type or None) in turn."""
        try:
            for path, name, expected in files:
                await self._file(path, name, expected)
        finally:
            if self._errors is not None:
                await asyncio.to_thread(self._errors.close)
        self.job.output = [{"type": t, "count": n} for t, n in sorted(self.tally.loaded.items())]
        if self.tally.failed:
            self.job.error = [{"type": "OperationOutcome", "file": ERRORS_FILE, "count": self.tally.failed}]

    async def _file(self, path: Path, name: str, expected: str | None) -> None:
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            number = 0
            while True:
                raw = await asyncio.to_thread(_read_lines, handle, self.batch)
                if not raw:
                    return
                lines = []
                for text in raw:
                    number += 1
                    if not text.strip():
                        continue
                    try:
                        lines.append(parse_line(number, text, expected))
                    except FhirError as exc:
                        self._refused(name, number, exc)
                self.tally.lines = number
                await self._load(name, lines)
                await self._flush()
                self.job.progress = (f"{name}: {number} lines read, {sum(self.tally.loaded.values())} resources "
                                     f"loaded, {self.tally.failed} refused")
        finally:
            await asyncio.to_thread(handle.close)

    async def _load(self, name: str, lines: list[Line]) -> None:
        if not lines:
            return
        if len(lines) == 1:
            await self._single(name, lines[0])
            return
        try:
            await TransactionProcessor(self.repository, self.base_url).run(
                [_entry(i, line) for i, line in enumerate(lines)], _no_reads)
        except FhirError:
            half = len(lines) // 2  # some line is at fault: find it by halves, loading the rest in transactions
            await self._load(name, lines[:half])
            await self._load(name, lines[half:])
            return
        for line in lines:
            self.tally.loaded[line.resource_type] = self.tally.loaded.get(line.resource_type, 0) + 1

    async def _single(self, name: str, line: Line) -> None:
        # alone, through the plain create or update: its error names the line's own elements
        try:
            id_ = line.resource.get("id")
            if isinstance(id_, str) and id_:
                await self.repository.update(line.resource_type, id_, line.resource)
            else:
                await self.repository.create(line.resource_type, line.resource)
        except FhirError as exc:
            self._refused(name, line.number, exc)
            return
        self.tally.loaded[line.resource_type] = self.tally.loaded.get(line.resource_type, 0) + 1

    def _refused(self, name: str, number: int, error: FhirError) -> None:
        self.tally.failed += 1
        self._pending.append((number, orjson.dumps(outcome(name, number, error)) + b"\n"))

    async def _flush(self) -> None:
        # a batch's refusals in line order, whether the line failed to parse or to load
        if not self._pending:
            return
        if self._errors is None:
            self._errors = await asyncio.to_thread((self.job.folder / ERRORS_FILE).open, "wb")
        data = b"".join(text for _, text in sorted(self._pending))
        self._pending = []
        await asyncio.to_thread(self._errors.write, data)


def _read_lines(handle: IO[bytes], count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        line = handle.readline()
        if not line:
            break
        out.append(line)
    return out
