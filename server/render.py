"""Rendering stored resources as HTTP answers: ETag, Last-Modified, Location, Prefer, _summary/_elements.

https://hl7.org/fhir/R4B/http.html#versioning
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from functools import lru_cache

import orjson
from fastapi import Request
from starlette.responses import Response

from resources.outcome import information
from resources.shaping import check_summary, shape
from resources.store.protocol import StoredResource
from server.context import base_url, is_pretty, prefer_return
from server.responses import bytes_response, json_response


@lru_cache(maxsize=4096)
def http_date(ms: int) -> str:
    """An RFC 7231 date for Last-Modified (cached: many reads share a few update times)."""
    return format_datetime(datetime.fromtimestamp(ms / 1000, tz=UTC), usegmt=True)


def version_headers(res: StoredResource) -> dict[str, str]:
    """ETag and Last-Modified of a version."""
    return {"ETag": f'W/"{res.vid}"', "Last-Modified": http_date(res.updated_ms)}


def shape_bytes(body: bytes, summary: str | None, elements: str | None) -> bytes:
    """The body after _summary and _elements; the stored bytes when neither is asked."""
    check_summary(summary)
    if (summary in (None, "false")) and not elements:
        return body
    fields = [e.strip() for e in elements.split(",") if e.strip()] if elements else None
    return orjson.dumps(shape(orjson.loads(body), summary, fields))


def shaped_body(request: Request, body: bytes) -> bytes:
    """The body shaped by the request's _summary and _elements."""
    return shape_bytes(body, request.query_params.get("_summary"), request.query_params.get("_elements"))


def resource_response(request: Request, res: StoredResource, status: int = 200) -> Response:
    """A resource read answer."""
    assert res.body is not None
    if not request.scope["query_string"]:  # the common read: stored bytes as they are
        return bytes_response(res.body, status, version_headers(res))
    return bytes_response(shaped_body(request, res.body), status, version_headers(res), pretty=is_pretty(request))


def write_response(request: Request, res: StoredResource, status: int, message: str) -> Response:
    """A create/update/patch answer honouring Prefer: return=."""
    headers = version_headers(res)
    headers["Location"] = f"{base_url(request)}/{res.type}/{res.id}/_history/{res.vid}"
    mode = prefer_return(request)
    if mode == "minimal":
        return Response(status_code=status, headers=headers)
    if mode == "OperationOutcome":
        return json_response(information(message), status, headers, pretty=is_pretty(request))
    return bytes_response(res.body, status, headers, pretty=is_pretty(request))
