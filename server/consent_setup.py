"""Consent enforcement built from the settings and plugged into the access policy and the store.

https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

import time
from typing import Any

from consent.access import Access, AccessPolicy
from consent.book import ConsentBook
from consent.compile import Compiler
from consent.enforce import ConsentEnforcer
from consent.enforce import Settings as EnforcementSettings
from consent.engine import ConsentPolicy, problems
from consent.ownership import OWNER_SYSTEM
from consent.type_params import TypeParamsOf
from resources.errors import Issue, Unprocessable
from resources.repository import Repository
from resources.search.index import IndexRows, load_patient_compartment
from server.auth.service import AuthService
from server.settings import Settings
from subscriptions.engine import Audience
from subscriptions.subscription import Subscriber


def install_consent(settings: Settings, policy: AccessPolicy, repository: Repository) -> ConsentBook:
    """Enforce the patients' Consents on every request the policy guards; Consents that decide nothing: 422."""
    categories = frozenset(_coding(text) for text in settings.consent_categories)
    engine_policy = ConsentPolicy(combining=settings.consent_combining, implicit=settings.consent_implicit_policy,
                                  categories=categories, collection=settings.consent_collection)
    book = ConsentBook()
    types = frozenset(load_patient_compartment()) | {"Patient"}
    compiler = Compiler(repository.registry, TypeParamsOf(repository.registry).of, types)
    policy.consent = ConsentEnforcer(book, EnforcementSettings(
        engine_policy, settings.clinic_organization, frozenset(settings.consent_collected_types)), compiler)
    repository.store.add_commit_listener(book.on_commit)
    repository.write_hooks.append(_refuse_undecidable)
    return book


def notification_audience(enforcer: ConsentEnforcer, auth: AuthService) -> Audience:
    """Whether a subscription's owner (the client that created it) may see a resource, by patient consent."""
    owners: dict[str, tuple[float, Access]] = {}

    def owner_access(client_id: str) -> Access:
        # the client's registration, read again after a minute: re-registering changes what it may see
        found = owners.get(client_id)
        if found is None or found[0] < time.monotonic():
            record = auth.store.client(client_id)
            access = Access(client_id=client_id, purposes=("TREAT",), clinic_system=bool(record and record.ehr))
            found = (time.monotonic() + 60.0, access)
            owners[client_id] = found
        return found[1]

    def audience(subscriber: Subscriber, resource_type: str, focus: dict[str, Any], rows: IndexRows) -> bool:
        owner = next((code for system, code in subscriber.tags if system == OWNER_SYSTEM), None)
        if owner is None or not enforcer.compiler.governs(resource_type):
            return True  # written with authorization off: the server's own subscription
        return enforcer.visible(owner_access(owner), resource_type, focus, rows)

    return audience


def _refuse_undecidable(resource_type: str, resource: dict[str, Any]) -> None:
    """A Consent whose decision cannot be derived is refused at write (SECURITY.md §3.6 C3)."""
    if resource_type != "Consent":
        return
    found = problems(resource)
    if found:
        issues = tuple(Issue("invariant", f"{p.expression}: {p.message}", expression=(p.expression,))
                       for p in found)
        raise Unprocessable("; ".join(i.diagnostics for i in issues), issues=issues)


def _coding(text: str) -> tuple[str, str]:
    system, _, code = text.rpartition("|")
    if not system or not code:
        raise SystemExit(f"CARELOOP_CONSENT_CATEGORIES: '{text}' is not system|code")
    return system, code
