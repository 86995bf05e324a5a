"""Liveness and readiness probes: /healthz (the process answers) and /readyz (it can serve requests now).

/readyz checks the store (one round trip), the audit trail (open and writable) and the validation workers
(started and holding the models); 503 with the failing parts otherwise, for a load balancer or an orchestrator.
https://kubernetes.io/docs/reference/using-api/health-checks/
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

router = APIRouter()
NO_STORE = {"cache-control": "no-store"}
STORE_TIMEOUT_S = 2.0  # a probe must answer quickly even when the store hangs


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    """200 while the process runs its event loop (it answers without touching anything else)."""
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """200 {"status": "ok", "checks": {...}} when store, audit trail and validation workers are ready; else 503."""
    svc = getattr(request.app.state, "services", None)
    if svc is None:  # the lifespan has not finished starting
        return JSONResponse({"status": "unavailable", "checks": {"start": "starting"}}, status_code=503,
                            headers=NO_STORE)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(svc.repository.store.last_seq(), STORE_TIMEOUT_S)
        checks["store"] = "ok"
    except TimeoutError:
        checks["store"] = f"no answer within {STORE_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - whatever the store raises, it is not ready
        checks["store"] = f"{exc.__class__.__name__}: {exc}"
    trail = svc.audit
    if trail is None:
        checks["audit"] = "off"
    elif not trail.recorder.ready or trail.problem is not None:
        checks["audit"] = trail.problem or "not open"
    else:
        checks["audit"] = "ok"
    checks["validation"] = "ok" if svc.repository.models.ready else "workers starting"
    if svc.disk is not None:  # a full disk: reads are served, writes refused until space returns
        checks["disk"] = await asyncio.to_thread(svc.disk.state)
    ready = all(v in ("ok", "off") for v in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503, headers=NO_STORE)
