"""Per-request helpers: the visible base URL, Prefer, body reading with limits, query parameters.

https://hl7.org/fhir/R4B/http.html#general
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Request

from consent.access import FULL_ACCESS, Access, AccessPolicy
from operations.cohort import CohortRules, PopulationCache
from resources.errors import Invalid, TooLarge, Unauthorized
from resources.reindex import Reindexer
from resources.repository import Repository
from resources.search.custom import CustomParameters
from server.auth.service import AuthService
from server.responses import check_content_type
from server.settings import Settings
from subscriptions.engine import SubscriptionEngine
from terminology.device_rules import DeviceRules
from terminology.service import TerminologyService

FHIR_PREFIX = "/fhir"


@dataclass
class Services:
    """What the routes use, built once by create_app's lifespan."""

    settings: Settings
    repository: Repository
    custom: CustomParameters
    reindexer: Reindexer
    terminology: TerminologyService
    device_rules: DeviceRules
    policy: AccessPolicy
    subscriptions: SubscriptionEngine | None = None
    cohort: CohortRules = field(default_factory=CohortRules)
    population: PopulationCache = field(default_factory=PopulationCache)
    auth: AuthService | None = None
    capability: bytes = b""
    capability_version: int = -1


def services(request: Request) -> Services:
    """The app's services."""
    found: Services = request.app.state.services
    return found


def access_of(request: Request) -> Access:
    """What the request's token grants; everything when authorization is off."""
    found: Access | None = request.scope.get("state", {}).get("access")
    if found is not None:
        return found
    if services(request).auth is None:
        return FULL_ACCESS
    raise Unauthorized("This request needs an access token", code="login")


_BASE_HEADERS = frozenset((b"host", b"forwarded", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix"))


def _first(value: str | None) -> str | None:
    return value.split(",")[0].strip() if value else None


@lru_cache(maxsize=256)  # bounded: clients choose these headers; a deployment sees a handful of combinations
def _visible_base(scheme: str, host: str, forwarded: str | None, x_proto: str | None, x_host: str | None,
                  x_prefix: str | None) -> str:
    proto = fwd_host = None
    if forwarded:
        for part in forwarded.split(",")[0].split(";"):
            key, _, value = part.strip().partition("=")
            value = value.strip('"')
            if key.lower() == "proto":
                proto = value
            elif key.lower() == "host":
                fwd_host = value
    proto, fwd_host = _first(x_proto or proto), _first(x_host or fwd_host)
    prefix = (x_prefix or "").rstrip("/")
    return f"{proto or scheme}://{fwd_host or host}{prefix}{FHIR_PREFIX}"


def base_url(request: Request) -> str:
    """The externally visible FHIR base: configured, else from forwarded headers, else from the request."""
    svc = services(request)
    if svc.settings.base_url:
        return svc.settings.base_url.rstrip("/")
    # One pass over the raw headers, the first of each name kept as Starlette's Headers.get does: building
    # request.headers and looking up five names cost 10 us a request, as much as the read by id's query.
    scope = request.scope
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _BASE_HEADERS and name not in found:
            found[name] = value.decode("latin-1")
    scheme, host = scope.get("scheme", "http"), found.get(b"host") or request.url.netloc
    if not svc.settings.trust_forwarded:
        return f"{scheme}://{host}{FHIR_PREFIX}"
    return _visible_base(scheme, host, found.get(b"forwarded"), found.get(b"x-forwarded-proto"),
                         found.get(b"x-forwarded-host"), found.get(b"x-forwarded-prefix"))


def prefer_return(request: Request) -> str:
    """The Prefer return= preference: minimal, representation (default) or OperationOutcome."""
    for part in request.headers.get("prefer", "").split(","):
        for item in part.split(";"):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == "return":
                value = value.strip().strip('"')
                if value in ("minimal", "representation", "OperationOutcome"):
                    return value
    return "representation"


def prefer_strict(request: Request) -> bool:
    """True when the client sent Prefer: handling=strict."""
    return "handling=strict" in request.headers.get("prefer", "").replace(" ", "")


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """Query parameters in order, repeated keys kept."""
    # parsed as Starlette parses them, without building its multi-dict (which nothing here needs)
    return parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)


def is_pretty(request: Request) -> bool:
    """_pretty=true."""
    if b"_pretty" not in request.scope["query_string"]:  # nearly every request: skip parsing the query
        return False
    return request.query_params.get("_pretty", "false").lower() == "true"


async def read_body(request: Request, *, patch: bool = False) -> Any:
    """The JSON body, refusing a wrong content type (415), an oversized body (413) or malformed JSON (400)."""
    media = check_content_type(request.headers.get("content-type"), patch=patch)
    raw = await read_raw(request)
    if not raw.strip():
        raise Invalid("The request has no body", code="required")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"The body is not valid JSON: {exc}", code="structure") from exc
    if patch:
        _check_patch_shape(media, parsed)
    return parsed


async def read_raw(request: Request) -> bytes:
    """The request body, refusing (413) one over the configured size limit before reading it all."""
    limit = services(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"The request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"The request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_patch_shape(media: str, parsed: Any) -> None:
    if media == "application/json-patch+json" and not isinstance(parsed, list):
        raise Invalid("An application/json-patch+json body must be a JSON array of operations", code="structure")
    if media != "application/json-patch+json" and not (
            isinstance(parsed, dict) and parsed.get("resourceType") == "Parameters"):
        raise Invalid("A FHIR JSON PATCH body must be a FHIRPath Patch Parameters resource; send JSON Patch as "
                      "application/json-patch+json", code="structure")


def if_match_version(request: Request) -> int | None:
    """The version number of an If-Match header (W/"3" or "3")."""
    value = request.headers.get("if-match")
    if value is None:
        return None
    text = value.strip()
    text = text[2:] if text.startswith("W/") else text
    text = text.strip('"')
    if not text.isdigit():
        raise Invalid(f"If-Match must be an ETag like W/\"3\", not '{value}'", code="value")
    return int(text)
