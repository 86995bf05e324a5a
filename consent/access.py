"""Access decisions from SMART scopes: which interactions a token may make, and on which resources.

The order is SECURITY.md §1.6: an interaction no scope grants is refused (403) before any data is read; a
search is narrowed to what the scopes allow (patient compartment, granular `?param=value` filters) inside the
store query; a read of a resource outside that set answers exactly like a missing one (404).
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from consent.audit.redact import for_patient
from consent.ownership import OWNED_TYPE, OWNER_SYSTEM, masked, stamp_owner
from consent.patient_types import SERVER_WRITTEN, SHARED_READ_ONLY
from consent.scopes import ResourceScope
from resources.errors import FhirError, Forbidden
from resources.search.index import Indexer, IndexRows
from resources.search.match import NotEvaluable, matches
from resources.search.parse import SearchLimits, parse_search
from resources.search.query import Filter, ReferenceValue, SearchQuery, TokenValue
from resources.search.registry import SearchRegistry

COMPARTMENT = "_compartment"


@dataclass(frozen=True)
class Access:
    """Who is asking and what they were granted; `unrestricted` when authorization is off."""

    scopes: tuple[ResourceScope, ...] = ()
    patient: str | None = None
    client_id: str | None = None
    fhir_user: str | None = None
    unrestricted: bool = False
    # what the consent engine and the audit trail need of the caller (issues 28 and 29):
    # purposes of use granted (v3-ActReason codes such as TREAT, HRESCH, BTG), the user's roles (clinician,
    # trainee, auditor, support), the Organization the client or user acts for, whether the client is one of
    # the clinic's own systems (registered --ehr), the break-glass reason, the token id, the Consent that
    # records the patient's grant to this app, and whether the client may submit AuditEvents
    purposes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    organization: str | None = None
    clinic_system: bool = False
    btg_reason: str | None = None
    jti: str | None = field(default=None, compare=False)  # per token: no part of any decision
    grant: str | None = None
    audit_source: bool = False

    @cached_property
    def _hash(self) -> int:
        return hash((self.scopes, self.patient, self.client_id, self.fhir_user, self.unrestricted, self.purposes,
                     self.roles, self.organization, self.clinic_system, self.btg_reason, self.grant,
                     self.audit_source))

    def __hash__(self) -> int:
        # computed once: every decision of a request looks its cached answers up by the Access
        return self._hash


FULL_ACCESS = Access(unrestricted=True)


def _touched(filters: Iterable[Filter]) -> set[str]:
    """Resource types a chain or _has reaches: the caller must be allowed to search each."""
    out: set[str] = set()
    for flt in filters:
        for chained in flt.chain:
            out.add(chained.target_type)
            out |= _touched([chained.inner])
        if flt.has is not None:
            out.add(flt.has.source_type)
            out |= _touched([flt.has.inner])
    return out


class AccessPolicy:
    """Applies an Access to interactions, queries and resources."""

    def __init__(self, registry: SearchRegistry, indexer: Indexer, compartment: dict[str, tuple[str, ...]],
                 limits: SearchLimits) -> None:
        self._registry = registry
        self._indexer = indexer
        self._compartment_types = frozenset(compartment) | {"Patient"}
        self._limits = limits
        self.patient_shows_staff = "roles"  # how patients see staff in their audit events (consent/audit/redact.py)
        # an Access is immutable and the same for every request of one token: its groups are computed once
        self._group_cache: dict[tuple[Access, str, str], list[tuple[Filter, ...]] | None] = {}

    def in_compartment_type(self, resource_type: str) -> bool:
        """True when resources of this type can belong to a patient's compartment."""
        return resource_type in self._compartment_types

    def _patient_scope_reaches(self, resource_type: str, letter: str) -> bool:
        """The compartment rule of docs/security.md: what a `patient/` scope can reach at all, by type."""
        if resource_type in self._compartment_types:
            return letter in "rs" or resource_type not in SERVER_WRITTEN
        return resource_type == OWNED_TYPE or (letter in "rs" and resource_type in SHARED_READ_ONLY)

    def applicable(self, access: Access, resource_type: str, letter: str) -> list[ResourceScope]:
        """The granted scopes that allow `letter` on the type."""
        return [s for s in access.scopes if s.applies(resource_type, letter) and (
            s.context != "patient" or self._patient_scope_reaches(resource_type, letter))]

    def require(self, access: Access, resource_type: str, letter: str) -> None:
        """403 unless some scope grants the interaction on the type (decided before any data access)."""
        if resource_type in SERVER_WRITTEN and not access.unrestricted:
            self._require_audit(access, resource_type, letter)
        if access.unrestricted or self.applicable(access, resource_type, letter):
            return
        names = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
        raise Forbidden(f"The access token has no scope that allows {names[letter]} on {resource_type}",
                        code="forbidden")

    def _require_audit(self, access: Access, resource_type: str, letter: str) -> None:
        # the audit trail (issue 29, item 3): written by the server and by registered audit sources only; read by
        # auditors, by backend clients granted the type by name, and by a patient within their own compartment
        if letter == "c" and not access.audit_source:
            raise Forbidden(f"Only the server and registered audit sources write {resource_type}", code="forbidden")
        if letter not in "rs" or "auditor" in access.roles:
            return
        scopes = self.applicable(access, resource_type, letter)
        if scopes and all(s.context == "patient" for s in scopes):
            return
        if access.fhir_user is None and any(s.context == "system" and s.type == resource_type for s in scopes):
            return
        raise Forbidden(f"Reading {resource_type} needs the auditor role, a backend scope naming {resource_type}, "
                        f"or a patient's own context", code="forbidden")

    def patient_bound(self, access: Access, resource_type: str, letter: str) -> bool:
        """True when every applicable scope confines the token to its patient's compartment for this type."""
        scopes = self.applicable(access, resource_type, letter)
        return (not access.unrestricted and bool(scopes) and (
                self.in_compartment_type(resource_type) or resource_type == OWNED_TYPE)
                and all(s.context == "patient" for s in scopes))

    def _groups(self, access: Access, resource_type: str, letter: str) -> list[tuple[Filter, ...]] | None:
        """Alternatives (OR) of filters (AND) the scopes allow; None when one scope allows everything."""
        key = (access, resource_type, letter)
        if key not in self._group_cache:
            if len(self._group_cache) > 50_000:
                self._group_cache.clear()
            self._group_cache[key] = self._make_groups(access, resource_type, letter)
        return self._group_cache[key]

    def restricts(self, access: Access, resource_type: str, letter: str) -> bool:
        """True when what the scopes allow depends on the resource's content (compartment or filters)."""
        return not access.unrestricted and self._groups(access, resource_type, letter) is not None

    def _make_groups(self, access: Access, resource_type: str, letter: str) -> list[tuple[Filter, ...]] | None:
        groups: list[tuple[Filter, ...]] = []
        for scope in self.applicable(access, resource_type, letter):
            group: list[Filter] = []
            if scope.context == "patient" and self.in_compartment_type(resource_type):
                # a patient scope without a patient context reaches no compartment at all
                group.append(Filter(COMPARTMENT, "compartment", None,
                                    (ReferenceValue("Patient", access.patient or "\x00none"),)))
            elif scope.context == "patient" and resource_type == OWNED_TYPE:
                group.append(Filter("_tag", "token", None,
                                    (TokenValue(access.client_id or "\x00none", OWNER_SYSTEM, False),)))
            if scope.query:
                try:
                    parsed = parse_search(resource_type, scope.query, self._registry, self._limits, strict=True)
                except FhirError:  # a granular filter for another type (or malformed): it grants nothing here
                    continue
                group.extend(parsed.query.filters)
            if not group:
                return None
            groups.append(tuple(group))
        return groups

    def narrow(self, access: Access, query: SearchQuery) -> SearchQuery:
        """The query restricted to what the token may search; 403 for types or patients it may not touch."""
        if access.unrestricted:
            return query
        if query.is_system:
            return self._narrow_system(access, query)
        self.require(access, query.resource_type, "s")
        for touched in sorted(_touched(query.filters)):
            self.require(access, touched, "s")
        if self.patient_bound(access, query.resource_type, "s"):
            self._refuse_other_patients(access, query)
        query = self._narrow_hops(access, query)
        groups = self._groups(access, query.resource_type, "s")
        if groups is None:
            return query
        if len(groups) == 1:
            return replace(query, filters=query.filters + groups[0])
        return replace(query, filters=(*query.filters, Filter("_any", "any-of", None, (), any_of=tuple(groups))))

    def _narrow_system(self, access: Access, query: SearchQuery) -> SearchQuery:
        # across types, only scopes that reach every resource of each type: a patient or granular scope
        # would need a different narrowing per type, so the caller searches each type instead
        types = query.types or ("*",)
        for resource_type in types:
            unlimited = [s for s in access.scopes if "s" in s.letters and s.type in ("*", resource_type)
                         and not s.query and (s.context != "patient" or (
                             resource_type != "*" and resource_type in SHARED_READ_ONLY))]
            if not unlimited:
                raise Forbidden(f"A search across {'all types' if resource_type == '*' else resource_type} needs a "
                                f"search scope that is not limited to one patient or by filters; search each type "
                                f"instead", code="forbidden")
        for touched in sorted(_touched(query.filters)):
            self.require(access, touched, "s")
        return self._narrow_hops(access, query)

    def _narrow_hops(self, access: Access, query: SearchQuery) -> SearchQuery:
        """Chains and _has narrowed at every hop: each hop reaches only what the caller may search there."""
        if not any(f.chain or f.has is not None for f in query.filters):
            return query
        return replace(query, filters=tuple(self._hop(access, f) for f in query.filters))

    def _hop(self, access: Access, flt: Filter) -> Filter:
        if flt.chain:
            flt = replace(flt, chain=tuple(replace(c, inner=self._within(access, c.target_type, self._hop(
                access, c.inner))) for c in flt.chain))
        if flt.has is not None:
            flt = replace(flt, has=replace(flt.has, inner=self._within(access, flt.has.source_type, self._hop(
                access, flt.has.inner))))
        return flt

    def _within(self, access: Access, resource_type: str, inner: Filter) -> Filter:
        # the hop's own condition AND one of the caller's alternatives for that type (any-of of one group = AND)
        groups = self._groups(access, resource_type, "s")
        if groups is None:
            return inner
        return Filter("_any", "any-of", None, (), any_of=tuple((inner, *group) for group in groups))

    def _refuse_other_patients(self, access: Access, query: SearchQuery) -> None:
        # naming another patient explicitly is refused whether or not that patient exists (no existence oracle)
        for flt in query.filters:
            for value in flt.values:
                other = None
                if isinstance(value, ReferenceValue) and value.id and value.type in ("Patient", None):
                    targets = self._registry.for_type(query.resource_type).get(flt.code)
                    if value.type == "Patient" or (targets is not None and targets.targets == ("Patient",)):
                        other = value.id
                elif flt.code == "_id" and query.resource_type == "Patient" and isinstance(value, TokenValue):
                    other = value.code
                if other is not None and other != access.patient:
                    raise Forbidden(f"Parameter '{flt.code}' names a patient outside this token's patient context",
                                    code="forbidden", expression=(flt.code,))

    def visible(self, access: Access, resource_type: str, resource: dict[str, Any], letter: str) -> bool:
        """True when the scopes granting `letter` allow this resource (compartment and granular filters)."""
        if access.unrestricted:
            return True
        groups = self._groups(access, resource_type, letter)
        if groups is None:
            return True
        if not groups:
            return False
        rows = self._indexer.extract(resource_type, resource)
        return any(all(_matches(f, resource, rows) for f in group) for group in groups)

    def check_write(self, access: Access, resource_type: str, resource: dict[str, Any], letter: str) -> None:
        """403 unless the token may make this write with this content (its patient's compartment, its filters)."""
        self.require(access, resource_type, letter)
        if not self.visible(access, resource_type, resource, letter):
            raise Forbidden(f"The access token does not allow writing this {resource_type}: it would fall outside "
                            f"the patient context or the granted filters", code="forbidden")


