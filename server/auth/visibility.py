"""Reads and searches made by the authorization server on a caller's behalf, through the FHIR API's own guard.

The launch endpoint and the patient picker decide what a person or client may see exactly as the FHIR API
would for the same scopes, so neither becomes a way around them.
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from typing import Any

import orjson

from consent.access import Access, BoundGuard
from consent.scopes import ScopeError, parse_scopes
from resources.errors import FhirError
from resources.guard import GUARD
from resources.search.query import SearchQuery
from resources.store.protocol import StoredResource
from server.context import Services


def access_of_claims(claims: dict[str, Any], known_types: frozenset[str]) -> Access | None:
    """The Access an access token's claims give, as the bearer check builds it; None for a malformed scope."""
    try:
        resources, _ = parse_scopes(str(claims.get("scope", "")), known_types)
    except ScopeError:
        return None
    roles = _roles(claims.get("roles"))
    if roles is None:
        return None

    def text(key: str) -> str | None:
        value = claims.get(key)
        return value if isinstance(value, str) else None

    def texts(key: str) -> tuple[str, ...]:
        value = claims.get(key)
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

    return Access(resources, text("patient"), text("client_id"), text("fhirUser"),
                  purposes=texts("purpose_of_use"), roles=roles, organization=text("organization"),
                  clinic_system=claims.get("clinic_system") is True, btg_reason=text("btg_reason"),
                  jti=text("jti"), grant=text("grant"), audit_source=claims.get("audit_source") is True)


def _roles(value: Any) -> tuple[str, ...] | None:
    """The user's roles from the `roles` claim (a JSON array; a space-separated string too); None if unreadable.

    Roles narrow what a user sees (a trainee's de-identified view): unreadable ones must not widen it.
    """
    names = value.split() if isinstance(value, str) else [] if value is None else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return tuple(sorted({n for n in names if n}))


async def read_as(services: Services, access: Access, resource_type: str, id_: str) -> dict[str, Any] | None:
    """The resource when it exists and this access may read it; None otherwise (whatever the reason)."""
    token = GUARD.set(BoundGuard(services.policy, access))
    try:
        found = await services.repository.read(resource_type, id_)
    except FhirError:
        return None
    finally:
        GUARD.reset(token)
    parsed: dict[str, Any] = orjson.loads(found.body or b"{}")
    return parsed


async def search_as(services: Services, access: Access, query: SearchQuery) -> list[StoredResource]:
    """The matches this access may see (none when it may not search the type)."""
    token = GUARD.set(BoundGuard(services.policy, access))
    try:
        return list((await services.repository.search(query)).resources)
    except FhirError:
        return []
    finally:
        GUARD.reset(token)
