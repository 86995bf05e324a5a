"""OAuth and SMART endpoints: discovery, JWKS, authorize (sign-in and patient picker), token, introspect, revoke.

https://hl7.org/fhir/smart-app-launch/app-launch.html, https://www.rfc-editor.org/rfc/rfc7662,
https://www.rfc-editor.org/rfc/rfc7009
"""

from __future__ import annotations

import html
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from authlib.common.security import is_secure_transport
from authlib.oauth2.rfc6749.errors import OAuth2Error
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from consent.access import Access
from resources.errors import FhirError
from server.auth import audit
from server.auth import purposes as pou
from server.auth.grants import grant_consent, provisions, record_grant
from server.auth.introspection import CLIENT_METHODS, Refused, authenticate_caller, describe
from server.auth.launch import context_visible, may_create_launch
from server.auth.oauth import (
    APP_TOKEN_SECONDS,
    CURRENT,
    OFFLINE_SECONDS,
    ONLINE_SECONDS,
    Endpoints,
    FormRequest,
    GrantUser,
)
from server.auth.picker import choices, may_pick
from server.auth.service import AuthService
from server.auth.signin import Throttled, check_credentials
from server.auth.store import ClientRecord
from server.auth.tokens import TokenError
from server.context import configured_base, configured_issuer, request_base, services

router = APIRouter()
# RFC 7009 §2.1: the client authenticates as at the token endpoint; a public client names itself
REVOKE_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
CAPABILITIES = ["launch-ehr", "launch-standalone", "authorize-post", "client-public", "client-confidential-symmetric",
                "client-confidential-asymmetric", "sso-openid-connect", "context-ehr-patient", "context-ehr-encounter",
                "context-standalone-patient", "permission-patient", "permission-user", "permission-offline",
                "permission-online", "permission-v1", "permission-v2"]
LOGIN_SECONDS = 600


def auth_service(request: Request) -> AuthService:
    """The authorization service (404 when authorization is off)."""
    found: AuthService | None = services(request).auth
    if found is None:
        raise_json(404, "not_found", "Authorization is off on this server (CARELOOP_AUTH=off)")
    assert found is not None
    return found


