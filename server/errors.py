"""Every error answer as an OperationOutcome: FhirError, framework errors and unexpected faults.

https://hl7.org/fhir/R4B/http.html#Status-Codes
"""

from __future__ import annotations

import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from resources.errors import FhirError, Issue
from resources.outcome import from_error, outcome
from resources.store.sqlite.failures import storage_error
from server.answer_headers import with_fhir_headers
from server.responses import json_response
from server.types import type_hint

log = logging.getLogger("careloop")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported",
               406: "not-supported", 400: "invalid"}


def error_response(error: FhirError) -> Response:
    """The HTTP answer of a FhirError."""
    return json_response(from_error(error), error.status, headers=error.headers)


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return with_fhir_headers(request.scope, error_response(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "processing")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        detail = f"No FHIR endpoint at {request.url.path}{_path_hint(request.url.path)}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return with_fhir_headers(request.scope, json_response(outcome(Issue(code, detail)), exc.status_code,
                                                          headers=getattr(exc, "headers", None)))


def _path_hint(path: str) -> str:
    segments = path.removeprefix("/fhir/").split("/") if path.startswith("/fhir/") else []
    return type_hint(segments[0]) if segments else ""


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [Issue("invalid", str(e.get("msg")), expression=(".".join(str(p) for p in e.get("loc", ())),))
              for e in exc.errors()]
    return with_fhir_headers(request.scope, json_response(
        outcome(*issues or [Issue("invalid", "Invalid request")]), 400))


async def _storage_failure(request: Request, exc: Exception) -> Response:
    # a SQLite file the server reads directly (the authorization server's) on a full or failing disk; the stores
    # map their own failures (resources/store/sqlite/failures.py)
    assert isinstance(exc, sqlite3.Error)
    stored = storage_error(exc)
    if stored is None:  # a constraint or a misuse: a bug
        return await _unexpected(request, exc)
    log.error("Storage failure on %s %s: %s", request.method, request.url.path, exc)
    if request.url.path.startswith("/auth"):  # an OAuth endpoint answers in OAuth's terms (RFC 6749 §4.1.2.1)
        return JSONResponse({"error": "temporarily_unavailable", "error_description": stored.diagnostics},
                            503, {"cache-control": "no-store", "pragma": "no-cache", **stored.headers})
    return with_fhir_headers(request.scope, error_response(stored))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return with_fhir_headers(request.scope, json_response(
        outcome(Issue("exception", "Internal server error; the fault was logged")), 500))


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # a handler of its own (not Exception's): Starlette re-raises after Exception's handler, and uvicorn then
    # closes the connection before the answer is read
    app.add_exception_handler(sqlite3.Error, _storage_failure)
    app.add_exception_handler(Exception, _unexpected)
