"""SMART discovery, OAuth metadata, JWKS and the CapabilityStatement's security section.

https://hl7.org/fhir/smart-app-launch/conformance.html
"""

from __future__ import annotations

import pytest

from tests.auth.conftest import BASE, FHIR, World

pytestmark = pytest.mark.anyio


async def test_smart_configuration(world: World) -> None:
    response = await world.client.get("/fhir/.well-known/smart-configuration", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["access-control-allow-origin"] == "*"
    found = response.json()
    assert found["code_challenge_methods_supported"] == ["S256"]
    assert found["token_endpoint"] == f"{BASE}/auth/token"
    assert found["authorization_endpoint"] == f"{BASE}/auth/authorize"
    assert found["issuer"] == f"{BASE}/auth" and found["jwks_uri"] == f"{BASE}/auth/jwks"
    assert {"authorization_code", "client_credentials", "refresh_token"} == set(found["grant_types_supported"])
    assert {"RS384", "ES384"} <= set(found["token_endpoint_auth_signing_alg_values_supported"])
    assert {"launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
            "client-confidential-asymmetric", "sso-openid-connect", "context-ehr-patient",
            "context-standalone-patient", "permission-patient", "permission-user", "permission-offline",
            "permission-v1", "permission-v2"} <= set(found["capabilities"])
    assert all(v.startswith("http") for k, v in found.items() if k.endswith("_endpoint") or k == "jwks_uri")


async def test_oauth_metadata_and_jwks(world: World) -> None:
    metadata = (await world.client.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["introspection_endpoint"] == f"{BASE}/auth/introspect"
    assert metadata["revocation_endpoint"] == f"{BASE}/auth/revoke"
    keys = (await world.client.get("/auth/jwks")).json()["keys"]
    assert keys and all(k["kty"] == "RSA" and "d" not in k and k["kid"] for k in keys)


async def test_capability_statement_names_smart_and_its_endpoints(world: World) -> None:
    response = await world.client.get("/fhir/metadata")  # public: no token
    assert response.status_code == 200
    security = response.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris == {"authorize": f"{BASE}/auth/authorize", "token": f"{BASE}/auth/token",
                    "introspect": f"{BASE}/auth/introspect", "revoke": f"{BASE}/auth/revoke"}
    assert FHIR.endswith("/fhir")
