"""OAuth flows with real signed JWTs: authorization code + PKCE, launches, OpenID, refresh, backend services,
introspection and revocation (SECURITY.md §1 and cases 28 to 37).

https://hl7.org/fhir/smart-app-launch/app-launch.html, https://hl7.org/fhir/smart-app-launch/backend-services.html
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from tests.auth.conftest import BASE, FHIR, REDIRECT, World, challenge

pytestmark = pytest.mark.anyio
TOKEN_URL = f"{BASE}/auth/token"
PATIENT_APP = "launch/patient openid fhirUser offline_access patient/*.rs"


def claims_of(world: World, token: str, typ: str = "at+jwt") -> dict[str, Any]:
    """Claims of a token verified with the server's published JWKS."""
    keys = KeySet.import_key_set(world.auth.signer.jwks())
    decoded = jwt.decode(token, keys, algorithms=["RS256"])
    assert decoded.header["typ"] == typ
    return dict(decoded.claims)


async def test_standalone_patient_launch_with_openid_and_offline_access(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    token = await world.authorize(client_id, PATIENT_APP, "alice")
    assert token["patient"] == world.ids["alice"]
    assert token["token_type"] == "Bearer" and token["expires_in"] <= 3600
    assert set(token["scope"].split()) == set(PATIENT_APP.split())
    access = claims_of(world, token["access_token"])
    assert access["aud"] == FHIR and access["iss"] == f"{BASE}/auth" and access["patient"] == world.ids["alice"]
    assert access["exp"] - access["iat"] <= 3600
    identity = claims_of(world, token["id_token"], "JWT")
    assert identity["aud"] == client_id and identity["fhirUser"] == f"Patient/{world.ids['alice']}"
    assert identity["sub"] == "alice"
    assert token["refresh_token"]
    read = await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=world.bearer(token["access_token"]))
    assert read.status_code == 200


async def test_practitioner_picks_the_patient_in_a_standalone_launch(world: World) -> None:
    # the picker offers the patients the app may read (issue 27 item 9): it asks for Patient read
    scope = "launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs"
    client_id, _ = world.app_client(scope)
    token = await world.authorize(client_id, scope, "drsmith", patient=world.ids["bob"])
    assert token["patient"] == world.ids["bob"] and token["need_patient_banner"] is True
    assert "refresh_token" not in token  # neither offline_access nor online_access was asked for
    found = await world.client.get("/fhir/Observation", headers=world.bearer(token["access_token"]))
    assert {e["resource"]["id"] for e in found.json()["entry"]} == {world.ids["bob_vital"]}


async def test_ehr_launch_carries_patient_and_encounter(world: World) -> None:
    record, secret = world.auth.add_client("EHR", "confidential-symmetric", "system/*.rs", [], ehr=True)
    ehr = (await world.client.post(TOKEN_URL, data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                                   auth=(record.client_id, secret or ""))).json()["access_token"]
    launch = await world.client.post("/auth/launch", data={"patient": world.ids["alice"],
                                                           "encounter": world.ids["alice_enc"]},
                                     headers=world.bearer(ehr))
    assert launch.status_code == 201
    scope = "launch openid fhirUser user/*.rs"
    client_id, secret = world.app_client(scope, "confidential-symmetric")
    token = await world.authorize(client_id, scope, "drsmith", extra={"launch": launch.json()["launch"]},
                                  secret=secret)
    assert token["patient"] == world.ids["alice"] and token["encounter"] == world.ids["alice_enc"]
    unknown = await world.client.get("/auth/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope, "aud": FHIR,
        "state": "x", "launch": "nope", "code_challenge": challenge("v" * 50), "code_challenge_method": "S256"})
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_request"


async def test_wrong_password_shows_the_sign_in_page_again(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": PATIENT_APP,
              "state": "s", "aud": FHIR, "code_challenge": challenge("v" * 50), "code_challenge_method": "S256"}
    response = await world.client.post("/auth/authorize", data={**params, "username": "alice", "password": "no"})
    assert response.status_code == 401 and "Wrong user name or password" in response.text
    assert "location" not in response.headers


async def test_case_28_refresh_rotates_and_reuse_revokes_the_family(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    first = await world.authorize(client_id, PATIENT_APP, "alice")
    refreshed = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                             "refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != first["refresh_token"] and second["patient"] == world.ids["alice"]
    reused = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                          "refresh_token": first["refresh_token"]})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # the reuse revoked the whole family: the newest refresh token is dead too
    after = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                         "refresh_token": second["refresh_token"]})
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"