class JsonError(Exception):
    """An OAuth error answered as RFC 6749 JSON."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def raise_json(status: int, error: str, description: str) -> None:
    """Stop with an OAuth JSON error."""
    raise JsonError(status, error, description)


async def audited(request: Request, subtype: str, status: int, **facts: str | None) -> None:
    """Record an authorization server event (issue 29); 503 when the audit trail cannot be written."""
    if not await audit.record(request, subtype, status, **facts):
        raise_json(503, "temporarily_unavailable", "The audit trail cannot be written; try again shortly")


def json_error(exc: JsonError) -> JSONResponse:
    """The response of a JsonError."""
    return JSONResponse({"error": exc.error, "error_description": exc.description}, exc.status, NO_STORE)


async def json_error_handler(request: Request, exc: Exception) -> Response:
    """The answer to a JsonError an endpoint did not catch (with authorization off, every one of them)."""
    assert isinstance(exc, JsonError)
    return json_error(exc)


def configured_endpoints(request: Request) -> Endpoints:
    """Issuer, FHIR base and token URL from configuration: never from what a request says (issue 27, item 7)."""
    fhir = configured_base(services(request).settings)
    issuer = configured_issuer(fhir)
    return Endpoints(issuer, fhir, f"{issuer}/token")


def endpoints(request: Request) -> Endpoints:
    """The configured endpoints, for a request that came over TLS or to a loopback name (OAuth 2.1 section 1.5)."""
    # the request's own scheme and host (a trusted proxy's, behind one) decide: the configured URLs say nothing
    # of how this request travelled
    if not is_secure_transport(request_base(request)):
        raise_json(400, "insecure_transport", "OAuth 2 MUST utilize https")
    return configured_endpoints(request)


def _metadata(request: Request) -> dict[str, Any]:
    urls = configured_endpoints(request)
    auth = urls.issuer
    return {
        "issuer": auth, "jwks_uri": f"{auth}/jwks", "authorization_endpoint": f"{auth}/authorize",
        "token_endpoint": urls.token_url, "introspection_endpoint": f"{auth}/introspect",
        "revocation_endpoint": f"{auth}/revoke",
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post",
                                                  "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access",
                             "patient/*.cruds", "user/*.cruds", "system/*.cruds", "patient/*.read", "user/*.read",
                             *(pou.PREFIX + code for code in sorted(pou.KNOWN))],
        "capabilities": CAPABILITIES,
        "introspection_endpoint_auth_methods_supported": CLIENT_METHODS,  # RFC 8414 §2
    }


@router.get("/fhir/.well-known/smart-configuration", include_in_schema=False)
async def smart_configuration(request: Request) -> Response:
    """SMART discovery: JSON whatever the Accept header, open to any origin (server/cors.py)."""
    auth_service(request)
    return JSONResponse(_metadata(request))


@router.get("/.well-known/oauth-authorization-server", include_in_schema=False)
@router.get("/auth/.well-known/oauth-authorization-server", include_in_schema=False)
async def oauth_metadata(request: Request) -> Response:
    """RFC 8414 authorization-server metadata."""
    auth_service(request)
    return JSONResponse(_metadata(request))


@router.get("/auth/jwks", include_in_schema=False)
async def jwks(request: Request) -> Response:
    """The public keys that verify access tokens and id_tokens."""
    return JSONResponse(auth_service(request).signer.jwks())


async def _form(request: Request) -> dict[str, str]:
    if request.method != "POST":
        return {}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _page(title: str, body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    style = "body{font-family:sans-serif;max-width:28rem;margin:3rem auto}input,button{display:block;margin:.4rem 0}"
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>",
                        status, headers={**NO_STORE, **(headers or {}), "X-Frame-Options": "DENY",
                                         "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                    "form-action 'self'"})


def _hidden(params: dict[str, str]) -> str:
    return "".join(f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>"
                   for k, v in params.items())


_OAUTH_KEYS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge",
               "code_challenge_method", "launch", "nonce", "resource", "btg_reason")


@router.api_route("/auth/authorize", methods=["GET", "POST"], include_in_schema=False)
async def authorize(request: Request) -> Response:
    """Validate the request, sign the user in, pick the patient, then redirect back with a code."""
    auth = auth_service(request)
    urls = endpoints(request)
    CURRENT.set(urls)
    query = dict(request.query_params)
    form = await _form(request)
    params = {k: v for k, v in {**query, **form}.items() if k in _OAUTH_KEYS}
    try:
        oauth = FormRequest(request.method, f"{urls.issuer}/authorize", request.headers, params, {})
        grant = await run_in_threadpool(auth.server.get_consent_grant, oauth)
    except OAuth2Error as exc:  # no redirect on errors: a bad redirect_uri must never be followed
        raise_json(400, exc.error or "invalid_request", exc.description or exc.error or "invalid request")
    audience = params.get("aud") or params.get("resource")
    if audience is None or audience.rstrip("/") != urls.fhir_base:
        raise_json(400, "invalid_request", f"'aud' must be this server's FHIR base URL {urls.fhir_base}")
    scopes = set(grant.request.scope.split()) if grant.request.scope else set()
    purposes = grant.request.client.purposes(grant.request.scope or "")
    btg_reason = None
    if pou.BREAK_GLASS in purposes:
        try:
            btg_reason = pou.check_reason(params.get("btg_reason"))
        except ValueError as exc:
            raise_json(400, "invalid_request", str(exc))
    launch_context: dict[str, Any] = {}
    if "launch" in params:
        found = auth.store.launch(params["launch"])
        if found is None or found.get("client_id", params.get("client_id")) != params.get("client_id"):
            raise_json(400, "invalid_request", "Unknown or expired 'launch'")
        launch_context = found or {}
    try:
        user = await _signed_in(request, auth, form)
    except Throttled as exc:
        return _throttled_page(params, exc.retry_after)
    if user is None:
        if form.get("username") is not None and not form.get("session"):
            await audited(request, "signin-failed", 401, client_id=params.get("client_id"),
                          detail=f"user name {form['username'][:100]!r}")
        return _login_page(params, form.get("username") is not None)
    signed_in = await run_in_threadpool(auth.store.user, user.username or "")
    if btg_reason is not None and not (signed_in is not None and signed_in.break_glass):
        return _denied(grant.request.payload.redirect_uri or grant.request.client.get_default_redirect_uri(), params,
                       "This user is not entitled to break-glass access")
    # what the picker decides with, as the FHIR API would for the token about to be issued
    client_record: ClientRecord = grant.request.client.record
    facts = Access(purposes=purposes, roles=signed_in.roles if signed_in else (), btg_reason=btg_reason,
                   organization=(signed_in.organization if signed_in else None) or client_record.organization,
                   clinic_system=client_record.ehr, audit_source=client_record.audit_source)
    patient = launch_context.get("patient")
    if user.fhir_user and user.fhir_user.startswith("Patient/"):
        # a patient signs in to their own record only, whatever a launch names
        own = user.fhir_user.split("/", 1)[1]
        if patient not in (None, own):
            raise_json(400, "invalid_request", "This launch is not for the signed-in patient")
        patient = own
    elif patient is not None and (user.fhir_user or "").startswith("RelatedPerson/") and not await may_pick(
            services(request), auth.known_types, grant.request.scope or "", params.get("client_id", ""),
            user.fhir_user, patient, facts):
        raise_json(400, "invalid_request", "This launch is not for the signed-in person's patient")
    wants_patient = "launch/patient" in scopes or any(s.startswith("patient/") for s in scopes)
    if wants_patient and patient is None:
        chosen = form.get("patient")
        # a patient the user may not pick is answered exactly like one that does not exist: the picker again
        if chosen and await may_pick(services(request), auth.known_types, grant.request.scope or "",
                                     params.get("client_id", ""), user.fhir_user, chosen, facts):
            patient = chosen
        else:
            return await _picker_page(request, auth, params, user, grant.request.scope or "",
                                      form.get("q", "").strip()[:100], facts)
    grant_user = GrantUser(user.username, user.fhir_user, patient, launch_context.get("encounter"),
                           params.get("nonce"), purposes=purposes, btg_reason=btg_reason)
    if "launch" in params and auth.store.use_launch(params["launch"]) is None:  # used once, even concurrently
        raise_json(400, "invalid_request", "Unknown or expired 'launch'")
    if patient is not None and (user.fhir_user or "").startswith(("Patient/", "RelatedPerson/")):
        # the patient (or their representative) lets the app reach their data: the grant is recorded as a Consent
        await _record_grant(request, auth, client_record, grant_user, patient, grant.request.scope or "")
    status, _, headers = await run_in_threadpool(auth.server.create_authorization_response, oauth, grant_user,
                                                 grant)
    return RedirectResponse(dict(headers)["Location"], status_code=302, headers=NO_STORE)


def _grant_seconds(scopes: set[str]) -> int:
    """How long a grant lasts: as long as its refresh tokens may (or its access token, without one)."""
    if "offline_access" in scopes:
        return OFFLINE_SECONDS
    return ONLINE_SECONDS if "online_access" in scopes else APP_TOKEN_SECONDS


async def _record_grant(request: Request, auth: AuthService, client: ClientRecord, user: GrantUser, patient: str,
                        scope: str) -> None:
    """Write the Consent of a grant of data (none for identity alone) and note it on the user the code keeps."""
    if not provisions(scope, auth.known_types):
        return
    body = grant_consent(client_id=client.client_id, client_name=client.name, patient=patient,
                         performer=user.fhir_user or "", scope=scope, purposes=user.purposes,
                         now_ms=int(time.time() * 1000), lifetime_seconds=_grant_seconds(set(scope.split())),
                         known_types=auth.known_types)
    try:
        user.grant, user.grant_version = await record_grant(services(request), auth.store, body, client.client_id,
                                                            patient)
    except FhirError as exc:  # the store is unreachable, or refused the write: no code without the record
        raise_json(503, "temporarily_unavailable", f"The grant could not be recorded: {exc.diagnostics}")


def _denied(redirect_uri: str | None, params: dict[str, str], description: str) -> Response:
    """access_denied back to the app's (already validated) redirect URI, RFC 6749 §4.1.2.1."""
    query = urlencode({"error": "access_denied", "error_description": description,
                       **({"state": params["state"]} if "state" in params else {})})
    target = redirect_uri or ""
    return RedirectResponse(f"{target}{'&' if '?' in target else '?'}{query}", status_code=302, headers=NO_STORE)


