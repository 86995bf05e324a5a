"""Roles, organizations and clinic systems in tokens (issue 28, items 8 and 9 need them; the audit trail too):
registered with the CLI, carried as claims, shown by introspection, and the same for every token (jti unique).

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html, https://www.rfc-editor.org/rfc/rfc9068
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.cli import main
from tests.auth.conftest import BASE, FHIR, REDIRECT, World

pytestmark = pytest.mark.anyio
USER_APP = "launch/patient openid fhirUser user/Patient.rs user/Observation.rs"


def claims(world: World, token: str) -> dict[str, Any]:
    found: dict[str, Any] = world.auth.signer.decode(token, "at+jwt", f"{BASE}/auth", FHIR)
    return found


async def _as(world: World, who: str, organization: str | None = None) -> dict[str, Any]:
    record, _ = world.auth.add_client("clinic app", "public", USER_APP, [REDIRECT], organization=organization)
    token = await world.authorize(record.client_id, USER_APP, who, patient=world.ids["alice"])
    return claims(world, token["access_token"])


async def test_a_practitioner_is_a_clinician_by_default_and_a_patient_has_no_role(world: World) -> None:
    assert (await _as(world, "drsmith"))["roles"] == ["clinician"]
    record, _ = world.auth.add_client("patient app", "public", "launch/patient openid patient/*.rs", [REDIRECT])
    alice = claims(world, (await world.authorize(record.client_id, "launch/patient openid patient/*.rs",
                                                 "alice"))["access_token"])
    assert "roles" not in alice and "organization" not in alice


async def test_registered_roles_and_the_users_organization_come_before_the_clients(world: World) -> None:
    world.auth.store.add_user("trainee", "secret", f"Practitioner/{world.ids['practitioner']}",
                              roles=("trainee",), organization="Organization/teaching")
    found = await _as(world, "trainee", organization="Organization/clinic")
    assert found["roles"] == ["trainee"] and found["organization"] == "Organization/teaching"
    # a user with no organization of their own acts for the client's
    assert (await _as(world, "drsmith", organization="Organization/clinic"))["organization"] == "Organization/clinic"


async def test_backend_clients_carry_organization_clinic_system_and_audit_source(world: World) -> None:
    record, secret = world.auth.add_client("EHR", "confidential-symmetric", "system/*.rs", [], ehr=True,
                                           organization="Organization/clinic", audit_source=True)
    response = await world.client.post("/auth/token", data={"grant_type": "client_credentials"},
                                       auth=(record.client_id, secret or ""))
    found = claims(world, response.json()["access_token"])
    assert found["organization"] == "Organization/clinic"
    assert found["clinic_system"] is True and found["audit_source"] is True and "roles" not in found
    plain = claims(world, await world.backend_token("system/*.rs"))
    assert "clinic_system" not in plain and "audit_source" not in plain and "organization" not in plain


async def test_every_token_has_its_own_jti(world: World) -> None:
    first = claims(world, await world.backend_token("system/*.rs"))["jti"]
    second = claims(world, await world.backend_token("system/*.rs"))["jti"]
    user = (await _as(world, "drsmith"))["jti"]
    assert len({first, second, user}) == 3 and all(isinstance(j, str) and len(j) >= 16 for j in (first, second, user))


async def test_introspection_shows_roles_and_organization(world: World) -> None:
    gateway, secret = world.auth.add_client("gateway", "confidential-symmetric", "system/*.rs", [],
                                            resource_server=True)
    world.auth.store.add_user("auditor", "secret", f"Practitioner/{world.ids['practitioner']}",
                              roles=("auditor", "support"), organization="Organization/compliance")
    record, _ = world.auth.add_client("compliance app", "public", USER_APP, [REDIRECT])
    token = await world.authorize(record.client_id, USER_APP, "auditor", patient=world.ids["alice"])
    answer = (await world.client.post("/auth/introspect", data={"token": token["access_token"]},
                                      auth=(gateway.client_id, secret or ""))).json()
    assert answer["active"] is True
    assert answer["roles"] == ["auditor", "support"] and answer["organization"] == "Organization/compliance"
    assert answer["purpose_of_use"] == ["TREAT"] and answer["jti"]


async def test_a_role_change_applies_to_the_next_token(world: World) -> None:
    scope = f"{USER_APP} offline_access"
    record, _ = world.auth.add_client("clinic app", "public", scope, [REDIRECT])
    token = await world.authorize(record.client_id, scope, "drsmith", patient=world.ids["alice"])
    world.auth.store.add_user("drsmith", "secret", f"Practitioner/{world.ids['practitioner']}", roles=("trainee",))
    refreshed = await world.client.post("/auth/token", data={"grant_type": "refresh_token", "client_id":
                                                             record.client_id, "refresh_token": token["refresh_token"]})
    assert claims(world, refreshed.json()["access_token"])["roles"] == ["trainee"]


def test_the_cli_registers_roles_organizations_and_entitlements(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.db")
    assert main(["users", "add", "dr", "--password", "p", "--fhir-user", "Practitioner/1", "--db", db]) == 0
    assert main(["users", "add", "pat", "--password", "p", "--fhir-user", "Patient/1", "--db", db]) == 0
    assert main(["users", "add", "tr", "--password", "p", "--fhir-user", "Practitioner/2", "--role", "trainee",
                 "--role", "support", "--organization", "Organization/o", "--break-glass", "--db", db]) == 0
    capsys.readouterr()
    assert main(["users", "list", "--json", "--db", db]) == 0
    users = {u["username"]: u for u in json.loads(capsys.readouterr().out)}
    assert users["dr"]["roles"] == ["clinician"] and users["pat"]["roles"] == []
    assert users["tr"]["roles"] == ["trainee", "support"] and users["tr"]["organization"] == "Organization/o"
    assert users["tr"]["break_glass"] is True and users["dr"]["break_glass"] is False
    assert main(["users", "list", "--db", db]) == 0
    assert any(line.startswith("tr ") and "roles=trainee,support" in line and "break-glass" in line
               for line in capsys.readouterr().out.splitlines())
    with pytest.raises(SystemExit):
        main(["users", "add", "x", "--password", "p", "--role", "admin", "--db", db])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["users", "add", "x", "--password", "p", "--organization", "Patient/1", "--db", db]) == 2
    assert "Organization/<id>" in capsys.readouterr().err
    assert main(["clients", "add", "--name", "ehr", "--type", "confidential-symmetric", "--scope", "system/*.rs",
                 "--ehr", "--organization", "Organization/o", "--audit-source", "--break-glass", "--json",
                 "--db", db]) == 0
    added = json.loads(capsys.readouterr().out)
    assert (added["organization"], added["audit_source"], added["break_glass"], added["ehr"]) == (
        "Organization/o", True, True, True)
    assert main(["clients", "add", "--name", "x", "--type", "public", "--scope", "patient/*.rs", "--organization",
                 "Organization/", "--db", db]) == 2
