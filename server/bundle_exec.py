"""Executing batch and transaction bundles and rendering their response bundles.

https://hl7.org/fhir/R4B/http.html#transaction
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from resources.bundle_entries import EntryResult, json_patch_of, parse_bundle, parse_entry
from resources.bundles import response_bundle
from resources.errors import FhirError, Invalid, NotSupported
from resources.outcome import from_error
from resources.search.dates import format_instant
from resources.store.protocol import ReadSource
from resources.transaction import TransactionProcessor
from server.context import Services
from server.search import search_bundle
from server.types import known_type


def _status_text(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


async def internal_get(svc: Services, base: str, url: str, source: ReadSource | None = None) -> EntryResult:
    """A GET entry: read, vread or search (inside a transaction, through its session)."""
    split = urlsplit(url)
    parts = [p for p in split.path.split("/") if p]
    repo = svc.repository
    if len(parts) == 1:
        body = await search_bundle(svc, base, known_type(parts[0]), parse_qsl(split.query, keep_blank_values=True),
                                   source=source)
        return EntryResult("200 OK", body=body)
    if len(parts) == 2:
        return EntryResult("200 OK", await repo.read(known_type(parts[0]), parts[1], source))
    if len(parts) == 4 and parts[2] == "_history":
        return EntryResult("200 OK", await repo.vread(known_type(parts[0]), parts[1], parts[3], source))
    raise NotSupported(f"GET {url} is not supported inside a bundle")


def _entry_bytes(result: EntryResult, base: str, with_body: bool) -> bytes:
    response: dict[str, Any] = {"status": result.status}
    res = result.resource
    full = b""
    if res is not None:
        response["etag"] = f'W/"{res.vid}"'
        response["lastModified"] = format_instant(res.updated_ms)
        if result.status.startswith("201") or result.status.startswith("200"):
            response["location"] = f"{res.type}/{res.id}/_history/{res.vid}"
        full = b'"fullUrl":' + orjson.dumps(f"{base}/{res.type}/{res.id}") + b","
    if result.outcome is not None:
        response["outcome"] = result.outcome
    body = b""
    if result.body is not None:
        body = b'"resource":' + result.body + b","
    elif with_body and res is not None and res.body is not None:
        body = b'"resource":' + res.body + b","
    return b"{" + full + body + b'"response":' + orjson.dumps(response) + b"}"


async def _batch_entry(svc: Services, base: str, index: int, raw: Any) -> EntryResult:
    entry = parse_entry(index, raw, base)
    repo = svc.repository
    if entry.method in ("GET", "HEAD"):
        return await internal_get(svc, base, entry.url)
    if entry.method == "POST":
        outcome = await repo.create(entry.type, entry.resource, if_none_exist=entry.if_none_exist)
        return EntryResult("201 Created" if outcome.created else "200 OK", outcome.resource)
    if entry.method == "PUT":
        if entry.id:
            outcome = await repo.update(entry.type, entry.id, entry.resource, if_match=entry.if_match)
        else:
            outcome = await repo.conditional_update(entry.type, entry.query, entry.resource, if_match=entry.if_match)
        return EntryResult("201 Created" if outcome.created else "200 OK", outcome.resource)
    if entry.method == "PATCH":
        patch = json_patch_of(entry)
        if entry.id:
            outcome = await repo.patch(entry.type, entry.id, patch, if_match=entry.if_match)
        else:
            outcome = await repo.conditional_patch(entry.type, entry.query, patch, if_match=entry.if_match)
        return EntryResult("200 OK", outcome.resource)
    if entry.id:
        await repo.delete(entry.type, entry.id, if_match=entry.if_match)
    else:
        await repo.conditional_delete(entry.type, entry.query)
    return EntryResult("204 No Content")


async def run_bundle(svc: Services, base: str, bundle: Any, with_body: bool) -> bytes:
    """Process a batch or transaction bundle and return the response bundle."""
    kind, entries = parse_bundle(bundle, svc.settings.max_bundle_entries, base)
    if kind == "transaction":
        processor = TransactionProcessor(svc.repository, base)

        async def read(url: str, source: ReadSource) -> EntryResult:
            return await internal_get(svc, base, url, source)

        results = await processor.run(entries, read)
        return response_bundle(kind, [_entry_bytes(r, base, with_body) for r in results])
    out = []
    for index, raw in enumerate(bundle.get("entry", [])):
        try:
            result = await _batch_entry(svc, base, index, raw)
        except FhirError as exc:
            result = EntryResult(_status_text(exc.status), outcome=from_error(exc))
        out.append(_entry_bytes(result, base, with_body))
    return response_bundle(kind, out)


def require_bundle(body: Any) -> None:
    """Refuse a body that is not a Bundle before any work."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise Invalid("POST to the base takes a batch or transaction Bundle", code="invalid")