async def _signed_in(request: Request, auth: AuthService, form: dict[str, str]) -> GrantUser | None:
    if form.get("session"):
        try:
            claims = auth.signer.decode(form["session"], "login+jwt", "careloop-login", None)
        except TokenError:
            return None
        found = auth.store.user(str(claims.get("sub")))
        return GrantUser(found.username, found.fhir_user) if found else None
    username, password = form.get("username"), form.get("password")
    if not username or password is None:
        return None
    address = request.client.host if request.client else "unknown"
    found = await check_credentials(auth.store, services(request).settings, username, password, address)
    return GrantUser(found.username, found.fhir_user) if found else None


def _login_page(params: dict[str, str], failed: bool) -> HTMLResponse:
    note = "<p role='alert'>Wrong user name or password.</p>" if failed else ""
    body = (f"{note}<form method='post' action='authorize'>{_hidden(params)}"
            "<label>User name <input name='username' autocomplete='username' required></label>"
            "<label>Password <input name='password' type='password' autocomplete='current-password' required>"
            "</label><button type='submit'>Sign in</button></form>")
    return _page("Sign in to CareLoop", body, 401 if failed else 200)


def _throttled_page(params: dict[str, str], retry_after: int) -> HTMLResponse:
    minutes = max(1, round(retry_after / 60))
    body = (f"<p role='alert'>Too many failed sign-ins. Try again in about {minutes} minute(s), or ask an "
            f"administrator to unlock the account.</p><form method='post' action='authorize'>{_hidden(params)}"
            "<label>User name <input name='username' autocomplete='username' required></label>"
            "<label>Password <input name='password' type='password' autocomplete='current-password' required>"
            "</label><button type='submit'>Sign in</button></form>")
    return _page("Sign in to CareLoop", body, 429, {"Retry-After": str(retry_after)})


