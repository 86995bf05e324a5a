"""OpenAPI fragments: FHIR JSON request bodies and OperationOutcome error responses.

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

from typing import Any

from resources.models import resource_types

_RESOURCE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}},
    "additionalProperties": True,
}
_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {"type": "array", "items": {"type": "object", "required": ["severity", "code"], "properties": {
            "severity": {"type": "string"}, "code": {"type": "string"}, "diagnostics": {"type": "string"},
            "expression": {"type": "array", "items": {"type": "string"}}}}},
    },
}
_FHIR = "application/fhir+json"


def _outcome(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_FHIR: {"schema": _OUTCOME_SCHEMA}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _outcome("Bad request: the OperationOutcome names what is wrong"),
    404: _outcome("Unknown resource or resource type"),
    405: _outcome("Method not allowed"),
    406: _outcome("Not acceptable (only FHIR JSON is produced)"),
    409: _outcome("Version conflict"),
    410: _outcome("Resource deleted"),
    412: _outcome("Precondition failed (If-Match or conditional criteria)"),
    413: _outcome("Request body or bundle too large"),
    415: _outcome("Unsupported media type"),
    422: _outcome("Unprocessable resource (business rule)"),
    500: _outcome("Unexpected server fault"),
}
RESOURCE_OK: dict[int | str, dict[str, Any]] = {
    200: {"description": "The resource", "content": {_FHIR: {"schema": _RESOURCE_SCHEMA}}},
    201: {"description": "Created", "content": {_FHIR: {"schema": _RESOURCE_SCHEMA}}},
}
BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        _FHIR: {"schema": _RESOURCE_SCHEMA},
        "application/json": {"schema": _RESOURCE_SCHEMA},
        "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
    }},
}
PARAMETERS_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {_FHIR: {"schema": {
        "type": "object", "required": ["resourceType"],
        "properties": {"resourceType": {"const": "Parameters"}, "parameter": {"type": "array"}}}}}},
}
FORM_BODY: dict[str, Any] = {
    "requestBody": {"required": False, "content": {
        "application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": True}}}},
}


def describe_parameters(schema: dict[str, Any]) -> None:
    """Type the generic path parameters: resource types as an enum, ids and versions by the FHIR id rule."""
    types = sorted(resource_types())
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for param in operation.get("parameters", []):
                if param.get("in") != "path":
                    continue
                if param["name"] == "type":
                    param["schema"] = {"type": "string", "enum": types}
                elif param["name"] == "op":
                    param["schema"] = {"type": "string", "pattern": "^[a-z][A-Za-z0-9\\-]{0,63}$"}
                elif param["name"] in ("id", "vid"):
                    param["schema"] = {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"}


ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted: a Parameters resource describing the job; Content-Location says where to follow it",
          "content": {_FHIR: {"schema": _RESOURCE_SCHEMA}}},
}


def describe_fhir_media(schema: dict[str, Any]) -> None:
    """Every /fhir answer is application/fhir+json: replace the framework's default application/json."""
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/fhir"):
            continue
        for operation in item.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if "application/json" in content:
                    content.setdefault(_FHIR, content.pop("application/json"))


SCOPES = {
    "system/*.cruds": "Backend service: every interaction on every type",
    "system/*.rs": "Backend service: read and search every type",
    "user/*.cruds": "A signed-in user: what their role and the consents allow",
    "patient/*.rs": "A patient app: read and search within the patient's compartment",
    "launch/patient": "Ask for a patient context",
    "openid": "An id_token for the signed-in user",
    "fhirUser": "The signed-in user's FHIR resource in the id_token",
    "offline_access": "A refresh token",
}
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"


def _oauth_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}}}}}


def _form(*fields: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"required": True, "content": {_FORM: {"schema": {
        "type": "object", "required": list(required), "properties": {f: {"type": "string"} for f in fields}}}}}


def _json_doc(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {"type": "object"}}}}


