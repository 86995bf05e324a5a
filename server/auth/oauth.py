"""The OAuth 2 authorization server on authlib: SMART grants, PKCE S256 for everyone, private_key_jwt, JWT tokens.

authlib's server side is synchronous and framework-neutral: requests are adapted before entering it and it runs
in worker threads. Each pitfall of SECURITY.md §2.4 is handled where marked.
https://hl7.org/fhir/smart-app-launch/app-launch.html, https://docs.authlib.org/en/latest/oauth2/
"""

from __future__ import annotations

import contextvars
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, OAuth2Request
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from consent.scopes import ScopeError, granted, parse_scope, parse_scopes
from server.auth import purposes as pou
from server.auth.facts import caller_claims
from server.auth.store import AuthStore, ClientRecord, digest
from server.auth.tokens import Signer, new_jti
from server.auth.transport import redirect_uri_problem

APP_TOKEN_SECONDS = 3600  # SMART: SHOULD be at most an hour
BTG_TOKEN_SECONDS = 900  # break-glass: at most 15 minutes (SECURITY.md C9)
BACKEND_TOKEN_SECONDS = 300  # SMART backend services: SHOULD be at most five minutes
CODE_SECONDS = 60
REDEEMED_SECONDS = APP_TOKEN_SECONDS  # a replayed code revokes what it issued while that can still be used
FAMILY_CLAIM = "family"  # the refresh-token family an access token belongs to, so revoking the family stops it
OFFLINE_SECONDS = 90 * 86400
ONLINE_SECONDS = 86400
ASSERTION_ALGORITHMS = ["RS384", "ES384"]
# how each kind of client may authenticate at the token endpoint (RFC 6749 §2.3.1: a secret in Basic or the body)
AUTH_METHODS = {"public": frozenset({"none"}),
                "confidential-symmetric": frozenset({"client_secret_basic", "client_secret_post"}),
                "confidential-asymmetric": frozenset({"private_key_jwt"})}
TOKEN_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
INTROSPECTION = "introspection"  # the endpoint name authlib's client authentication is asked for


@dataclass(frozen=True)
class Endpoints:
    """The URLs of one request's view of the server: issuer, FHIR base (the token audience), token URL."""

    issuer: str
    fhir_base: str
    token_url: str


CURRENT: contextvars.ContextVar[Endpoints] = contextvars.ContextVar("careloop_auth_endpoints")