async def _picker_page(request: Request, auth: AuthService, params: dict[str, str], user: GrantUser, scope: str,
                       name: str, facts: Access) -> HTMLResponse:
    now = int(time.time())
    session = auth.signer.sign({"iss": "careloop-login", "sub": user.username or "", "iat": now,
                                "exp": now + LOGIN_SECONDS}, "login+jwt")
    kept = f"{_hidden(params)}<input type='hidden' name='session' value='{html.escape(session)}'>"
    found, more = await choices(services(request), auth.known_types, scope,
                                params.get("client_id", ""), user.fhir_user, name, facts)
    radios = "".join(f"<label><input type='radio' name='patient' value='{html.escape(c.id)}' required> "
                     f"{html.escape(c.label)} ({html.escape(c.id)})</label>" for c in found)
    search = (f"<form method='post' action='authorize'>{kept}<label>Name <input name='q' type='search' "
              f"value='{html.escape(name)}'></label><button type='submit'>Search</button></form>")
    if found:
        note = "<p>More patients match: search by name to narrow the list.</p>" if more else ""
        chooser = (f"{note}<form method='post' action='authorize'>{kept}{radios}"
                   "<button type='submit'>Continue</button></form>")
    elif name:
        chooser = "<p>No patients you may see match that name.</p>"
    else:
        chooser = "<p>No patients are available to you in this app.</p>"
    return _page("Choose a patient", search + chooser)


@router.post("/auth/token", include_in_schema=False)
async def token(request: Request) -> Response:
    """The token endpoint: authorization_code, refresh_token and client_credentials."""
    auth = auth_service(request)
    urls = endpoints(request)
    CURRENT.set(urls)
    form = await _form(request)
    try:  # OAuth needs https, except on loopback addresses
        oauth = FormRequest("POST", urls.token_url, request.headers, {}, form)
    except OAuth2Error as exc:
        return JSONResponse({"error": exc.error, "error_description": exc.description}, 400, NO_STORE)
    status, body, headers = await run_in_threadpool(auth.server.create_token_response, oauth)
    if status == 200 and isinstance(body, dict):
        claims = audit.unverified_claims(str(body.get("access_token", "")))
        await audited(request, "token-issued", status, client_id=claims.get("client_id"),
                      user=claims.get("fhirUser") or claims.get("sub"), detail=claims.get("scope"))
    else:
        reason = str(body.get("error_description") or body.get("error")) if isinstance(body, dict) else None
        await audited(request, "token-refused", status, client_id=form.get("client_id"), detail=reason)
    return JSONResponse(body, status, {**headers, **NO_STORE})


def _revoking_client(auth: AuthService, request: FormRequest) -> str | None:
    """The client calling revoke, authenticated as at the token endpoint (a public client by its client_id)."""
    try:
        return str(auth.server.authenticate_client(request, REVOKE_METHODS, "revocation").client_id)
    except (OAuth2Error, ValueError):  # ValueError: a Basic header that is not UTF-8
        return None


