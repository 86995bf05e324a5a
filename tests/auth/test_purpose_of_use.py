"""Purpose of use in tokens (issue 28, item 2): `__pou/<v3-ActReason>` scopes, a registered default per client,
a `purpose_of_use` claim (and IHE IUA's), shown by introspection and handed to the consent engine in Access.

https://terminology.hl7.org/ValueSet-v3-PurposeOfUse.html, https://profiles.ihe.net/ITI/IUA/index.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.auth import purposes as pou
from server.auth.visibility import access_of_claims
from server.cli import main
from tests.auth.conftest import BASE, FHIR, World

pytestmark = pytest.mark.anyio
APP = "launch/patient openid fhirUser patient/*.rs"


def claims(world: World, token: str) -> dict[str, Any]:
    found: dict[str, Any] = world.auth.signer.decode(token, "at+jwt", f"{BASE}/auth", FHIR)
    return found


@pytest.mark.parametrize(("requested", "registered", "break_glass", "expected"), [
    ((), ("TREAT",), False, ("TREAT",)),
    ((), ("TREAT", "HOPERAT"), False, ("TREAT", "HOPERAT")),
    (("HOPERAT",), ("TREAT", "HOPERAT"), False, ("HOPERAT",)),
    (("HOPERAT", "HOPERAT"), ("HOPERAT",), False, ("HOPERAT",)),
    (("BTG",), ("TREAT",), True, ("BTG",)),
    (("TREAT", "BTG"), ("TREAT",), True, ("TREAT", "BTG")),
    ((), ("TREAT",), True, ("TREAT",)),  # break-glass is never a default
])
def test_choose_allowed(requested: tuple[str, ...], registered: tuple[str, ...], break_glass: bool,
                        expected: tuple[str, ...]) -> None:
    assert pou.choose(requested, registered, break_glass) == expected


@pytest.mark.parametrize(("requested", "registered", "break_glass", "message"), [
    (("HRESCH",), ("TREAT",), False, "not registered"),
    (("BTG",), ("TREAT",), False, "not registered"),
    (("NOPE",), ("TREAT",), True, "not a v3-ActReason"),
    (("",), ("TREAT",), False, "not a v3-ActReason"),
    (("treat",), ("TREAT",), False, "not a v3-ActReason"),  # codes are case-sensitive
])
def test_choose_refused(requested: tuple[str, ...], registered: tuple[str, ...], break_glass: bool,
                        message: str) -> None:
    with pytest.raises(pou.PurposeError, match=message):
        pou.choose(requested, registered, break_glass)


@pytest.mark.parametrize(("scope", "rest", "codes"), [
    ("patient/*.rs __pou/TREAT openid", ["patient/*.rs", "openid"], ["TREAT"]),
    ("__pou/HRESCH __pou/TREAT __pou/HRESCH", [], ["HRESCH", "TREAT"]),
    ("openid", ["openid"], []),
    ("", [], []),
])
def test_split(scope: str, rest: list[str], codes: list[str]) -> None:
    assert pou.split(scope) == (rest, codes)


@pytest.mark.parametrize(("codes", "ok"), [(("TREAT",), True), (("HPAYMT", "PUBHLTH"), True), (("BTG",), False),
                                            (("XYZ",), False)])
def test_registration(codes: tuple[str, ...], ok: bool) -> None:
    if ok:
        assert pou.check_registration(codes) == codes
    else:
        with pytest.raises(pou.PurposeError):
            pou.check_registration(codes)


def test_the_access_consent_decides_on_is_built_from_the_claims() -> None:
    access = access_of_claims({"scope": "user/*.rs", "client_id": "c", "fhirUser": "Practitioner/p",
                               "purpose_of_use": ["TREAT", 7], "roles": ["clinician"], "organization": "Organization/o",
                               "clinic_system": True, "btg_reason": "r", "jti": "j", "grant": "Consent/g",
                               "audit_source": "yes"}, frozenset({"Patient"}))
    assert access is not None
    assert (access.purposes, access.roles, access.organization, access.clinic_system, access.btg_reason, access.jti,
            access.grant, access.audit_source) == (("TREAT",), ("clinician",), "Organization/o", True, "r", "j",
                                                   "Consent/g", False)
    assert access_of_claims({"scope": "nonsense/x"}, frozenset()) is None


async def test_a_backend_token_gets_the_registered_default(world: World) -> None:
    token = await world.backend_token("system/*.rs")
    found = claims(world, token)
    assert found["purpose_of_use"] == ["TREAT"]
    assert found["extensions"] == {"ihe_iua": {"purpose_of_use": {"system": pou.SYSTEM, "code": "TREAT"}}}
    assert found["jti"]


async def _backend(world: World, scope: str, purposes: tuple[str, ...] = ("TREAT",)) -> Any:
    record, secret = world.auth.add_client("backend", "confidential-symmetric", "system/*.rs", [], purposes=purposes)
    return await world.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": scope},
                                   auth=(record.client_id, secret or ""))


async def test_a_backend_asks_for_a_registered_purpose(world: World) -> None:
    response = await _backend(world, "system/Patient.rs __pou/HOPERAT", ("TREAT", "HOPERAT"))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.rs __pou/HOPERAT"
    found = claims(world, response.json()["access_token"])
    assert found["purpose_of_use"] == ["HOPERAT"]
    # only the purpose: the client's default system/ scopes
    alone = await _backend(world, "__pou/HOPERAT", ("HOPERAT",))
    assert alone.status_code == 200 and claims(world, alone.json()["access_token"])["purpose_of_use"] == ["HOPERAT"]


@pytest.mark.parametrize("scope", ["system/*.rs __pou/HMARKT", "system/*.rs __pou/NOPE", "system/*.rs __pou/"])
async def test_a_backend_asking_for_another_purpose_is_refused(world: World, scope: str) -> None:
    response = await _backend(world, scope)
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope", response.text


async def test_an_app_gets_the_default_or_a_registered_purpose_and_nothing_else(world: World) -> None:
    record, _ = world.auth.add_client("research app", "public", APP, ["http://localhost:9999/callback"],
                                      purposes=("TREAT", "HRESCH"))
    default = await world.authorize(record.client_id, APP, "alice")
    assert default["scope"] == APP
    assert claims(world, default["access_token"])["purpose_of_use"] == ["TREAT", "HRESCH"]
    research = await world.authorize(record.client_id, f"{APP} __pou/HRESCH", "alice")
    assert claims(world, research["access_token"])["purpose_of_use"] == ["HRESCH"]
    assert "__pou/HRESCH" in research["scope"].split()
    for scope in (f"{APP} __pou/HMARKT", f"{APP} __pou/WHATEVER"):
        refused = await world.client.get("/auth/authorize", params={
            "response_type": "code", "client_id": record.client_id, "redirect_uri": "http://localhost:9999/callback",
            "scope": scope, "state": "s", "aud": FHIR, "code_challenge": "x" * 43, "code_challenge_method": "S256"})
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope", refused.text
        assert "location" not in refused.headers


async def test_refreshing_keeps_the_purposes(world: World) -> None:
    scope = f"{APP} offline_access __pou/HRESCH"
    record, _ = world.auth.add_client("app", "public", scope, ["http://localhost:9999/callback"],
                                      purposes=("HRESCH",))
    token = await world.authorize(record.client_id, scope, "alice")
    refreshed = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id":
                                                             record.client_id, "refresh_token": token["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert claims(world, refreshed.json()["access_token"])["purpose_of_use"] == ["HRESCH"]


async def test_introspection_shows_the_purposes(world: World) -> None:
    record, secret = world.auth.add_client("gateway", "confidential-symmetric", "system/*.rs", [],
                                           resource_server=True, purposes=("HPAYMT",))
    token = (await world.client.post("/auth/token", data={"grant_type": "client_credentials"},
                                     auth=(record.client_id, secret or ""))).json()["access_token"]
    answer = (await world.client.post("/auth/introspect", data={"token": token},
                                      auth=(record.client_id, secret or ""))).json()
    assert answer["active"] is True and answer["purpose_of_use"] == ["HPAYMT"]
    assert "grant_version" not in answer and "family" not in answer


async def test_discovery_lists_the_purpose_scopes(world: World) -> None:
    supported = (await world.client.get("/fhir/.well-known/smart-configuration")).json()["scopes_supported"]
    assert {"__pou/TREAT", "__pou/ETREAT", "__pou/HPAYMT", "__pou/HOPERAT", "__pou/HRESCH", "__pou/HMARKT",
            "__pou/PUBHLTH", "__pou/BTG"} <= set(supported)


def test_the_cli_registers_purposes_with_treat_as_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.db")
    assert main(["clients", "add", "--name", "plain", "--type", "public", "--scope", APP, "--json", "--db", db]) == 0
    assert json.loads(capsys.readouterr().out)["purposes"] == ["TREAT"]
    assert main(["clients", "add", "--name", "payer", "--type", "confidential-symmetric", "--scope", "system/*.rs",
                 "--purpose", "HPAYMT", "--purpose", "HOPERAT", "--json", "--db", db]) == 0
    assert json.loads(capsys.readouterr().out)["purposes"] == ["HPAYMT", "HOPERAT"]
    assert main(["clients", "list", "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("plain" in line and "purposes=TREAT" in line for line in lines)
    assert any("payer" in line and "purposes=HPAYMT,HOPERAT" in line for line in lines)
    for bad in ("NOPE", "BTG"):
        assert main(["clients", "add", "--name", "x", "--type", "public", "--scope", APP, "--purpose", bad,
                     "--db", db]) == 2
        assert "error:" in capsys.readouterr().err
