"""What an access token says about its caller beyond SMART: purposes of use, roles, organization, break-glass,
the grant it was issued under; the claims consent enforcement and the audit trail decide on.

https://profiles.ihe.net/ITI/IUA/index.html#3717112-jwt-ihe-iua-extension,
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from typing import Any

from server.auth.purposes import BREAK_GLASS, iua_extension
from server.auth.store import ClientRecord, UserRecord

GRANT_VERSION_CLAIM = "grant_version"  # the grant Consent's version the token was issued under (bookkeeping)


def caller_claims(client: ClientRecord, user: UserRecord | None, purposes: tuple[str, ...],
                  btg_reason: str | None, grant: str | None, grant_version: int | None) -> dict[str, Any]:
    """The CareLoop claims of an access token (absent ones are left out)."""
    claims: dict[str, Any] = {"purpose_of_use": list(purposes), "extensions": iua_extension(purposes)}
    if not claims["extensions"]:
        del claims["extensions"]
    if user is not None and user.roles:
        claims["roles"] = list(user.roles)
    # the signed-in user's own organization, else the one the client acts for
    organization = (user.organization if user is not None else None) or client.organization
    if organization:
        claims["organization"] = organization
    if client.ehr:
        claims["clinic_system"] = True
    if client.audit_source:
        claims["audit_source"] = True
    if btg_reason and BREAK_GLASS in purposes:
        claims["btg_reason"] = btg_reason
    if grant:
        claims["grant"] = grant
        claims[GRANT_VERSION_CLAIM] = grant_version or 0
    return claims
