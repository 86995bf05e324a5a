"""GET /health: whether the server can answer, the audit trail included (mandatory audit, issue 29).

https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from server.context import services

router = APIRouter()


@router.get("/health", include_in_schema=False)
async def health(request: Request) -> JSONResponse:
    """200 {"status": "ok", "audit": "ok"}; 503 with what is wrong when the audit trail cannot be written."""
    trail = services(request).audit
    if trail is None:
        return JSONResponse({"status": "ok", "audit": "off"})
    if trail.problem is not None:
        return JSONResponse({"status": "unavailable", "audit": trail.problem}, status_code=503,
                            headers={"cache-control": "no-store"})
    return JSONResponse({"status": "ok", "audit": "ok"}, headers={"cache-control": "no-store"})
