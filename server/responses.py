"""FHIR responses: content negotiation (_format, Accept), _pretty, and the fhir+json media type.

https://hl7.org/fhir/R4B/http.html#mime-type
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from resources.errors import NotAcceptable, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "json", "application/*", "*/*",
                        "application/json+fhir", "text/json"})
XML_TYPES = frozenset({"application/fhir+xml", "application/xml", "xml", "text/xml", "application/xml+fhir"})
_MEDIA = f"{FHIR_JSON}; charset=utf-8"
_MEDIA_BYTES = _MEDIA.encode()


def _media_types(header: str) -> list[str]:
    return [part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()]


def negotiate(accept: str | None, format_param: str | None) -> None:
    """Refuse (406) a request that only accepts XML or another format we do not produce."""
    if format_param:
        # an unencoded '+' in the query string arrives as a space: `application/fhir json` meant fhir+json
        wanted = format_param.strip().lower().replace(" ", "+")
        if wanted in JSON_TYPES or wanted.startswith("application/fhir+json"):
            return
        if wanted in XML_TYPES or "xml" in wanted:
            raise NotAcceptable("This server speaks FHIR JSON only; _format=xml is not supported")
        raise NotAcceptable(f"Unsupported _format '{format_param}'; use json")
    if not accept:
        return
    types = _media_types(accept)
    if any(t in JSON_TYPES or t.endswith("/*") for t in types):
        return
    if any(t in ("application/fhir+ndjson", "application/ndjson") for t in types):
        return  # the bulk data files ($export) are NDJSON; other answers stay JSON
    if any(t in XML_TYPES for t in types):
        raise NotAcceptable("This server speaks FHIR JSON only; ask for application/fhir+json")
    if any(t in ("text/html", "text/plain", "text/*") for t in types):
        return  # browsers and curl get JSON
    raise NotAcceptable(f"Cannot produce any of '{accept}'; ask for application/fhir+json")


def prefers_html(accept: str | None) -> bool:
    """True when Accept ranks text/html above every JSON type (a browser, or a caller asking for a page)."""
    best_html, best_json = 0.0, 0.0
    for position, entry in enumerate(part for part in (accept or "").split(",") if part.strip()):
        media, *options = (piece.strip() for piece in entry.split(";"))
        weight = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        rank = weight - position * 1e-6  # equal weights: the earlier type wins
        if media.lower() == "text/html":
            best_html = max(best_html, rank)
        elif media.lower() in JSON_TYPES and media != "*/*":
            best_json = max(best_json, rank)
    return best_html > 0 and best_html > best_json


def html_response(page: str) -> Response:
    """A server-rendered page; its CSP allows its own inline styles and nothing else (no script, no fetch)."""
    return Response(page.encode(), media_type="text/html; charset=utf-8", headers={
        "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                   "form-action 'none'; frame-ancestors 'none'"})


def check_content_type(content_type: str | None, *, patch: bool = False) -> str:
    """The request body's media type; 415 for anything but FHIR JSON (and JSON Patch on PATCH)."""
    if not content_type:
        return FHIR_JSON  # lenient: a body without a type is read as FHIR JSON
    media = content_type.split(";")[0].strip().lower()
    if patch and media in ("application/json-patch+json", "application/merge-patch+json"):
        return media
    if media in ("application/fhir+json", "application/json", "application/json+fhir"):
        return media
    if patch:
        raise UnsupportedMediaType(f"PATCH takes application/json-patch+json (JSON Patch), "
                                   f"application/merge-patch+json (JSON Merge Patch) or "
                                   f"application/fhir+json (FHIRPath Patch), not '{media}'")
    raise UnsupportedMediaType(f"Unsupported Content-Type '{media}'; send application/fhir+json")


def pretty_bytes(body: bytes) -> bytes:
    """Indented JSON for _pretty=true."""
    return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)


class FhirResponse(Response):
    """FHIR JSON bytes with headers encoded directly (the hot read path skips Starlette's header merging)."""

    media_type = _MEDIA

    def __init__(self, body: bytes, status_code: int, headers: dict[str, str] | None) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        raw = [(b"content-length", str(len(body)).encode()), (b"content-type", _MEDIA_BYTES)]
        if headers:
            raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        self.raw_headers = raw


def bytes_response(body: bytes | None, status: int = 200, headers: dict[str, str] | None = None,
                   pretty: bool = False) -> Response:
    """A FHIR JSON response from bytes."""
    if body is not None and pretty:
        body = pretty_bytes(body)
    if body is None:
        return Response(status_code=status, headers=headers)
    return FhirResponse(body, status, headers)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None,
                  pretty: bool = False) -> Response:
    """A FHIR JSON response from a value."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return Response(orjson.dumps(value, option=option), status_code=status, headers=headers, media_type=_MEDIA)
