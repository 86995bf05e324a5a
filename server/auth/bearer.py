"""The resource server's token check: every FHIR request but discovery carries a valid Bearer access token.

Pure ASGI middleware: it verifies the JWT (signature, issuer, audience = this FHIR base, expiry, revocation),
parses its scopes once per token, and leaves an `Access` in the request state for the routes.
https://hl7.org/fhir/smart-app-launch/app-launch.html#step-6-app-accesses-clinical-data-via-fhir-api
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from consent.access import BoundGuard
from resources.errors import Unauthorized
from resources.guard import GUARD
from resources.outcome import from_error
from server.answer_headers import FHIR
from server.auth.oauth import FAMILY_CLAIM
from server.auth.service import REVOKED_GRANT, AuthService, grant_revoked
from server.auth.tokens import TokenError
from server.auth.visibility import access_of_claims
from server.context import Services, configured_base, configured_issuer

PUBLIC = ("/fhir/metadata", "/fhir/.well-known/smart-configuration")
_CACHE_LIMIT = 10_000


class BearerMiddleware:
    """Authenticates FHIR requests; answers 401 with WWW-Authenticate and an OperationOutcome otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # verified tokens: token -> (guard, expiry, jti, refresh family, claims)
        self._cache: dict[str, tuple[BoundGuard, float, str, str | None, dict[str, Any]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/fhir") or path in PUBLIC or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        auth: AuthService | None = services.auth
        if auth is None:  # CARELOOP_AUTH=off
            await self.app(scope, receive, send)
            return
        header = _authorization(scope)
        try:
            token_text = header[7:].strip() if header[:7].lower() == "bearer " else ""
            if not token_text:
                raise TokenError("This request needs an access token (Authorization: Bearer ...)", code="login")
            guard = self._guard(auth, services, token_text)
        except TokenError as exc:
            await _unauthorized(exc, send)
            return
        scope.setdefault("state", {})["access"] = guard.access
        token = GUARD.set(guard)
        try:
            await self.app(scope, receive, send)
        finally:
            GUARD.reset(token)

    def _guard(self, auth: AuthService, services: Services, token: str) -> BoundGuard:
        # verified tokens are remembered, so a repeated token costs a dictionary look-up and the revocation
        # check; the request's guard is kept too (it depends only on the token and the policy, which lives as
        # long as the services). Issuer and audience are configured, never taken from the request (issue 27).
        key = token
        policy = services.policy
        cached = self._cache.get(key)
        if cached is None or cached[1] < time.time() or cached[0].policy is not policy:
            audience = configured_base(services.settings)
            issuer = configured_issuer(audience)
            claims = auth.signer.decode(token, "at+jwt", issuer, audience)
            access = access_of_claims(claims, auth.known_types)
            if access is None:
                raise TokenError("The token carries a malformed scope or malformed roles")
            if len(self._cache) > _CACHE_LIMIT:
                self._cache.clear()
            cached = (BoundGuard(policy, access), float(claims["exp"]), str(claims.get("jti")),
                      _text(claims.get(FAMILY_CLAIM)), claims)
            self._cache[key] = cached
        if auth.signer.is_revoked(cached[2], cached[3]):
            raise TokenError("The token was revoked")
        # the patient made the grant's Consent inactive or deleted it: refused from the next request on (C11)
        if cached[0].access.grant is not None and grant_revoked(auth.signer, cached[4]):
            raise TokenError(REVOKED_GRANT)
        return cached[0]


def _authorization(scope: Scope) -> str:
    """The Authorization header."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return ""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None




async def _unauthorized(exc: TokenError, send: Send) -> None:
    outcome = from_error(Unauthorized(exc.description, code=exc.code))
    error = "" if exc.code == "login" else ', error="invalid_token"'
    body = orjson.dumps(outcome)
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", f'Bearer realm="careloop"{error}'.encode()), *FHIR]})
    await send({"type": "http.response.body", "body": body})
