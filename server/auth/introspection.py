"""Token introspection (RFC 7662) with the SMART fields: who may ask about which token, and what they are told.

A caller is a confidential client that authenticates (client_secret_basic, client_secret_post, private_key_jwt)
and is told only about its own tokens, or a registered resource server, told about every token, which may also
authenticate with a Bearer token it got with client_credentials. Anyone else is refused with 401.
https://www.rfc-editor.org/rfc/rfc7662#section-4, https://hl7.org/fhir/smart-app-launch/token-introspection.html
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

from server.auth.facts import GRANT_VERSION_CLAIM
from server.auth.oauth import FAMILY_CLAIM, INTROSPECTION, Endpoints, FormRequest
from server.auth.service import AuthService
from server.auth.tokens import TokenError

CLIENT_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
INACTIVE: dict[str, Any] = {"active": False}
BASIC_CHALLENGE = 'Basic realm="careloop"'
BEARER_CHALLENGE = 'Bearer realm="careloop", error="invalid_token"'
_HIDDEN = frozenset({FAMILY_CLAIM, GRANT_VERSION_CLAIM})  # CareLoop's own bookkeeping, not part of the SMART answer


@dataclass(frozen=True)
class Caller:
    """An authenticated introspection caller."""

    client_id: str
    resource_server: bool


class Refused(Exception):
    """The caller did not authenticate as an allowed introspection caller: 401 with an OAuth error."""

    def __init__(self, error: str, description: str, challenge: str) -> None:
        super().__init__(description)
        self.error, self.description, self.challenge = error, description, challenge


def authenticate_caller(auth: AuthService, request: FormRequest, bearer: str | None, urls: Endpoints) -> Caller:
    """The caller of the introspection endpoint, or Refused; blocking (authlib, SQLite, a JWKS fetch)."""
    if bearer is not None:
        try:
            claims = auth.access_claims(bearer, urls)
        except TokenError as exc:
            raise Refused("invalid_token", exc.description, BEARER_CHALLENGE) from exc
        client_id = str(claims.get("client_id"))
        record = auth.store.client(client_id)
        # the resource server's own client_credentials token: no user, no refresh family
        if record is None or not record.resource_server or claims.get("sub") != client_id or FAMILY_CLAIM in claims:
            raise Refused("invalid_client", "Only a resource server's own client_credentials token may introspect; "
                                            "other clients authenticate as confidential clients", BASIC_CHALLENGE)
        return Caller(client_id, True)
    try:
        client = auth.server.authenticate_client(request, CLIENT_METHODS, INTROSPECTION)
    except (OAuth2Error, ValueError) as exc:  # ValueError: a Basic header that is not UTF-8
        raise Refused("invalid_client", "Introspection needs an authenticated confidential client (Basic, "
                                        "client_secret_post or private_key_jwt) or a resource server's Bearer token",
                      BASIC_CHALLENGE) from exc
    return Caller(client.client_id, client.record.resource_server)


def describe(auth: AuthService, caller: Caller, token: str, urls: Endpoints) -> dict[str, Any]:
    """The introspection answer: another client's token answers exactly like an unknown one (no oracle)."""
    try:
        claims = auth.access_claims(token, urls)
    except TokenError:
        found = auth.store.refresh(token) if token else None
        if found is None or found[3] or auth.signer.grant_revoked(found[2].get("grant"),
                                                                  found[2].get("grant_version")):
            return INACTIVE
        _, client_id, data, _ = found
        claims = {"client_id": client_id, "scope": data.get("scope"), "sub": data.get("username"),
                  "patient": data.get("patient"), "encounter": data.get("encounter"), "token_type": "refresh_token",
                  "purpose_of_use": data.get("purposes"), "grant": data.get("grant")}
    if not caller.resource_server and claims.get("client_id") != caller.client_id:
        return INACTIVE
    answer = {"active": True, "token_type": "Bearer",
              **{k: v for k, v in claims.items() if v is not None and k not in _HIDDEN}}
    if "fhirUser" not in answer and claims.get("sub"):
        user = auth.store.user(str(claims["sub"]))
        if user and user.fhir_user and "fhirUser" in str(claims.get("scope", "")).split():
            answer["fhirUser"] = user.fhir_user
    return answer
