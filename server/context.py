"""Per-request helpers: the visible base URL, Prefer, body reading with limits, query parameters.

https://hl7.org/fhir/R4B/http.html#general
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Request

from consent.access import FULL_ACCESS, Access, AccessPolicy
from consent.audit.trail import AuditTrail
from consent.engine import ConsentPolicy
from operations.bulk_jobs import BulkJobs
from operations.cohort import CohortRules, PopulationCache
from resources.errors import Invalid, TooLarge, Unauthorized
from resources.patch import MergePatch
from resources.reindex import Reindexer
from resources.repository import Repository
from resources.search.custom import CustomParameters
from resources.store.sqlite.reserve import DiskReserve
from server.auth.service import AuthService
from server.forwarded import FHIR_PREFIX, VISIBLE_BASE
from server.responses import check_content_type
from server.settings import Settings
from subscriptions.engine import SubscriptionEngine
from terminology.device_rules import DeviceRules
from terminology.service import TerminologyService


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
    consent_policy: ConsentPolicy = field(default_factory=ConsentPolicy)  # CARELOOP_CONSENT_POLICY (issue 28)
    auth: AuthService | None = None
    capability: bytes = b""
    audit: AuditTrail | None = None  # None with CARELOOP_AUDIT=off
    capability_version: int = -1
    bulk: BulkJobs | None = None  # $export and $import jobs (issue 32)
    disk: DiskReserve | None = None  # room kept for the audit trail in the SQLite data folder (issue 34)


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


def configured_base(settings: Settings) -> str:
    """The FHIR base tokens and discovery name: CARELOOP_BASE_URL, else http://<host>:<port>/fhir."""
    if settings.base_url:
        return settings.base_url.rstrip("/")
    host = settings.host
    if host in ("", "0.0.0.0", "::"):  # listening everywhere names no address; loopback is the one sure to work
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{host}:{settings.port}{FHIR_PREFIX}"


def configured_issuer(fhir_base: str) -> str:
    """The authorization server's issuer for a FHIR base: its origin (the base without /fhir) plus /auth."""
    return (fhir_base[: -len(FHIR_PREFIX)] if fhir_base.endswith(FHIR_PREFIX) else fhir_base) + "/auth"


def base_url(request: Request) -> str:
    """The FHIR base of links: configured, else as a trusted proxy names it, else the request's scheme and Host."""
    svc = services(request)
    if svc.settings.base_url:
        return svc.settings.base_url.rstrip("/")
    return request_base(request)


def request_base(request: Request) -> str:
    """The FHIR base as this request reached the server: a trusted proxy's view, else its scheme and Host."""
    scope = request.scope
    visible: str | None = scope.get(VISIBLE_BASE)
    if visible is not None:  # server/forwarded.py, for a request from a trusted proxy
        return visible
    # the raw headers read directly: building request.headers cost as much as the read by id's query
    for name, value in scope["headers"]:
        if name == b"host":
            return f"{scope.get('scheme', 'http')}://{value.decode('latin-1')}{FHIR_PREFIX}"
    return f"{scope.get('scheme', 'http')}://{request.url.netloc}{FHIR_PREFIX}"


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
        return _patch_document(media, parsed)
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


def _patch_document(media: str, parsed: Any) -> Any:
    # the media type says which patch form a JSON object is: Parameters is FHIRPath Patch only as FHIR JSON
    if media == "application/json-patch+json" and not isinstance(parsed, list):
        raise Invalid("An application/json-patch+json body must be a JSON array of operations", code="structure")
    if media == "application/merge-patch+json" or (
            media == "application/json" and isinstance(parsed, dict) and parsed.get("resourceType") != "Parameters"):
        if not isinstance(parsed, dict):
            raise Invalid("An application/merge-patch+json body must be a JSON object (RFC 7396)", code="structure")
        return MergePatch(parsed)
    if media != "application/json-patch+json" and not (
            isinstance(parsed, dict) and parsed.get("resourceType") == "Parameters"):
        raise Invalid("A FHIR JSON PATCH body must be a FHIRPath Patch Parameters resource; send JSON Patch as "
                      "application/json-patch+json and JSON Merge Patch as application/merge-patch+json",
                      code="structure")
    return parsed


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
