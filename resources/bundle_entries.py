"""Bundle entries of a batch or transaction as requests: method, url, resource, conditions.

https://hl7.org/fhir/R4B/bundle.html#transaction
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from resources.errors import Invalid, NotFound, TooLarge
from resources.models import resource_types
from resources.store.protocol import StoredResource

_METHODS = ("DELETE", "POST", "PUT", "PATCH", "GET", "HEAD")


@dataclass
class EntryResult:
    """The response part of one bundle entry."""

    status: str
    resource: StoredResource | None = None
    outcome: dict[str, Any] | None = None
    body: bytes | None = None  # a GET entry's answer (resource or searchset Bundle)


@dataclass
class Entry:
    """One parsed request entry."""

    index: int
    method: str
    url: str
    type: str
    id: str | None
    query: list[tuple[str, str]]
    resource: dict[str, Any] | None
    full_url: str | None
    if_match: int | None
    if_none_exist: list[tuple[str, str]]
    target_id: str | None = None
    result: EntryResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _etag_version(value: Any) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise Invalid(f"Invalid ETag '{value}' in ifMatch", code="value")
    return int(text)


def parse_entry(index: int, raw: Any, base_url: str) -> Entry:
    """One Bundle.entry as a request; raises Invalid naming the entry."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise Invalid(f"{where} has no request", code="required", expression=(f"{where}.request",))
    request = raw["request"]
    method = str(request.get("method", "")).upper()
    url = request.get("url")
    if method not in _METHODS or not isinstance(url, str) or not url:
        raise Invalid(f"{where}.request needs a method (GET, HEAD, POST, PUT, PATCH, DELETE) and a url",
                      code="required", expression=(f"{where}.request",))
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1:]
    split = urlsplit(url)
    parts = [p for p in split.path.split("/") if p]
    type_ = parts[0] if parts else ""
    if type_ not in resource_types():
        raise NotFound(f"{where}.request.url names unknown resource type '{type_}'", code="not-supported",
                       expression=(f"{where}.request.url",))
    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise Invalid(f"{where} ({method}) has no resource", code="required", expression=(f"{where}.resource",))
    return Entry(index, method, url, type_, parts[1] if len(parts) > 1 else None,
                 parse_qsl(split.query, keep_blank_values=True), resource, raw.get("fullUrl"),
                 _etag_version(request.get("ifMatch")),
                 parse_qsl(request.get("ifNoneExist") or "", keep_blank_values=True))


def parse_bundle(bundle: Any, max_entries: int, base_url: str) -> tuple[str, list[Entry]]:
    """The bundle type and its entries."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise Invalid("POST to the base needs a Bundle of type batch or transaction", code="invalid")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise Invalid(f"Bundle.type must be batch or transaction, not '{kind}'", code="value",
                      expression=("Bundle.type",))
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise Invalid("Bundle.entry must be an array", code="structure", expression=("Bundle.entry",))
    if len(raw_entries) > max_entries:
        raise TooLarge(f"The bundle has {len(raw_entries)} entries; the limit is {max_entries}",
                       expression=("Bundle.entry",))
    return kind, [parse_entry(i, e, base_url) for i, e in enumerate(raw_entries)] if kind == "transaction" else []


def json_patch_of(entry: Entry) -> Any:
    """The patch a PATCH entry carries: a FHIRPath Patch Parameters, or a JSON Patch inside a Binary."""
    resource = entry.resource
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return resource  # a FHIRPath Patch
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary" or "data" not in resource:
        raise Invalid(f"Bundle.entry[{entry.index}] (PATCH) needs a Parameters resource (FHIRPath Patch) or a "
                      "Binary holding a JSON Patch", code="required",
                      expression=(f"Bundle.entry[{entry.index}].resource",))
    try:
        return orjson.loads(base64.b64decode(resource["data"]))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise Invalid(f"Bundle.entry[{entry.index}] holds an unreadable JSON Patch: {exc}", code="structure") from exc