def _matches(flt: Filter, resource: dict[str, Any], rows: IndexRows) -> bool:
    """An in-memory check of a granted filter; one that needs other resources grants nothing (fail closed)."""
    try:
        return matches(flt, resource, rows)
    except NotEvaluable:
        return False


@dataclass(frozen=True)
class BoundGuard:
    """An AccessPolicy applied to one request's Access (resources.guard.Guard)."""

    policy: AccessPolicy
    access: Access
    # Subscriptions: owned by the client that created them, headers masked (consent/ownership.py)
    stamped_types = frozenset({OWNED_TYPE})
    redacted_types = frozenset({OWNED_TYPE, *SERVER_WRITTEN})

    def stamp(self, resource_type: str, resource: dict[str, Any], current: dict[str, Any] | None) -> None:
        """Owner tag and kept secrets of a Subscription about to be written."""
        if resource_type == OWNED_TYPE:
            stamp_owner(resource, current, self.access.client_id)

    def redact(self, resource_type: str, body: bytes) -> bytes:
        """A Subscription or AuditEvent as this caller may see it."""
        if resource_type in SERVER_WRITTEN:
            if self.access.unrestricted or "auditor" in self.access.roles or not self.access.patient:
                return body
            return for_patient(body, self.access.patient, self.policy.patient_shows_staff)
        return masked(body, self.access.client_id) if resource_type == OWNED_TYPE else body

    def require(self, resource_type: str, letter: str) -> None:
        """403 unless granted."""
        self.policy.require(self.access, resource_type, letter)

    def narrow(self, query: SearchQuery) -> SearchQuery:
        """The narrowed query."""
        return self.policy.narrow(self.access, query)

    def visible(self, resource_type: str, resource: dict[str, Any], letter: str) -> bool:
        """Visibility of one resource."""
        return self.policy.visible(self.access, resource_type, resource, letter)

    def patient_bound(self, resource_type: str, letter: str) -> bool:
        """Confined to the token's patient."""
        return self.policy.patient_bound(self.access, resource_type, letter)

    def restricts(self, resource_type: str, letter: str) -> bool:
        """Whether visibility depends on content."""
        return self.policy.restricts(self.access, resource_type, letter)
