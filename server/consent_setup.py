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
from consent.engine import ConsentPolicy
from consent.engine.facts import fact_params
from consent.marketing import MarketingGate
from consent.ownership import OWNER_SYSTEM
from resources.repository import Repository
from resources.search.index import IndexRows, load_patient_compartment
from server.auth.service import AuthService
from server.settings import Settings
from subscriptions.engine import Audience
from subscriptions.subscription import Subscriber


def install_consent(settings: Settings, policy: AccessPolicy, repository: Repository,
                    engine_policy: ConsentPolicy) -> ConsentBook:
    """Enforce the patients' Consents on every request the policy guards (the engine's policy from settings)."""
    book = ConsentBook()
    types = frozenset(load_patient_compartment()) | {"Patient"}
    compiler = Compiler(repository.registry, fact_params, types)
    policy.consent = ConsentEnforcer(book, EnforcementSettings(
        engine_policy, settings.clinic_organization, frozenset(settings.consent_collected_types)), compiler)
    repository.store.add_commit_listener(book.on_commit)
    repository.write_hooks.append(MarketingGate(book, engine_policy, repository.indexer,
                                                clinic=settings.clinic_organization).check)
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
        return enforcer.visible(owner_access(owner), resource_type, focus, lambda only: rows)

    return audience