@router.post("/auth/introspect", include_in_schema=False)
async def introspect(request: Request) -> Response:
    """RFC 7662 with the SMART fields, for confidential clients (their own tokens) and resource servers (any)."""
    auth = auth_service(request)
    urls = endpoints(request)
    CURRENT.set(urls)  # a client assertion's audience is the token URL, as at the token endpoint
    form = await _form(request)
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
    try:
        oauth = FormRequest("POST", f"{urls.issuer}/introspect", request.headers, {}, form)
        caller = await run_in_threadpool(authenticate_caller, auth, oauth, bearer, urls)
    except OAuth2Error as exc:  # OAuth needs https, except on loopback addresses
        return JSONResponse({"error": exc.error, "error_description": exc.description}, 400, NO_STORE)
    except Refused as exc:
        return JSONResponse({"error": exc.error, "error_description": exc.description}, 401,
                            {**NO_STORE, "WWW-Authenticate": exc.challenge})
    answer = await run_in_threadpool(describe, auth, caller, form.get("token", ""), urls)
    return JSONResponse(answer, headers=NO_STORE)


def _verify_access(auth: AuthService, value: str, urls: Endpoints) -> dict[str, Any]:
    return auth.access_claims(value, urls)


@router.post("/auth/revoke", include_in_schema=False)
async def revoke(request: Request) -> Response:
    """RFC 7009: revoke an access token or a refresh token (and its family); 200 whatever the token was."""
    auth = auth_service(request)
    urls = endpoints(request)
    form = await _form(request)
    CURRENT.set(urls)  # a client assertion's audience is the token URL, as at the token endpoint
    try:
        oauth = FormRequest("POST", f"{urls.issuer}/revoke", request.headers, {}, form)
    except OAuth2Error as exc:  # OAuth needs https, except on loopback addresses
        return JSONResponse({"error": exc.error, "error_description": exc.description}, 400, NO_STORE)
    client_id = await run_in_threadpool(_revoking_client, auth, oauth)
    if client_id is None:
        return JSONResponse({"error": "invalid_client"}, 401, {**NO_STORE, "WWW-Authenticate": "Basic"})
    value = form.get("token", "")
    try:
        claims = auth.signer.decode(value, "at+jwt", urls.issuer, None)
        if claims.get("client_id") == client_id:
            auth.store.revoke_jti(str(claims["jti"]), float(claims["exp"]))
            auth.signer.forget_revocations()
            await audited(request, "token-revoked", 200, client_id=client_id, detail=f"access token {claims['jti']}")
    except TokenError:
        found = auth.store.refresh(value) if value else None
        if found is not None and found[1] == client_id:
            auth.server.revoke_grant(None, found[0])  # the family's access tokens stop working too
            await audited(request, "token-revoked", 200, client_id=client_id, detail="refresh token and its family")
    return Response(status_code=200, headers=NO_STORE)


@router.post("/auth/launch", include_in_schema=False)
async def create_launch(request: Request) -> Response:
    """The EHR registers a launch context (patient, encounter, optionally the client); the app gets `launch`."""
    auth = auth_service(request)
    urls = endpoints(request)
    header = request.headers.get("authorization", "")
    try:
        claims = _verify_access(auth, header[7:].strip(), urls) if header.lower().startswith("bearer ") else None
    except TokenError:
        claims = None
    if claims is None:
        return JSONResponse({"error": "invalid_token"}, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if not may_create_launch(auth, claims):
        return JSONResponse({"error": "insufficient_scope", "error_description": "Only a clinician's user/ token "
                             "or the system/ token of a client registered as an EHR may create launches"}, 403,
                            {"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
    form = await _form(request)
    context = {k: form[k] for k in ("patient", "encounter", "client_id") if form.get(k)}
    if "patient" not in context:
        return JSONResponse({"error": "invalid_request", "error_description": "'patient' is required"}, 400)
    # a missing patient and one the creator may not see get the same answer (no existence oracle)
    if not await context_visible(services(request), auth, claims, context["patient"], context.get("encounter")):
        return JSONResponse({"error": "invalid_request", "error_description": "The patient, or the encounter of "
                             "that patient, is not known"}, 400)
    if "client_id" in context and auth.store.client(context["client_id"]) is None:
        return JSONResponse({"error": "invalid_request", "error_description": "'client_id' is not a registered "
                             "client"}, 400)
    launch = secrets.token_urlsafe(16)
    auth.store.save_launch(launch, context, services(request).settings.launch_seconds)
    await audited(request, "launch-created", 201, client_id=str(claims.get("client_id")),
                  user=claims.get("fhirUser") or claims.get("sub"), detail=f"patient {context['patient']}")
    return JSONResponse({"launch": launch, **context}, 201)
