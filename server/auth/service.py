"""The authorization service: store, signer and authlib server together, clients and users managed from the CLI.

https://hl7.org/fhir/smart-app-launch/
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consent.scopes import parse_scopes
from server.auth.facts import GRANT_VERSION_CLAIM
from server.auth.oauth import FAMILY_CLAIM, Endpoints, SmartServer
from server.auth.purposes import check_registration
from server.auth.store import CLIENT_KINDS, DEFAULT_PURPOSES, AuthStore, ClientRecord, digest
from server.auth.tokens import Signer, TokenError
from server.auth.transport import check_redirect_uris
from server.settings import Settings


def auth_path(settings: Settings) -> str:
    """The authorization server's own file: configured, else beside the FHIR store."""
    if settings.auth_db:
        return settings.auth_db
    if settings.sqlite_path == ":memory:":
        return ":memory:"
    return str(Path(settings.sqlite_path).with_suffix("")) + "-auth.db"


@dataclass
class AuthService:
    """Everything the OAuth endpoints and the token check use."""

    store: AuthStore
    signer: Signer
    server: SmartServer
    known_types: frozenset[str]

    @classmethod
    def open(cls, settings: Settings, known_types: frozenset[str]) -> AuthService:
        """Open (and create) the auth store and its signing key."""
        path = auth_path(settings)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        store = AuthStore(path).open()
        signer = Signer(store)
        signer.key()
        return cls(store, signer, SmartServer(store, signer, known_types, settings.btg_token_seconds), known_types)

    def access_claims(self, token: str, urls: Endpoints) -> dict[str, Any]:
        """Claims of a live access token for this server: verified, not revoked, its refresh family not revoked."""
        claims = self.signer.decode(token, "at+jwt", urls.issuer, urls.fhir_base)
        family = claims.get(FAMILY_CLAIM)
        if self.signer.is_revoked(str(claims.get("jti")), family if isinstance(family, str) else None):
            raise TokenError("The token was revoked")
        if grant_revoked(self.signer, claims):
            raise TokenError(REVOKED_GRANT)
        return claims

    def close(self) -> None:
        """Close the auth store."""
        self.store.close()

    def add_client(self, name: str, kind: str, scope: str, redirect_uris: list[str],
                   jwks: dict[str, Any] | None = None, jwks_url: str | None = None,
                   client_id: str | None = None, resource_server: bool = False,
                   ehr: bool = False, *, purposes: tuple[str, ...] = DEFAULT_PURPOSES,
                   organization: str | None = None, audit_source: bool = False,
                   break_glass: bool = False) -> tuple[ClientRecord, str | None]:
        """Register a client; returns it with its secret (shown once) for a symmetric client."""
        if kind not in CLIENT_KINDS:
            raise ValueError(f"client type must be one of {', '.join(CLIENT_KINDS)}")
        purposes = check_registration(purposes) or DEFAULT_PURPOSES
        check_organization(organization)
        check_redirect_uris(redirect_uris)
        if resource_server and kind == "public":
            raise ValueError("a resource server must be a confidential client (it authenticates to introspect)")
        parse_scopes(scope, self.known_types)
        if kind == "confidential-asymmetric" and not (jwks or jwks_url):
            raise ValueError("an asymmetric client needs --jwks or --jwks-url")
        secret = secrets.token_urlsafe(32) if kind == "confidential-symmetric" else None
        record = ClientRecord(client_id or str(uuid.uuid4()), name, kind, scope, redirect_uris,
                              digest(secret) if secret else None, jwks, jwks_url, resource_server, ehr, purposes,
                              organization, audit_source, break_glass)
        self.store.add_client(record)
        return record, secret

    def reset_secret(self, client_id: str) -> str:
        """A new secret for a confidential-symmetric client (the old one stops working); ValueError otherwise."""
        record = self.store.client(client_id)
        if record is None:
            raise ValueError(f"no client {client_id}")
        if record.kind != "confidential-symmetric":
            raise ValueError(f"client {client_id} is {record.kind}: only confidential-symmetric clients have a secret")
        secret = secrets.token_urlsafe(32)
        self.store.set_client_secret(client_id, digest(secret))
        return secret


REVOKED_GRANT = "The patient revoked this app's access"


def grant_revoked(signer: Signer, claims: dict[str, Any]) -> bool:
    """True when the token was issued under a patient's grant whose Consent is no longer active."""
    grant, version = claims.get("grant"), claims.get(GRANT_VERSION_CLAIM)
    return isinstance(grant, str) and signer.grant_revoked(grant, version if isinstance(version, int) else 0)


def check_organization(reference: str | None) -> None:
    """ValueError unless an organization is given as a relative reference `Organization/<id>`."""
    if reference is None:
        return
    kind, _, id_ = reference.partition("/")
    if kind != "Organization" or not id_ or "/" in id_:
        raise ValueError(f"an organization is given as Organization/<id>, not '{reference}'")
