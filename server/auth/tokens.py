"""Signed JWTs: access tokens (RFC 9068), id_tokens (OpenID Connect) and their verification.

https://www.rfc-editor.org/rfc/rfc9068, https://hl7.org/fhir/smart-app-launch/app-launch.html
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from server.auth.store import AuthStore

ALGORITHM = "RS256"  # SMART requires RS256 for id_tokens; access tokens use the same key


class TokenError(Exception):
    """An access token that is missing, malformed, forged, expired, revoked or meant for another server."""

    def __init__(self, description: str, code: str = "security") -> None:
        super().__init__(description)
        self.description = description
        self.code = code  # OperationOutcome issue code: security, expired


@dataclass
class Signer:
    """The server's signing key (made on first start, kept in the auth store) and its public JWKS."""

    store: AuthStore
    _key: RSAKey | None = None
    _revoked: set[str] = field(default_factory=set)
    _revoked_families: set[str] = field(default_factory=set)
    _revoked_at: float = 0.0
    _version: int | None = None  # the auth file's data_version when the lists were read
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Consent id -> the latest version that revoked that SMART grant (inactive or deleted); only grows
    _revoked_grants: dict[str, int] = field(default_factory=dict)

    def key(self) -> RSAKey:
        """The current private key."""
        if self._key is None:
            keys = self.store.signing_keys()
            if keys:
                self._key = RSAKey.import_key(keys[-1])
            else:  # instances starting at once on a new folder: the first key stored is everyone's
                key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": ALGORITHM}, auto_kid=True)
                self.store.add_first_signing_key(key.kid or "", key.as_dict(private=True))
                self._key = RSAKey.import_key(self.store.signing_keys()[-1])
        return self._key

    def jwks(self) -> dict[str, Any]:
        """The public keys, for /auth/jwks."""
        return {"keys": [RSAKey.import_key(k).as_dict(private=False) for k in self.store.signing_keys()]}

    def sign(self, claims: dict[str, Any], typ: str = "JWT") -> str:
        """A compact JWS of the claims."""
        key = self.key()
        return jwt.encode({"alg": ALGORITHM, "kid": key.kid, "typ": typ}, claims, key)

    def decode(self, token: str, typ: str, issuer: str, audience: str | None) -> dict[str, Any]:
        """Verified claims of a token this server signed; TokenError otherwise."""
        try:
            decoded = jwt.decode(token, KeySet([self.key()]), algorithms=[ALGORITHM])
        except (JoseError, ValueError) as exc:
            raise TokenError(f"The token cannot be verified: {exc.__class__.__name__}") from exc
        if decoded.header.get("typ") != typ:
            raise TokenError("The token is not of the expected type")
        claims = dict(decoded.claims)
        now = time.time()
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] < now - 5:
            raise TokenError("The token has expired", code="expired")
        if isinstance(claims.get("nbf"), int | float) and claims["nbf"] > now + 5:
            raise TokenError("The token is not valid yet", code="expired")
        if claims.get("iss") != issuer:
            raise TokenError("The token was issued by another server")
        if audience is not None and claims.get("aud") != audience:
            raise TokenError("The token is meant for another audience")
        return claims

    def is_revoked(self, jti: str, family: str | None = None) -> bool:
        """True for a revoked access token, or one of a revoked refresh family, revoked by any instance.

        The lists are kept in memory and re-read only when the auth file changed (SQLite's data_version moves with
        every commit of another connection, this process's writer or another instance's), so the check on every
        request is one pragma and two set look-ups, and a revocation anywhere holds at the next request.
        """
        version = self.store.data_version()
        now = time.monotonic()
        # a memory database has no second connection to ask: re-read each second (one process only)
        stale = now - self._revoked_at > 1.0 if version is None else version != self._version
        if stale or now - self._revoked_at > 60.0:  # and once a minute, so expired entries leave memory
            with self._lock:
                self._revoked = self.store.revoked_jtis()
                self._revoked_families = self.store.revoked_family_ids()
                for consent, vid in self.store.revoked_grants().items():  # other processes' revocations
                    self.note_revoked_grant(consent, vid)
                self._revoked_at, self._version = now, version
        return jti in self._revoked or (family is not None and family in self._revoked_families)

    def note_revoked_grant(self, consent: str, vid: int) -> None:
        """Refuse at once the tokens of a grant whose Consent became inactive or was deleted at version `vid`."""
        if self._revoked_grants.get(consent, 0) < vid:
            self._revoked_grants[consent] = vid

    def grant_revoked(self, grant: str | None, version: int | None) -> bool:
        """True when the grant's Consent was revoked after the version the token was issued under."""
        if not grant:
            return False
        return self._revoked_grants.get(grant.removeprefix("Consent/"), 0) > (version or 0)

    def forget_revocations(self) -> None:
        """Re-read the revocation list on the next check (after a revocation in this process)."""
        self._revoked_at = 0.0


def new_jti() -> str:
    """A unique token id."""
    return secrets.token_urlsafe(16)