class FormRequest(OAuth2Request):
    """An OAuth2Request built from a Starlette request's already-read query and form (pitfall 10)."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str], query: dict[str, str],
                 form: dict[str, str]) -> None:
        super().__init__(method, uri, headers=headers)
        self._args, self._form = query, form
        self.payload = BasicOAuth2Payload({**query, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class Client(ClientMixin):  # type: ignore[misc]
    """A registered client as authlib sees it."""

    def __init__(self, record: ClientRecord, known_types: frozenset[str]) -> None:
        self.record = record
        self.known_types = known_types

    @property
    def client_id(self) -> str:
        return self.record.client_id

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.record.redirect_uris
        return uris[0] if len(uris) == 1 and redirect_uri_problem(uris[0]) is None else None

    def get_allowed_scope(self, scope: str | None) -> str:
        rest, codes = pou.split(scope or "")
        try:
            pou.choose(codes, self.record.purposes, self.record.break_glass)
            allowed = granted(" ".join(rest), self.record.scope, self.known_types)
        except (ScopeError, pou.PurposeError) as exc:
            raise InvalidScopeError(str(exc)) from exc
        # the purposes asked for stay in the scope; none asked for: the registered ones go in the token only
        return " ".join([*allowed.split(), *(pou.PREFIX + code for code in codes)])

    def purposes(self, scope: str) -> tuple[str, ...]:
        """The purposes of use a token for this (already allowed) scope carries."""
        return pou.choose(pou.split(scope)[1], self.record.purposes, self.record.break_glass)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # exact string match, no prefixes (pitfall 6); a plain-http URI registered before the rule is not followed
        return redirect_uri in self.record.redirect_uris and redirect_uri_problem(redirect_uri) is None

    def check_client_secret(self, client_secret: str) -> bool:
        return self.record.secret_hash is not None and secrets.compare_digest(digest(client_secret),
                                                                              self.record.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS[self.record.kind]

    def system_scope(self) -> str:
        """The `system/` scopes of the client's registration: what a client_credentials request gets by default."""
        return " ".join(s for s in self.record.scope.split()
                        if (found := parse_scope(s, self.known_types)) is not None and found.context == "system")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and bool(self.record.redirect_uris)

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            return self.record.kind != "public"
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class GrantUser:
    """The signed-in user with the launch context the grant carries."""

    username: str | None
    fhir_user: str | None = None
    patient: str | None = None
    encounter: str | None = None
    nonce: str | None = None
    family: str | None = None  # the refresh-token family this grant starts or continues
    jti: str | None = None  # the access token's id, fixed when a code is redeemed
    extra: dict[str, Any] = field(default_factory=dict)
    purposes: tuple[str, ...] = ()
    btg_reason: str | None = None
    grant: str | None = None  # "Consent/<id>": the patient's grant to the app, when a patient authorized it
    grant_version: int | None = None

    def get_user_id(self) -> str | None:
        return self.username

    def context(self) -> dict[str, Any]:
        """What codes and refresh tokens remember."""
        return {"username": self.username, "fhir_user": self.fhir_user, "patient": self.patient,
                "encounter": self.encounter, "nonce": self.nonce, "purposes": list(self.purposes),
                "btg_reason": self.btg_reason, "grant": self.grant, "grant_version": self.grant_version}

    @classmethod
    def remembered(cls, data: dict[str, Any], family: str | None, jti: str | None = None,
                   nonce: bool = True) -> GrantUser:
        """The user a code or refresh token remembers."""
        return cls(data.get("username"), data.get("fhir_user"), data.get("patient"), data.get("encounter"),
                   data.get("nonce") if nonce else None, family, jti, purposes=tuple(data.get("purposes") or ()),
                   btg_reason=data.get("btg_reason"), grant=data.get("grant"), grant_version=data.get("grant_version"))


