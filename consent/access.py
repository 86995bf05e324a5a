"""Access decisions from SMART scopes: which interactions a token may make, and on which resources.

The order is SECURITY.md §1.6: an interaction no scope grants is refused (403) before any data is read; a
search is narrowed to what the scopes allow (patient compartment, granular `?param=value` filters) inside the
store query; a read of a resource outside that set answers exactly like a missing one (404).
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from consent.audit.redact import for_patient
from consent.deidentify import deidentified_bytes
from consent.deidentify_profile import Profile, shipped_profile
from consent.deidentify_search import refuse_identifying
from consent.ownership import OWNED_TYPE, OWNER_SYSTEM, masked, stamp_owner
from consent.patient_types import SERVER_WRITTEN, SHARED_READ_ONLY
from consent.scopes import ResourceScope
from resources.elements import resource_type_names
from resources.errors import FhirError, Forbidden
from resources.search.index import Indexer, IndexRows
from resources.search.match import NotEvaluable, matches
from resources.search.parse import SearchLimits, parse_search
from resources.search.query import Filter, ReferenceValue, SearchQuery, TokenValue
from resources.search.registry import SearchRegistry

if TYPE_CHECKING:
    from consent.enforce import ConsentEnforcer

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
                 limits: SearchLimits, *, deidentify: Profile | None = None) -> None:
        self._registry = registry
        # what a caller with the profile's role (trainee) sees: docs/deidentification.md
        self.deidentify = deidentify or shipped_profile()
        self.deidentified_types = (resource_type_names() - self.deidentify.exempt_types) | {OWNED_TYPE}
        self._indexer = indexer
        self._compartment_types = frozenset(compartment) | {"Patient"}
        self._limits = limits
        # the patients' Consents (consent/enforce.py); None when consent enforcement is off
        self.consent: ConsentEnforcer | None = None
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
        if letter in "cud" and self.deidentifies(access):
            raise Forbidden(f"The {self.deidentify.role} role sees de-identified records and may not change them",
                            code="forbidden")
        if resource_type in SERVER_WRITTEN and not access.unrestricted:
            self._require_audit(access, resource_type, letter)
        if access.unrestricted or self.applicable(access, resource_type, letter):
            return
        names = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
        raise Forbidden(f"The access token has no scope that allows {names[letter]} on {resource_type}",
                        code="forbidden")

    def deidentifies(self, access: Access) -> bool:
        """True when the caller sees de-identified records only (their roles include the profile's)."""
        return bool(access.roles) and self.deidentify.role in access.roles
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

    def narrow(self, access: Access, query: SearchQuery, *, consent: bool = True) -> SearchQuery:
        """The query restricted to what the token may search; 403 for types or patients it may not touch."""
        if access.unrestricted:
            return query
        if query.is_system:
            return self._narrow_system(access, query, consent=consent)
        self.require(access, query.resource_type, "s")
        for touched in sorted(_touched(query.filters)):
            self.require(access, touched, "s")
        if self.patient_bound(access, query.resource_type, "s"):
            self._refuse_other_patients(access, query)
        query = self._narrow_hops(access, query)
        if consent:
            query = self._consented(access, query)
        groups = self._groups(access, query.resource_type, "s")
        if groups is None:
            return query
        if len(groups) == 1:
            return replace(query, filters=query.filters + groups[0])
        return replace(query, filters=(*query.filters, Filter("_any", "any-of", None, (), any_of=tuple(groups))))

    def _consented(self, access: Access, query: SearchQuery) -> SearchQuery:
        """The query narrowed by the patients' Consents (C10: 403 when it names a patient who denies everything)."""
        consent = self.consent
        if consent is None or not consent.governs(access) or not (
                query.is_system or self.in_compartment_type(query.resource_type)):
            return query
        for patient in _named_patients(query, self._registry):
            if consent.denies_patient(access, patient):
                raise Forbidden(f"Access to the record of Patient/{patient} is denied by patient consent",
                                code="forbidden")
        flt = consent.filter(access, query.resource_type)
        return query if flt is None else replace(query, filters=(*query.filters, flt))

    def check_patient(self, access: Access, patient: str) -> None:
        """403 when the request names a patient whose Consents deny this caller everything (C10)."""
        consent = self.consent
        if consent is not None and consent.governs(access) and consent.denies_patient(access, patient):
            raise Forbidden(f"Access to the record of Patient/{patient} is denied by patient consent",
                            code="forbidden")

    def _narrow_system(self, access: Access, query: SearchQuery, *, consent: bool = True) -> SearchQuery:
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
        hopped = self._narrow_hops(access, query)
        return self._consented(access, hopped) if consent else hopped

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
        # the hop's own condition AND one of the caller's alternatives for that type (any-of of one group = AND),
        # AND what the patients' Consents let the caller see of that type
        groups = self._groups(access, resource_type, "s")
        consent = self.consent
        if consent is not None and consent.governs(access) and self.in_compartment_type(resource_type):
            flt = consent.filter(access, resource_type)
            if flt is not None:
                inner = Filter("_any", "any-of", None, (), any_of=((inner, flt),))
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
        if groups is not None and not groups:
            return False
        consent = self.consent
        consented = (letter in "rs" and consent is not None and consent.governs(access)
                     and self.in_compartment_type(resource_type))
        if groups is None and not consented:
            return True
        extracted: dict[frozenset[str] | None, IndexRows] = {}

        def rows(only: frozenset[str] | None) -> IndexRows:
            # a read pays for the accessors its checks need: the compartment first, the whole index if asked
            found = extracted.get(only) or extracted.get(None)
            if found is None:
                found = extracted[only] = self._indexer.extract(resource_type, resource, only=only)
            return found

        if groups is not None and not any(all(_matches(f, resource, rows(None)) for f in group) for group in groups):
            return False
        return not consented or consent is None or consent.visible(access, resource_type, resource, rows)

    def admit(self, access: Access, resource_type: str, patients: list[str]) -> None:
        """403 unless the patients' Consents let this caller collect the resource (issue 28, collection)."""
        consent = self.consent
        if consent is not None and consent.governs(access) and patients:
            consent.admit(access, resource_type, patients)

    def check_write(self, access: Access, resource_type: str, resource: dict[str, Any], letter: str) -> None:
        """403 unless the token may make this write with this content (its patient's compartment, its filters)."""
        self.require(access, resource_type, letter)
        if not self.visible(access, resource_type, resource, letter):
            raise Forbidden(f"The access token does not allow writing this {resource_type}: it would fall outside "
                            f"the patient context or the granted filters", code="forbidden")


def _named_patients(query: SearchQuery, registry: SearchRegistry) -> list[str]:
    """The patients a search names: its compartment, or a reference parameter that can only point at Patients."""
    found: list[str] = []
    for flt in query.filters:
        for value in flt.values:
            if not isinstance(value, ReferenceValue) or not value.id or flt.chain:
                continue
            if flt.type == "compartment" and flt.missing is None:
                found.append(value.id)
            elif flt.type == "reference" and flt.modifier is None and not query.is_system:
                targets = registry.for_type(query.resource_type).get(flt.code)
                # a bare id names a patient when the parameter can point at Patients (subject=123)
                if value.type == "Patient" or (value.type is None and targets is not None
                                               and "Patient" in targets.targets):
                    found.append(value.id)
        if query.resource_type == "Patient" and flt.code == "_id" and flt.modifier is None:
            found.extend(v.code for v in flt.values if isinstance(v, TokenValue) and v.code)
    return list(dict.fromkeys(found))


def _matches(flt: Filter, resource: dict[str, Any], rows: IndexRows) -> bool:
    """An in-memory check of a granted filter; one that needs other resources grants nothing (fail closed)."""
    try:
        return matches(flt, resource, rows)
    except NotEvaluable:
        return False


_MASKED = frozenset({OWNED_TYPE, *SERVER_WRITTEN})  # Subscriptions' headers; AuditEvents as a patient sees them


@dataclass(frozen=True)
class BoundGuard:
    """An AccessPolicy applied to one request's Access (resources.guard.Guard)."""

    policy: AccessPolicy
    access: Access
    # Subscriptions: owned by the client that created them, headers masked (consent/ownership.py)
    stamped_types = frozenset({OWNED_TYPE})

    @property
    def redacted_types(self) -> frozenset[str]:
        """Subscriptions (masked headers); every type not exempt for a de-identified view (others pay nothing)."""
        if self.policy.deidentifies(self.access):
            return self.policy.deidentified_types | _MASKED
        return _MASKED

    def stamp(self, resource_type: str, resource: dict[str, Any], current: dict[str, Any] | None) -> None:
        """Owner tag and kept secrets of a Subscription about to be written."""
        if resource_type == OWNED_TYPE:
            stamp_owner(resource, current, self.access.client_id)

    def redact(self, resource_type: str, body: bytes) -> bytes:
        """A Subscription or AuditEvent as this caller may see it, and any resource de-identified for a trainee."""
        if resource_type in SERVER_WRITTEN and not (
                self.access.unrestricted or "auditor" in self.access.roles or not self.access.patient):
            body = for_patient(body, self.access.patient, self.policy.patient_shows_staff)
        if resource_type == OWNED_TYPE:
            body = masked(body, self.access.client_id)
        if self.policy.deidentifies(self.access):
            body = deidentified_bytes(body, self.policy.deidentify, datetime.now(UTC).year)
        return body

    def require(self, resource_type: str, letter: str) -> None:
        """403 unless granted."""
        self.policy.require(self.access, resource_type, letter)

    def narrow(self, query: SearchQuery, *, consent: bool = True) -> SearchQuery:
        """The narrowed query (a de-identified view may not search by what it hides)."""
        if self.policy.deidentifies(self.access):
            refuse_identifying(query, self.policy.deidentify)
        return self.policy.narrow(self.access, query, consent=consent)

    def visible(self, resource_type: str, resource: dict[str, Any], letter: str) -> bool:
        """Visibility of one resource."""
        return self.policy.visible(self.access, resource_type, resource, letter)

    def patient_bound(self, resource_type: str, letter: str) -> bool:
        """Confined to the token's patient."""
        return self.policy.patient_bound(self.access, resource_type, letter)

    def restricts(self, resource_type: str, letter: str, *, consent: bool = True) -> bool:
        """Whether visibility depends on content (scope filters, or the patients' Consents)."""
        return self.policy.restricts(self.access, resource_type, letter) or (
            consent and letter in "rs" and self.policy.consent is not None and self.policy.consent.governs(self.access)
            and self.policy.in_compartment_type(resource_type))

    def check_patient(self, patient: str) -> None:
        """403 when consent denies this caller the whole record of the named patient."""
        self.policy.check_patient(self.access, patient)

    def admit(self, resource_type: str, resource: dict[str, Any], patients: list[str]) -> None:
        """403 unless the caller may collect this resource for its patients."""
        self.policy.admit(self.access, resource_type, patients)
