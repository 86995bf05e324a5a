"""Consent enforcement: the patients' Consents applied to what one caller may see and collect.

The engine (consent/engine) decides for one patient; this module asks it for every patient a request can
reach and turns the answers into one search filter, so that `_total`, paging and `_summary=count` stay exact,
and the same filter re-checks single resources (read, vread, history, includes). SECURITY.md §3.6 C1-C12.
https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consent.access import COMPARTMENT, Access
from consent.book import ConsentBook
from consent.compile import Compiler
from consent.decisions import DecisionRecord, note
from consent.engine import holds
from consent.engine import verdict as engine_verdict
from consent.engine.expr import TRUE, Const, Expr
from consent.engine.facts import facts_from_rows
from consent.engine.terms import BTG, CLIENT_ID, PURPOSE, Actor, Ask, ConsentPolicy, Verdict
from resources.errors import Forbidden
from resources.search.index import IndexRows
from resources.search.query import SYSTEM, Filter, ReferenceValue

CLINICIANS = ("Practitioner/", "PractitionerRole/")
_CACHE_LIMIT = 100_000


@dataclass(frozen=True)
class Settings:
    """Where the clinic's policy choices meet the enforcement (server settings feed it)."""

    policy: ConsentPolicy = ConsentPolicy()
    clinic_organization: str | None = None  # "Organization/x": actors of any other organization are third parties
    collected_types: frozenset[str] = frozenset({"Observation"})  # writes that need a collection consent


