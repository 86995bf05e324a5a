"""Structured logs: one JSON object per line on stdout, and one access line per HTTP request.

An access line carries the request id (the X-Request-Id the audit edge assigns or echoes), the client id of the
token, the interaction, the resource type, the status and the latency; never the path's query, a body or a
header, so no search value (a patient's name), token or secret reaches the log. https://jsonlines.org/
"""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resources.models import resource_types
from server.audit import classify

FORMATS = ("text", "json")
_TYPES = frozenset(resource_types())
_OPERATION = re.compile(r"[a-z][a-z-]{0,40}")
ACCESS = logging.getLogger("careloop.access")
# the fields a record may carry (logging's `extra`) that become keys of its line
FIELDS = ("request_id", "client", "method", "interaction", "type", "operation", "status", "latency_ms")


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message and the FIELDS it carries."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Set up the process's logging: JSON lines on stdout, or the readable text format on stderr."""
    if fmt not in FORMATS:
        raise SystemExit(f"CARELOOP_LOG_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "text":
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # through the root's handler, as JSON
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class AccessLogMiddleware:
    """One `careloop.access` line per HTTP request, after its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, request_id = 500, None

        async def sending(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                request_id = next((v.decode("latin-1") for k, v in message.get("headers", ())
                                   if k.lower() == b"x-request-id"), None)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            ACCESS.info("request", extra=access_fields(scope, status, request_id, time.perf_counter() - started))


def access_fields(scope: Scope, status: int, request_id: str | None, seconds: float) -> dict[str, Any]:
    """The fields of one access line: nothing from the query, the body or the headers but the request id."""
    path: str = scope.get("path", "")
    method: str = scope["method"]
    access = (scope.get("state") or {}).get("access")
    fields: dict[str, Any] = {"request_id": request_id, "client": getattr(access, "client_id", None),
                              "method": method, "status": status, "latency_ms": round(seconds * 1000, 2)}
    if path.startswith("/fhir"):
        interaction, kind, _, operation = classify(method, path[len("/fhir"):])
        if path == "/fhir/metadata":
            interaction = "capabilities"
        # only names the server knows: a path segment is whatever the caller typed
        fields.update(interaction=interaction, type=kind if kind in _TYPES else None,
                      operation=operation if operation and _OPERATION.fullmatch(operation) else None)
    else:  # /auth/..., /healthz: the first segment only
        fields["interaction"] = "/" + path.lstrip("/").split("/", 1)[0][:40]
    return fields
