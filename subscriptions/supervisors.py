"""Who supervises a Task's owner: the department head, from PractitionerRole and Organization data.

A department is an Organization; its head is an active PractitionerRole of that Organization coded
`task-escalation#supervisor`. The supervisor of a PractitionerRole is the head of its Organization (of a
head: the head of the parent department, Organization.partOf); of an Organization (or a CareTeam, through
its managingOrganization) its head; a department with no head hands up to its parent: that parent's head,
or the parent Organization itself. No Organization or no parent: no supervisor (the owner stays).
https://hl7.org/fhir/R4B/practitionerrole.html, https://hl7.org/fhir/R4B/organization.html
"""

from __future__ import annotations

from typing import Any

import orjson

from resources.errors import FhirError
from resources.repository import Repository
from resources.search.parse import parse_search

SUPERVISOR = "http://careloop.health/fhir/CodeSystem/task-escalation|supervisor"


async def _read(repository: Repository, reference: str) -> dict[str, Any] | None:
    kind, _, id_ = reference.partition("/")
    try:
        stored = await repository.read(kind, id_)
    except FhirError:
        return None
    found: dict[str, Any] = orjson.loads(stored.body or b"{}")
    return found


async def head_of(repository: Repository, organization: str, besides: str | None = None) -> str | None:
    """The department head of an Organization (the first active supervisor role by id), other than `besides`."""
    query = parse_search("PractitionerRole", [("organization", organization), ("role", SUPERVISOR),
                                              ("active", "true"), ("_sort", "_id"), ("_count", "2")],
                         repository.registry, strict=True).query
    for stored in (await repository.search(query)).resources:
        if f"PractitionerRole/{stored.id}" != besides:
            return f"PractitionerRole/{stored.id}"
    return None


def _ref(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) and "/" in ref else None


async def _above(repository: Repository, organization: str) -> str | None:
    """The hand-up from a department: its parent's head, or the parent Organization itself."""
    found = await _read(repository, organization)
    parent = _ref((found or {}).get("partOf"))
    if parent is None or parent == organization:
        return None
    return await head_of(repository, parent) or parent


async def supervisor_of(repository: Repository, owner: str) -> str | None:
    """The reference a Task owned by `owner` is handed to on escalation; None when there is no one above."""
    kind = owner.partition("/")[0]
    if kind == "PractitionerRole":
        role = await _read(repository, owner)
        organization = _ref((role or {}).get("organization"))
        if role is None or organization is None:
            return None
        is_head = any(c.get("system") + "|" + c.get("code") == SUPERVISOR for concept in role.get("code") or []
                      for c in concept.get("coding") or [] if c.get("system") and c.get("code"))
        if not is_head:
            head = await head_of(repository, organization, besides=owner)
            if head is not None:
                return head
        return await _above(repository, organization)
    if kind == "CareTeam":
        team = await _read(repository, owner)
        managing = [_ref(o) for o in (team or {}).get("managingOrganization") or []]
        organization = next((m for m in managing if m is not None), None)
        if organization is None:
            return None
        return await head_of(repository, organization) or await _above(repository, organization)
    if kind == "Organization":
        return await head_of(repository, owner) or await _above(repository, owner)
    return None