class ConsentEnforcer:
    """Per caller, the consent filter of every patient compartment type, and single-resource checks."""

    def __init__(self, book: ConsentBook, settings: Settings, compiler: Compiler,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.book = book
        self.settings = settings
        self.compiler = compiler
        self.clock = clock
        self._verdicts: dict[tuple[Access, str, str, int], Verdict] = {}
        self._filters: dict[tuple[Access, str, str], tuple[int, datetime | None, Filter | None]] = {}
        self._decided: dict[tuple[Any, ...], tuple[bool, datetime | None, list[Any]]] = {}

    # -- who asks ----------------------------------------------------------------------------------------
    def governs(self, access: Access) -> bool:
        """Consent narrows only identified callers: with authorization off there is nobody to decide for."""
        return not access.unrestricted

    def actor(self, access: Access, patient: str, action: str) -> Actor:
        """The engine's view of the caller for one patient (self-access is per patient: C2)."""
        refs = {r for r in (access.fhir_user, access.organization) if r}
        identifiers = {(CLIENT_ID, access.client_id)} if access.client_id else set()
        third = _third_party(access, self.settings.clinic_organization)
        user = access.fhir_user or ""
        # the patient (or a representative) acting through an app they authorized: the grant is theirs
        if user == f"Patient/{patient}" or (access.patient == patient and (
                user.startswith("RelatedPerson/") or access.grant is not None)):
            kind = "self"
        elif user.startswith(CLINICIANS):
            kind = "clinician"
        elif not user and (action != "collect" or access.clinic_system):
            # the clinic's backend systems read for treatment like its clinicians; only its EHRs (registered
            # --ehr) record care without a collection consent: devices and other backends need one (issue 28)
            kind = "clinic-system"
        else:
            kind = "other"
        return Actor(frozenset(refs), frozenset(identifiers), kind, third and kind != "self")

    def ask(self, access: Access, patient: str, action: str) -> Ask:
        """The question for one patient."""
        purposes = frozenset((PURPOSE, code) for code in access.purposes)
        return Ask(patient, self.actor(access, patient, action), purposes, action, self.clock(),
                   break_glass=bool(access.btg_reason) and BTG in purposes)

    # -- decisions ----------------------------------------------------------------------------------------
    def verdict(self, access: Access, patient: str, action: str = "access") -> Verdict:
        """The engine's verdict for one patient, cached until the patient's Consents change or a period ends."""
        key = (access, patient, action, self.book.version(patient))
        found = self._verdicts.get(key)
        now = self.clock()
        if found is None or (found.valid_until is not None and found.valid_until <= now):
            if len(self._verdicts) > _CACHE_LIMIT:
                self._verdicts.clear()
            found = engine_verdict(self.book.of(patient), self.ask(access, patient, action), self.settings.policy)
            self._verdicts[key] = found
        return found

    def default(self, access: Access, action: str = "access") -> Verdict:
        """The verdict for a patient with no Consent (the implicit policy, C7): the same for every such patient."""
        return self.verdict(access, "", action)

    def denies_patient(self, access: Access, patient: str) -> bool:
        """True when nothing of this patient's record may be seen by this caller (C10's whole-patient deny)."""
        found = self.verdict(access, patient)
        denied = isinstance(found.expr, Const) and not found.expr.value
        if denied:
            _record(patient, found, permit=False, why="denied by patient consent")
        return denied

    # -- search -------------------------------------------------------------------------------------------
    def filter(self, access: Access, resource_type: str, action: str = "access") -> Filter | None:
        """The condition (one Filter) every resource of this type must meet, or None when consent allows all.

        Deny groups: a resource is hidden when it is in the compartment of a patient whose verdict excludes it.
        Patients without a Consent that applies share the implicit policy's verdict, so they need no list:
        they are the resources in some compartment but in none of the listed patients'.
        """
        if resource_type != SYSTEM and not self.compiler.governs(resource_type):
            return None
        key = (access, resource_type, action)
        now = self.clock()
        cached = self._filters.get(key)
        if cached is not None and cached[0] == self.book.generation and (cached[1] is None or cached[1] > now):
            return cached[2]
        default = self.default(access, action)
        groups: dict[Expr, list[str]] = {}
        expiry = default.valid_until
        patients = self.book.patients()
        own = _own_patient(access)
        if own is not None and not self.book.of(own):  # a patient's own record: exempt even without a Consent
            patients.append(own)
        for patient in patients:
            found = self.verdict(access, patient, action)
            if found.valid_until is not None and (expiry is None or found.valid_until < expiry):
                expiry = found.valid_until
            if found.expr != default.expr:
                groups.setdefault(found.expr, []).append(patient)
        deny: list[tuple[Filter, ...]] = []
        listed = [p for members in groups.values() for p in members]
        # each group tests what it excludes first: usually false, so a row is let through after one probe
        if default.expr != TRUE:
            excluded = self.compiler.negate(default.expr, resource_type)
            if excluded is not None:
                group = [*excluded, Filter(COMPARTMENT, "compartment", None, (), missing=False)]
                if listed:
                    group.append(_none_of((_in_compartment(listed),)))
                deny.append(tuple(group))
        for expr, members in groups.items():
            if expr == TRUE:
                continue
            excluded = self.compiler.negate(expr, resource_type)
            if excluded is not None:
                deny.append((*excluded, _in_compartment(members)))
        result = _none_of(*deny) if deny else None
        if len(self._filters) > _CACHE_LIMIT:
            self._filters.clear()
        self._filters[key] = (self.book.generation, expiry, result)
        return result

    def visible(self, access: Access, resource_type: str, resource: dict[str, Any],
                rows: Callable[[frozenset[str] | None], IndexRows]) -> bool:
        """The per-resource re-check (reads, includes, history): every patient whose compartment holds the
        resource must permit it (the store query's deny groups, decided here by the engine on its facts).

        rows(only) extracts the resource's index rows (only: those parameters); the compartment comes first,
        and the facts only when some patient's verdict depends on the resource.
        """
        if not self.compiler.governs(resource_type):
            return True
        # a version's answer for one caller holds until a Consent changes or a period ends: hot resources
        # (a worklist read again and again) are decided once
        meta = resource.get("meta") or {}
        key = (access, resource_type, resource.get("id"), meta.get("versionId"), self.book.generation)
        now = self.clock()
        cached = self._decided.get(key)
        if cached is not None and (cached[1] is None or cached[1] > now):
            for patient, found, permit in cached[2]:
                _record(patient, found, permit=permit, why=f"{resource_type} {'shown' if permit else 'withheld'}")
            return cached[0]
        shown, expiry, noted = self._decide(access, resource_type, resource, rows)
        if len(self._decided) > _CACHE_LIMIT:
            self._decided.clear()
        if key[2] is not None and key[3] is not None:
            self._decided[key] = (shown, expiry, noted)
        return shown

    def _decide(self, access: Access, resource_type: str, resource: dict[str, Any],
                rows: Callable[[frozenset[str] | None], IndexRows]) -> tuple[bool, datetime | None, list[Any]]:
        members = rows(frozenset())
        verdicts = [(p, self.verdict(access, p)) for p in members.compartments]
        shown = True
        expiry: datetime | None = None
        noted: list[Any] = []
        for patient, found in verdicts:
            if isinstance(found.expr, Const):
                permit = found.expr.value
            else:  # the facts this verdict tests, extracted from the parameters that hold them
                facts = facts_from_rows(resource_type, resource,
                                        rows(self.compiler.parameters(found.expr, resource_type)))
                permit = holds(found.expr, facts)
            if found.consents or not permit:  # what the audit trail records of this decision (AuthZ-Consent)
                _record(patient, found, permit=permit, why=f"{resource_type} {'shown' if permit else 'withheld'}")
                noted.append((patient, found, permit))
            if found.valid_until is not None and (expiry is None or found.valid_until < expiry):
                expiry = found.valid_until
            shown = shown and permit
        return shown, expiry, noted

    def record_search(self, access: Access, patients: list[str]) -> None:
        """Hand the decisions behind a search's narrowing to the audit trail, one per patient named."""
        for patient in patients:
            found = self.verdict(access, patient)
            _record(patient, found, permit=found.expr != Const(False), why="search narrowed by patient consent")

    def _records_care(self, access: Access) -> bool:
        """A clinician, or one of the clinic's EHR systems, writing for treatment."""
        user = access.fhir_user or ""
        clinic = user.startswith(CLINICIANS) or (not user and access.clinic_system)
        treating = any((PURPOSE, code) in self.settings.policy.treatment for code in access.purposes)
        return clinic and treating and not _third_party(access, self.settings.clinic_organization)

    # -- writes --------------------------------------------------------------------------------------------
    def admit(self, access: Access, resource_type: str, patients: list[str]) -> None:
        """403 unless every patient the written resource is about permits this caller to collect it (issue 28)."""
        if resource_type not in self.settings.collected_types:
            return
        policy = self.settings.policy
        if policy.collection == "treatment-exempt" and self._records_care(access):
            return  # the clinic recording its own care is not collection by a third party (docs/consent.md)
        for patient in patients:
            found = self.verdict(access, patient, "collect")
            if found.expr == Const(False) or not _permits_some(found.expr):
                _record(patient, found, permit=False, why=f"collection of {resource_type} refused")
                raise Forbidden(f"No active Consent of Patient/{patient} permits this client to collect "
                                f"{resource_type} for the purpose of use of its token: the patient must consent "
                                f"to collection first (Consent with provision.action collect)", code="forbidden",
                                expression=(f"{resource_type}.subject",))
            _record(patient, found, permit=True, why=f"collection of {resource_type} permitted")


def _third_party(access: Access, clinic: str | None) -> bool:
    """Acting for another Organization than the clinic's (CARELOOP_CLINIC_ORGANIZATION; unset: nobody is)."""
    return clinic is not None and access.organization is not None and access.organization != clinic


def _permits_some(expr: Expr) -> bool:
    return not (isinstance(expr, Const) and not expr.value)


def _own_patient(access: Access) -> str | None:
    user = access.fhir_user or ""
    if user.startswith("Patient/"):
        return user[8:]
    return access.patient if user.startswith("RelatedPerson/") or access.grant is not None else None


def _in_compartment(patients: list[str]) -> Filter:
    return Filter(COMPARTMENT, "compartment", None, tuple(ReferenceValue("Patient", p) for p in sorted(patients)))


def _none_of(*groups: tuple[Filter, ...]) -> Filter:
    return Filter("_consent", "none-of", None, (), any_of=tuple(groups))


def _record(patient: str, found: Verdict, *, permit: bool, why: str) -> None:
    note(DecisionRecord(patient, permit, found.consents, found.policy, why))