def _auth_paths() -> dict[str, Any]:
    tag, public = ["SMART authorization"], {"security": []}
    query = [{"name": n, "in": "query", "required": n in ("response_type", "client_id", "redirect_uri"),
              "schema": {"type": "string"}} for n in ("response_type", "client_id", "redirect_uri", "scope", "state",
                                                       "aud", "code_challenge", "code_challenge_method", "launch")]
    return {
        "/fhir/.well-known/smart-configuration": {"get": {
            "tags": tag, "summary": "SMART configuration (discovery)", **public,
            "responses": {200: _json_doc("Endpoints, capabilities, scopes and PKCE methods of SMART App Launch")}}},
        "/.well-known/oauth-authorization-server": {"get": {
            "tags": tag, "summary": "OAuth authorization server metadata (RFC 8414)", **public,
            "responses": {200: _json_doc("The authorization server's metadata"), 404: _oauth_error("Auth is off")}}},
        "/auth/jwks": {"get": {
            "tags": tag, "summary": "The public keys that sign access and id tokens", **public,
            "responses": {200: _json_doc("A JWK Set"), 404: _oauth_error("Auth is off")}}},
        "/auth/authorize": {"get": {
            "tags": tag, "summary": "Authorization endpoint: sign in, approve scopes (authorization code, PKCE S256)",
            **public, "parameters": query,
            "responses": {200: {"description": "The sign-in page", "content": {"text/html": {}}},
                          302: {"description": "Back to redirect_uri with code and state, or an error"},
                          400: _oauth_error("A request that cannot be redirected: unknown client or redirect_uri")}}},
        "/auth/token": {"post": {
            "tags": tag, "summary": "Token endpoint: authorization_code, refresh_token and client_credentials",
            **public, "requestBody": _form("grant_type", "code", "redirect_uri", "code_verifier", "client_id",
                                           "refresh_token", "scope", "client_assertion_type", "client_assertion",
                                           required=("grant_type",)),
            "responses": {200: _json_doc("access_token, token_type, expires_in, scope (and refresh_token, "
                                         "id_token, patient as granted)"),
                          400: _oauth_error("invalid_request, invalid_grant, invalid_scope, ..."),
                          401: _oauth_error("invalid_client")}}},
        "/auth/introspect": {"post": {
            "tags": tag, "summary": "Token introspection (RFC 7662), for the token's client or a resource server",
            **public, "requestBody": _form("token", "token_type_hint", required=("token",)),
            "responses": {200: _json_doc("active, and the token's claims when active"),
                          401: _oauth_error("invalid_client")}}},
        "/auth/revoke": {"post": {
            "tags": tag, "summary": "Token revocation (RFC 7009)", **public,
            "requestBody": _form("token", "token_type_hint", required=("token",)),
            "responses": {200: {"description": "Revoked (or unknown: the answer is the same)"},
                          401: _oauth_error("invalid_client")}}},
        "/auth/launch": {"post": {
            "tags": tag, "summary": "Register an EHR launch context (an EHR client's system/ token)",
            "requestBody": {"required": True, "content": {_JSON: {"schema": {"type": "object"}}}},
            "responses": {200: _json_doc("The launch parameter"), 401: _oauth_error("No or a bad token"),
                          403: _oauth_error("Not an EHR client")}}},
    }


def describe_security(schema: dict[str, Any], fhir_base: str) -> None:
    """SMART on FHIR as the document's OAuth 2 scheme (the server's own /auth endpoints), and the auth paths."""
    origin = fhir_base.rstrip("/").removesuffix("/fhir")
    schema.setdefault("components", {})["securitySchemes"] = {"smart": {
        "type": "oauth2", "description": "SMART on FHIR: apps sign a user in (authorization code with PKCE S256; "
        "register a client whose redirect URI is this server's /docs/oauth2-redirect), backend services use "
        "client credentials (e.g. the development client careloop-dev and its secret)",
        "flows": {
            "authorizationCode": {"authorizationUrl": f"{origin}/auth/authorize", "tokenUrl": f"{origin}/auth/token",
                                  "refreshUrl": f"{origin}/auth/token", "scopes": SCOPES},
            "clientCredentials": {"tokenUrl": f"{origin}/auth/token", "scopes": SCOPES}}}}
    schema["security"] = [{"smart": []}]
    paths = schema.setdefault("paths", {})
    for public in ("/fhir/metadata",):  # needs no token
        for operation in paths.get(public, {}).values():
            operation["security"] = []
    paths.update(_auth_paths())
