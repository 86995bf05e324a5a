"""The audit edge: every FHIR request is recorded in the audit trail before its answer leaves.

Pure ASGI middleware. It assigns (or echoes) X-Request-Id, runs the request with a fresh observation and list of
consent decisions, holds the answer, builds the request's AuditEvents from what it observed (interaction, type,
id, status, the resources returned or written and their patients, the caller, the address, the decisions), awaits
their durable record, and only then sends the answer; when the trail cannot be written it answers 503 with an
OperationOutcome and no data. https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent.access import FULL_ACCESS, Access
from consent.audit import clock
from consent.audit.observer import Observation
from consent.audit.recorder import AuditUnavailable
from consent.audit.shapes import Exchange
from consent.audit.trail import AuditTrail
from consent.decisions import DECISIONS
from resources.audit_sink import SINK
from resources.errors import Unavailable
from resources.ids import now_ms
from resources.outcome import from_error
from server.answer_headers import FHIR, PUBLIC_FHIR_PATHS, route_path

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,200}")
_TYPE = re.compile(r"[A-Z][A-Za-z]*")


def classify(method: str, path: str) -> tuple[str, str | None, str | None, str | None]:
    """(restful interaction, type, id, operation) of a FHIR request path (after /fhir)."""
    parts = [p for p in path.split("/") if p]
    operation = parts[-1][1:] if parts and parts[-1].startswith("$") else None
    if operation is not None:
        parts = parts[:-1]
        return "operation", parts[0] if parts else None, parts[1] if len(parts) > 1 else None, operation
    if not parts:
        return ("search-system" if method == "GET" else "batch"), None, None, None
    if parts == ["_history"]:
        return "history-system", None, None, None
    kind = parts[0] if _TYPE.fullmatch(parts[0]) else None
    if len(parts) == 1:
        return {"GET": "search-type", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(method, "search-type"), kind, None, None
    if parts[1] == "_search":
        return "search-type", kind, None, None
    if parts[1] == "_history":
        return "history-type", kind, None, None
    if len(parts) == 2:
        return {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "read"), kind, \
            parts[1], None
    if len(parts) == 3:
        return "history-instance", kind, parts[1], None
    return "vread", kind, parts[1], None


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _REQUEST_ID.fullmatch(text):
                return text
    return str(uuid.uuid4())


def _diagnostics(body: bytes) -> str | None:
    try:
        found = orjson.loads(body)
        return "; ".join(str(i.get("diagnostics", i.get("code", ""))) for i in found.get("issue", ())) or None
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None


class AuditMiddleware:
    """Records every FHIR request (discovery excepted) before answering it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        services = getattr(scope["app"].state, "services", None) if scope["type"] == "http" else None
        trail: AuditTrail | None = services.audit if services is not None else None
        if trail is None or not path.startswith("/fhir") or path in PUBLIC_FHIR_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        header = (b"x-request-id", request_id.encode())
        if not trail.recorder.ready:  # the trail never opened: nothing is done that could not be recorded
            await _unavailable(send, trail.problem or "not open", header)
            return
        observation = Observation()
        form: list[bytes] = []
        searching = scope["method"] == "POST" and path.endswith("/_search")

        async def reading() -> Message:
            message = await receive()
            if searching and message["type"] == "http.request":
                form.append(message.get("body", b""))
            return message

        held: list[Message] = []

        async def holding(message: Message) -> None:
            held.append(message)

        sink, decisions = SINK.set(observation), DECISIONS.set([])
        failed: BaseException | None = None
        try:
            await self.app(scope, reading if searching else receive, holding)
        except BaseException as exc:  # noqa: BLE001 - recorded as a serious failure, then raised on
            failed = exc
        finally:
            found = DECISIONS.get() or []
            SINK.reset(sink)
            DECISIONS.reset(decisions)
        start = next((m for m in held if m["type"] == "http.response.start"), None)
        status = 500 if failed is not None or start is None else int(start["status"])
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        state: dict[str, Any] = scope.get("state") or {}
        access: Access = state.get("access") or FULL_ACCESS
        if access is FULL_ACCESS and services.auth is not None:
            access = Access(client_id=None)  # refused before the token was known (401): an unknown caller
        interaction, kind, id_, operation = classify(scope["method"], path[len("/fhir"):])
        if interaction == "batch" and b'"transaction-response"' in body[:400]:
            interaction = "transaction"
        query = scope.get("query_string", b"")
        raw = f"{scope['method']} {path}".encode() + (b"?" + query if query else b"") + (
            b"\n" + b"".join(form) if form else b"")
        client = scope.get("client")
        recorded = now_ms()
        exchange = Exchange(request_id, interaction, status, clock.instant(recorded), kind, id_, operation, raw,
                            client[0] if client else None, trail.server,
                            _diagnostics(body) if status >= 400 and body[:1] == b"{" else None)
        try:
            # the facts as they are: the writer task encodes them, the events are made of them when read
            await trail.recorder.record_request((exchange, access, observation.touched(trail.indexer), found),
                                                recorded)
        except AuditUnavailable as exc:
            await _unavailable(send, str(exc), header)
            return
        if failed is not None:
            raise failed
        for message in held:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)


async def _unavailable(send: Send, problem: str, header: tuple[bytes, bytes]) -> None:
    body = orjson.dumps(from_error(Unavailable(f"The audit trail cannot be written ({problem}): no request is "
                                               f"answered until it can")))
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"30"), header, *FHIR]})
    await send({"type": "http.response.body", "body": body})