async def test_case_29_refresh_with_a_broader_scope_is_refused(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP + " patient/*.cruds")
    first = await world.authorize(client_id, PATIENT_APP, "alice")
    response = await world.client.post("/auth/token", data={
        "grant_type": "refresh_token", "client_id": client_id, "refresh_token": first["refresh_token"],
        "scope": PATIENT_APP + " patient/*.cruds"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"
    narrower = await world.client.post("/auth/token", data={
        "grant_type": "refresh_token", "client_id": client_id, "refresh_token": first["refresh_token"],
        "scope": "patient/*.rs offline_access"})
    assert narrower.status_code == 200 and narrower.json()["scope"] == "patient/*.rs offline_access"


async def test_case_30_codes_are_single_use_and_bound_to_their_client(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    other_id, _ = world.app_client(PATIENT_APP)
    code, verifier = await world.code(client_id, PATIENT_APP, "alice")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    stolen = await world.client.post("/auth/token", data={**form, "client_id": other_id})
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert (await world.client.post("/auth/token", data={**form, "client_id": client_id})).status_code == 200
    replay = await world.client.post("/auth/token", data={**form, "client_id": client_id})
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("pkce", [{}, {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
                                  {"code_challenge": challenge("v" * 50)}])
async def test_case_31_authorize_without_s256_pkce_gets_no_code(world: World, pkce: dict[str, str]) -> None:
    client_id, secret = world.app_client(PATIENT_APP, "confidential-symmetric")  # confidential clients too
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": PATIENT_APP,
              "state": "s", "aud": FHIR, **pkce}
    response = await world.client.post("/auth/authorize", data={**params, "username": "alice",
                                                                "password": "secret"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert "location" not in response.headers


@pytest.mark.parametrize("verifier", ["", "wrong" * 10, "CHALLENGE"])
async def test_case_32_wrong_or_missing_verifier(world: World, verifier: str) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    code, good = await world.code(client_id, PATIENT_APP, "alice")
    sent = challenge(good) if verifier == "CHALLENGE" else verifier
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id}
    if sent:
        form["code_verifier"] = sent
    response = await world.client.post("/auth/token", data=form)
    assert response.status_code == 400 and response.json()["error"] in ("invalid_grant", "invalid_request")


@pytest.mark.parametrize("redirect", [
    "http://localhost:9999/other", "http://localhost:9999/callback/", "http://localhost:9999/CALLBACK",
    "http://localhost:9999/callback?x=1", "https://app@evil.example/callback", "http://localhost:9999/callbac"])
async def test_case_33_unregistered_redirects_are_never_followed(world: World, redirect: str) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    response = await world.client.get("/auth/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect, "scope": PATIENT_APP,
        "state": "s", "aud": FHIR, "code_challenge": challenge("v" * 50), "code_challenge_method": "S256"})
    assert response.status_code == 400 and "error" in response.json()
    assert "location" not in response.headers


async def test_case_34_token_redirect_must_match(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    code, verifier = await world.code(client_id, PATIENT_APP, "alice")
    response = await world.client.post("/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": "http://localhost:9999/elsewhere",
        "client_id": client_id, "code_verifier": verifier})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("aud", [None, "http://localhost:8080/other/fhir", "https://evil.example/fhir"])
async def test_case_35_authorize_for_another_audience_gets_no_code(world: World, aud: str | None) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": PATIENT_APP,
              "state": "s", "code_challenge": challenge("v" * 50), "code_challenge_method": "S256",
              **({"aud": aud} if aud else {})}
    response = await world.client.post("/auth/authorize", data={**params, "username": "alice",
                                                                "password": "secret"})
    assert response.status_code == 400 and "aud" in response.json()["error_description"]


def _assertion(key: Any, client_id: str, alg: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 240, "jti": str(uuid.uuid4())}
    header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
    for name, value in overrides.items():
        if name.startswith("h_"):
            if value is None:
                header.pop(name[2:], None)
            else:
                header[name[2:]] = value
        else:
            claims[name] = value
    return jwt.encode(header, claims, key, algorithms=[header["alg"]])


@pytest.fixture(params=["RS384", "ES384"])
def backend_key(request: pytest.FixtureRequest) -> tuple[Any, str]:
    if request.param == "RS384":
        return RSAKey.generate_key(2048, auto_kid=True), "RS384"
    return ECKey.generate_key("P-384", auto_kid=True), "ES384"


async def test_backend_services_with_a_fresh_key(world: World, backend_key: tuple[Any, str]) -> None:
    key, alg = backend_key
    record, _ = world.auth.add_client("device vendor", "confidential-asymmetric", "system/Observation.cruds",
                                      [], jwks={"keys": [key.as_dict(private=False)]})
    form = {"grant_type": "client_credentials", "scope": "system/Observation.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _assertion(key, record.client_id, alg)}
    response = await world.client.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["expires_in"] <= 300 and "refresh_token" not in token
    assert token["scope"] == "system/Observation.rs"
    found = await world.client.get("/fhir/Observation", headers=world.bearer(token["access_token"]))
    assert found.status_code == 200 and len(found.json()["entry"]) == 3
    patients = await world.client.get("/fhir/Patient", headers=world.bearer(token["access_token"]))
    assert patients.status_code == 403


@pytest.mark.parametrize("change", ["rs256", "none_alg", "long_exp", "wrong_aud", "iss_sub", "replay", "unknown",
                                    "bad_type", "jku", "no_kid", "other_key"])
async def test_case_36_bad_client_assertions(world: World, change: str) -> None:
    key = RSAKey.generate_key(2048, auto_kid=True)
    record, _ = world.auth.add_client("device vendor", "confidential-asymmetric", "system/*.rs", [],
                                      jwks={"keys": [key.as_dict(private=False)]})
    cid = record.client_id
    assertion = {
        "rs256": lambda: _assertion(key, cid, "RS256"),
        "none_alg": lambda: ".".join(_assertion(key, cid, "RS384").split(".")[:1]) + ".e30.",
        "long_exp": lambda: _assertion(key, cid, "RS384", exp=int(time.time()) + 3600),
        "wrong_aud": lambda: _assertion(key, cid, "RS384", aud="https://other.example/token"),
        "iss_sub": lambda: _assertion(key, cid, "RS384", iss="someone-else"),
        "replay": lambda: _assertion(key, cid, "RS384", jti="same-jti"),
        "unknown": lambda: _assertion(key, "no-such-client", "RS384"),
        "bad_type": lambda: _assertion(key, cid, "RS384"),
        "jku": lambda: _assertion(key, cid, "RS384", h_jku="https://evil.example/jwks"),
        "no_kid": lambda: _assertion(key, cid, "RS384", h_kid=None),
        "other_key": lambda: _assertion(RSAKey.generate_key(2048, auto_kid=True), cid, "RS384"),
    }[change]
    form = {"grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    if change == "bad_type":
        form["client_assertion_type"] = "urn:example:other"
    if change == "replay":
        first = await world.client.post("/auth/token", data={**form, "client_assertion": assertion()})
        assert first.status_code == 200
    response = await world.client.post("/auth/token", data={**form, "client_assertion": assertion()})
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == "invalid_client"


async def test_case_37_backend_scope_beyond_its_preauthorization(world: World) -> None:
    record, secret = world.auth.add_client("backend", "confidential-symmetric", "system/Observation.rs", [])
    for scope in ("system/Patient.rs", "system/Observation.cruds", "patient/Observation.rs"):
        response = await world.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": scope},
                                           auth=(record.client_id, secret or ""))
        assert response.status_code == 400 and response.json()["error"] == "invalid_scope", scope
    wrong_secret = await world.client.post("/auth/token", data={"grant_type": "client_credentials",
                                                                "scope": "system/Observation.rs"},
                                           auth=(record.client_id, "nope"))
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"


async def test_introspection_and_revocation(world: World) -> None:
    client_id, _ = world.app_client(PATIENT_APP)
    token = await world.authorize(client_id, PATIENT_APP, "alice")
    # a resource server introspects any token with its own client_credentials token (issue 27 item 4)
    record, secret = world.auth.add_client("gateway", "confidential-symmetric", "system/*.rs", [],
                                           resource_server=True)
    caller = (await world.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                                      auth=(record.client_id, secret or ""))).json()["access_token"]
    answer = (await world.client.post("/auth/introspect", data={"token": token["access_token"]},
                                      headers=world.bearer(caller))).json()
    assert answer["active"] is True and answer["client_id"] == client_id and answer["patient"] == world.ids["alice"]
    assert answer["scope"] == token["scope"] and answer["exp"] > time.time()
    assert answer["fhirUser"] == f"Patient/{world.ids['alice']}" and answer["sub"] == "alice"
    unauthenticated = await world.client.post("/auth/introspect", data={"token": token["access_token"]})
    assert unauthenticated.status_code == 401
    revoked = await world.client.post("/auth/revoke", data={"token": token["access_token"], "client_id": client_id})
    assert revoked.status_code == 200
    after = (await world.client.post("/auth/introspect", data={"token": token["access_token"]},
                                     headers=world.bearer(caller))).json()
    assert after == {"active": False}
    # case 27: a revoked access token no longer reaches the API
    read = await world.client.get(f"/fhir/Patient/{world.ids['alice']}", headers=world.bearer(token["access_token"]))
    assert read.status_code == 401
    await world.client.post("/auth/revoke", data={"token": token["refresh_token"], "client_id": client_id})
    refresh = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                           "refresh_token": token["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    garbage = (await world.client.post("/auth/introspect", data={"token": "garbage"},
                                       headers=world.bearer(caller))).json()
    assert garbage == {"active": False}


async def test_plain_http_to_a_public_host_is_refused_not_crashed(world: World) -> None:
    insecure = world.client.base_url.copy_with(host="clinic.example")
    response = await world.client.post(str(insecure.join("/auth/token")), data={"grant_type": "client_credentials"})
    assert response.status_code == 400 and response.json()["error"] == "insecure_transport"
    page = await world.client.get(str(insecure.join("/auth/authorize")), params={"client_id": "x"})
    assert page.status_code == 400 and page.json()["error"] == "insecure_transport"