class Credential:
    """An authorization code or refresh token as authlib sees it."""

    def __init__(self, client_id: str, data: dict[str, Any], raw: str, family: str | None = None,
                 jti: str | None = None) -> None:
        self.client_id, self.data, self.raw, self.family, self.jti = client_id, data, raw, family, jti

    def get_redirect_uri(self) -> str:
        return str(self.data.get("redirect_uri") or "")

    def get_scope(self) -> str:
        return str(self.data.get("scope") or "")

    def check_client(self, client: Client) -> bool:
        return client.get_client_id() == self.client_id

    def is_expired(self) -> bool:
        return False  # the store only returns live ones

    def is_revoked(self) -> bool:
        return False


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 required of every client, confidential ones included (pitfall 2)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)

    def get_authorization_code_challenge(self, authorization_code: Credential) -> str | None:
        return authorization_code.data.get("code_challenge")

    def get_authorization_code_challenge_method(self, authorization_code: Credential) -> str | None:
        return authorization_code.data.get("code_challenge_method")


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """SMART asymmetric client authentication: RS384/ES384 assertions, kid, jku, exp within 5 minutes, no replay."""

    CLIENT_AUTH_METHOD = "private_key_jwt"  # authlib's default name differs

    def __init__(self, store: AuthStore) -> None:
        super().__init__(validate_jti=True, leeway=5)
        self.store = store
        self._headers: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("assertion_headers")

    def __call__(self, query_client: Any, request: Any) -> Any:
        if request.form.get("client_assertion") and request.form.get(
                "client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            raise InvalidClientError(description="Unsupported client_assertion_type")
        return super().__call__(query_client, request)

    def get_audiences(self) -> list[str]:
        return [CURRENT.get().token_url]

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        return self.store.use_assertion(str(claims["iss"]), str(jti), float(claims["exp"]))

    def resolve_client_public_key(self, client: Client) -> KeySet:
        record = client.record
        if record.jwks:
            return KeySet.import_key_set(record.jwks)
        if record.jwks_url:
            response = httpx.get(record.jwks_url, timeout=5)
            response.raise_for_status()
            return KeySet.import_key_set(response.json())
        raise InvalidClientError(description="The client has no registered keys")

    def extract_assertion(self, assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
        headers, claims = super().extract_assertion(assertion)
        self._headers.set(headers)
        return headers, claims

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        headers = self._headers.get({})
        if not headers.get("kid"):
            raise InvalidClientError(description="The client assertion needs a 'kid' header")
        if headers.get("alg") not in ASSERTION_ALGORITHMS:
            raise InvalidClientError(description=f"The client assertion must be signed with one of "
                                                 f"{', '.join(ASSERTION_ALGORITHMS)}")
        try:  # algorithms pinned: RS384/ES384 pass, HS*/none/RS256 do not (pitfall 1)
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description=f"The client assertion cannot be verified: "
                                                 f"{exc.__class__.__name__}") from exc
        if "jku" in headers:
            record = self.store.client(str(token.claims.get("sub")))
            if record is None or headers["jku"] != record.jwks_url:
                raise InvalidClientError(description="The 'jku' header is not the client's registered JWKS URL")
        claims = dict(token.claims)
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] - time.time() > 300:
            raise InvalidClientError(description="The client assertion must expire within 5 minutes")
        self.verify_claims(token.claims)
        return claims


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """Authorization code with the launch context and the nonce kept with the code."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def save_authorization_code(self, code: str, request: Any) -> None:
        user: GrantUser = request.user
        data = {**user.context(), "redirect_uri": request.payload.redirect_uri, "scope": request.scope,
                "code_challenge": request.payload.data.get("code_challenge"),
                "code_challenge_method": request.payload.data.get("code_challenge_method")}
        self.server.store.save_code(code, request.client.get_client_id(), data, CODE_SECONDS)

    def query_authorization_code(self, code: str, client: Client) -> Credential | None:
        """Redeem the code atomically; a code redeemed before revokes what that redemption issued (§4.1.2)."""
        jti, family = new_jti(), secrets.token_urlsafe(12)
        data = self.server.store.redeem_code(code, client.get_client_id(), jti, family, REDEEMED_SECONDS)
        if data is None:
            earlier = self.server.store.redeemed_code(code)
            if earlier is not None:
                self.server.revoke_grant(*earlier)
            return None
        return Credential(client.get_client_id(), data, code, family, jti)

    def delete_authorization_code(self, authorization_code: Credential) -> None:
        """Nothing left to do: redeeming the code deleted it."""

    def authenticate_user(self, authorization_code: Credential) -> GrantUser:
        return GrantUser.remembered(authorization_code.data, authorization_code.family, authorization_code.jti)


class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    """Refresh tokens rotate on use; a reused one revokes its whole family (SECURITY.md case 28)."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_token_endpoint_client(self) -> Client:
        """Without any client credentials, the public client the token was issued to (RFC 6749 §6).

        https://www.rfc-editor.org/rfc/rfc6749#section-6
        """
        # the SMART JS client refreshes without client_id by default; confidential clients still authenticate
        if _presents_client_credentials(self.request):
            client: Client = super().authenticate_token_endpoint_client()
            return client
        found = self.server.store.refresh(self.request.form.get("refresh_token") or "")
        holder = self.server.query_client(found[1]) if found else None
        if holder is None:
            raise InvalidGrantError("The refresh token is unknown, expired or revoked")
        if not holder.check_endpoint_auth_method("none", "token"):
            raise InvalidClientError(status_code=401, description="This client must authenticate to refresh")
        self.request.auth_method = "none"
        return holder

    def authenticate_refresh_token(self, refresh_token: str) -> Credential | None:
        found = self.server.store.refresh(refresh_token)
        if found is None:
            return None
        family, client_id, data, used = found
        # a reused token, or one of a grant the patient revoked (its Consent inactive or deleted), ends the family
        if used or self.server.signer.grant_revoked(data.get("grant"), data.get("grant_version")):
            self.server.revoke_grant(None, family)
            return None
        return Credential(client_id, data, refresh_token, family)

    def authenticate_user(self, credential: Credential) -> GrantUser:
        return GrantUser.remembered(credential.data, credential.family, nonce=False)

    def revoke_old_credential(self, credential: Credential) -> None:
        # the one use is taken atomically: a concurrent refresh with the same token (another thread or instance)
        # that got here first means a replay, and the family with the tokens both just issued ends
        if not self.server.store.use_refresh(credential.raw):
            self.server.revoke_grant(None, credential.family)
            raise InvalidGrantError("The refresh token was used already")


class BackendGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """client_credentials for SMART backend services: system/ scopes within the client's pre-authorization."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
    granted_scope = ""
    purposes: tuple[str, ...] = ()
    btg_reason: str | None = None

    def validate_token_request(self) -> None:
        super().validate_token_request()
        rest, codes = pou.split(self.request.payload.scope or "")
        requested = " ".join(rest)
        if not requested:  # RFC 6749 §3.3: no scope means the client's pre-authorized (system/) scopes
            requested = self.request.client.system_scope()
            if not requested:
                raise InvalidScopeError("This client has no system/ scopes registered; request a scope")
        resources, _ = parse_scopes(requested, self.server.known_types)
        if not resources or any(s.context != "system" for s in resources):
            raise InvalidScopeError("Backend services request system/ scopes")
        record = self.request.client.record
        if set(granted(requested, record.scope, self.server.known_types).split()) != set(requested.split()):
            raise InvalidScopeError("The requested scope is beyond what this client is allowed")
        try:
            self.purposes = pou.choose(codes, record.purposes, record.break_glass)
            if pou.BREAK_GLASS in self.purposes:
                self.btg_reason = pou.check_reason(self.request.form.get("btg_reason"))
        except pou.PurposeError as exc:
            raise InvalidScopeError(str(exc)) from exc
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        self.granted_scope = " ".join([*requested.split(), *(pou.PREFIX + code for code in codes)])

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """The token for the scope validated above, which may be the default one (its `scope` says which)."""
        token = self.server.issue(self.GRANT_TYPE, self.request.client, None, self.granted_scope,
                                  include_refresh_token=False, purposes=self.purposes, btg_reason=self.btg_reason)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


def _presents_client_credentials(request: OAuth2Request) -> bool:
    """True when the request carries any client identification or authentication of its own."""
    form = request.form
    return bool(request.headers.get("Authorization") or form.get("client_id") or form.get("client_secret")
                or form.get("client_assertion") or form.get("client_assertion_type"))


class SmartServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's AuthorizationServer bound to CareLoop's store, signer and response type."""

    def __init__(self, store: AuthStore, signer: Signer, known_types: frozenset[str],
                 btg_seconds: int = BTG_TOKEN_SECONDS) -> None:
        super().__init__()
        self.store = store
        self.signer = signer
        self.known_types = known_types
        self.btg_seconds = btg_seconds
        self.register_client_auth_method("private_key_jwt", PrivateKeyJWT(store))
        self.register_grant(CodeGrant, [S256Only(required=True)])
        self.register_grant(RefreshGrant)
        self.register_grant(BackendGrant)
        self.register_token_generator("default", self.issue)

    def query_client(self, client_id: str) -> Client | None:
        record = self.store.client(client_id)
        return Client(record, self.known_types) if record else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """Tokens are signed JWTs; refresh tokens were stored when they were made."""

    def revoke_grant(self, jti: str | None, family: str) -> None:
        """Revoke a refresh family, its access tokens and optionally one more access token, at once."""
        if jti is not None:
            self.store.revoke_jti(jti, time.time() + APP_TOKEN_SECONDS)
        self.store.revoke_family(family)
        self.signer.forget_revocations()

    def create_oauth2_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, dict[str, str]]:
        return status, body, dict(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signals."""

    def validate_requested_scope(self, scope: str | None) -> None:
        try:
            parse_scopes(scope or "", self.known_types)
        except ScopeError as exc:
            raise InvalidScopeError(str(exc)) from exc

    def issue(self, grant_type: str, client: Client, user: GrantUser | None = None, scope: str | None = None,
              expires_in: int | None = None, include_refresh_token: bool = True, *,
              purposes: tuple[str, ...] | None = None, btg_reason: str | None = None) -> dict[str, Any]:
        """Access token (JWT), and the id_token, refresh token and launch context the grant earns."""
        urls = CURRENT.get()
        scope = scope or ""
        names = set(scope.split())
        backend = grant_type == "client_credentials"
        lifetime = BACKEND_TOKEN_SECONDS if backend else APP_TOKEN_SECONDS
        if user is not None:
            purposes, btg_reason = user.purposes or client.purposes(scope), user.btg_reason
        purposes = purposes if purposes is not None else client.purposes(scope)
        break_glass = pou.BREAK_GLASS in purposes
        if break_glass:  # short-lived, and never refreshed
            lifetime = min(lifetime, self.btg_seconds)
            include_refresh_token = False
        now = int(time.time())
        jti = (user.jti if user else None) or new_jti()
        family = (user.family or secrets.token_urlsafe(12)) if user is not None else None
        claims: dict[str, Any] = {"iss": urls.issuer, "aud": urls.fhir_base, "sub": (user.username if user else None)
                                  or client.get_client_id(), "client_id": client.get_client_id(), "scope": scope,
                                  "iat": now, "exp": now + lifetime, "jti": jti}
        signed_in = self.store.user(user.username) if user is not None and user.username else None
        claims.update(caller_claims(client.record, signed_in, purposes, btg_reason,
                                    user.grant if user else None, user.grant_version if user else None))
        if user is not None:
            claims[FAMILY_CLAIM] = family
            for key in ("patient", "encounter"):
                if getattr(user, key):
                    claims[key] = getattr(user, key)
            if user.fhir_user and "fhirUser" in names:
                claims["fhirUser"] = user.fhir_user
        token: dict[str, Any] = {"access_token": self.signer.sign(claims, "at+jwt"), "token_type": "Bearer",
                                 "expires_in": lifetime, "scope": scope}
        if user is not None:
            for key in ("patient", "encounter"):
                if getattr(user, key):
                    token[key] = getattr(user, key)
            if user.patient:
                token["need_patient_banner"] = not (user.fhir_user or "").startswith("Patient/")
            if "openid" in names and user.username:
                id_claims = {"iss": urls.issuer, "aud": client.get_client_id(), "sub": user.username, "iat": now,
                             "exp": now + lifetime}
                if user.fhir_user and "fhirUser" in names:
                    id_claims["fhirUser"] = user.fhir_user
                if user.nonce:
                    id_claims["nonce"] = user.nonce
                token["id_token"] = self.signer.sign(id_claims)
        # refresh tokens only when offline_access or online_access was granted (pitfall 3)
        if include_refresh_token and user is not None and family is not None and names & {"offline_access",
                                                                                           "online_access"}:
            refresh = secrets.token_urlsafe(32)
            ttl = OFFLINE_SECONDS if "offline_access" in names else ONLINE_SECONDS
            self.store.save_refresh(refresh, family, client.get_client_id(),
                                    {**user.context(), "scope": scope, "purposes": list(purposes)}, ttl)
            token["refresh_token"] = refresh
        return token

