"""The authorization server's own audit events: tokens issued, refused and revoked, failed sign-ins, launches.

Recorded through the same trail as the FHIR requests, before the answer leaves; when the trail cannot be written
the endpoint answers 503 temporarily_unavailable (server/auth/routes.py). https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from fastapi import Request

from consent.audit.recorder import AuditUnavailable
from consent.audit.shapes import server_event
from resources.ids import now_ms
from resources.search.dates import format_instant
from server.context import services

DISPLAYS = {"token-issued": "access token issued", "token-refused": "token request refused",
            "token-revoked": "token revoked", "signin-failed": "sign-in failed", "launch-created": "launch created"}


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT this server has just signed (read back for the record, not trusted for access)."""
    try:
        payload = token.split(".")[1]
        found = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return found if isinstance(found, dict) else {}
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return {}


async def record(request: Request, subtype: str, status: int, *, client_id: str | None = None,
                 user: str | None = None, detail: str | None = None) -> bool:
    """Record one authorization server event; False when the trail cannot be written."""
    trail = services(request).audit
    if trail is None:
        return True
    request_id = request.headers.get("x-request-id")
    event = server_event(subtype, DISPLAYS[subtype], status, format_instant(now_ms()), client_id=client_id, user=user,
                         address=request.client.host if request.client else None, detail=detail,
                         request_id=request_id[:200] if request_id else None, server=trail.server)
    try:
        await trail.recorder.record([event])
    except AuditUnavailable:
        return False
    return True
