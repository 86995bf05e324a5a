"""EHR launch contexts: who may register one, and which patient and encounter it may name.

Only the EHR context creates launches: a clinician (fhirUser Practitioner or PractitionerRole) holding `user/`
scopes, or a backend client registered as an EHR (`clients add --ehr`) holding `system/` scopes. The patient
and encounter must be readable with the creator's own token. https://hl7.org/fhir/smart-app-launch/app-launch.html
"""

from __future__ import annotations

from typing import Any

from server.auth.service import AuthService
from server.auth.visibility import access_of_claims, read_as
from server.context import Services

CLINICIANS = ("Practitioner/", "PractitionerRole/")


def fhir_user_of(auth: AuthService, claims: dict[str, Any]) -> str | None:
    """The token's fhirUser: its claim, else the signed-in user's (an app granted no `fhirUser` scope)."""
    claimed = claims.get("fhirUser")
    if isinstance(claimed, str):
        return claimed
    subject = claims.get("sub")
    # a backend token's subject is its client: only a user's token names a user
    if not isinstance(subject, str) or subject == claims.get("client_id"):
        return None
    user = auth.store.user(subject)
    return user.fhir_user if user else None


def may_create_launch(auth: AuthService, claims: dict[str, Any]) -> bool:
    """True for a clinician's `user/` token and for the `system/` token of a client registered as an EHR."""
    scopes = str(claims.get("scope", "")).split()
    if any(s.startswith("user/") for s in scopes) and (fhir_user_of(auth, claims) or "").startswith(CLINICIANS):
        return True
    if any(s.startswith("system/") for s in scopes):
        record = auth.store.client(str(claims.get("client_id", "")))
        return bool(record and record.ehr)
    return False


def _names(reference: Any, resource_type: str, id_: str) -> bool:
    text = reference.get("reference") if isinstance(reference, dict) else None
    return isinstance(text, str) and (text == f"{resource_type}/{id_}" or text.endswith(f"/{resource_type}/{id_}"))


async def context_visible(services: Services, auth: AuthService, claims: dict[str, Any], patient: str,
                          encounter: str | None) -> bool:
    """True when the creator may read the patient and the encounter, and the encounter is that patient's."""
    access = access_of_claims(claims, auth.known_types)
    if access is None or await read_as(services, access, "Patient", patient) is None:
        return False
    if encounter is None:
        return True
    found = await read_as(services, access, "Encounter", encounter)
    return found is not None and _names(found.get("subject"), "Patient", patient)
