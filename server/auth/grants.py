"""A patient's SMART grant to an app, recorded as a Consent; revoking that Consent revokes the app's tokens.

The Consent is written with the server's own rights when a patient (or their RelatedPerson) authorizes an app:
scope patient-privacy, category LOINC 59284-0 (and CareLoop's smart-app-grant), the app as actor (by client id),
one nested permit provision per granted resource type. When it becomes anything but active, or is deleted,
the tokens issued under it are refused from the next request on (C11), and its refresh tokens with them.
https://hl7.org/fhir/R4B/consent.html, https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import orjson

from consent.scopes import ScopeError, parse_scopes
from resources.ids import new_id
from resources.search.dates import format_instant
from resources.store.protocol import Write
from server.auth.purposes import SYSTEM as PURPOSE_SYSTEM
from server.auth.store import AuthStore
from server.auth.tokens import Signer
from server.context import Services

log = logging.getLogger("careloop.auth")
CLIENT_ID_SYSTEM = "http://careloop.health/fhir/sid/client-id"
LOINC_CONSENT = {"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}
GRANT_CATEGORY = {"system": "http://careloop.health/fhir/CodeSystem/consent-category", "code": "smart-app-grant",
                  "display": "SMART app authorization"}
ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction"
# SMART v2 letters -> Consent actions: read and search are access, create is collect, update and delete correct
ACTIONS = (("access", "rs"), ("collect", "c"), ("correct", "ud"))


def _actions(letters: frozenset[str]) -> list[dict[str, Any]]:
    return [{"coding": [{"system": ACTION_SYSTEM, "code": code}]} for code, of in ACTIONS if letters & set(of)]


def provisions(scope: str, known_types: frozenset[str]) -> list[dict[str, Any]]:
    """One permit provision per granted resource type (`*`: no class), with the actions its letters allow."""
    try:
        resources, _ = parse_scopes(scope, known_types)
    except ScopeError:
        resources = ()
    letters: dict[str, set[str]] = defaultdict(set)
    for granted in resources:
        letters[granted.type] |= granted.letters
    out = []
    for resource_type in sorted(letters):
        provision: dict[str, Any] = {"type": "permit", "action": _actions(frozenset(letters[resource_type]))}
        if resource_type != "*":
            provision["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": resource_type}]
        out.append(provision)
    return out


def grant_consent(*, client_id: str, client_name: str, patient: str, performer: str, scope: str,
                  purposes: tuple[str, ...], now_ms: int, lifetime_seconds: int,
                  known_types: frozenset[str]) -> dict[str, Any]:
    """The Consent recording a grant (pure: the caller adds the id)."""
    root: dict[str, Any] = {
        "type": "permit",
        "period": {"start": format_instant(now_ms), "end": format_instant(now_ms + lifetime_seconds * 1000)},
        "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                        "code": "IRCP"}]},
                   "reference": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id},
                                 "display": client_name}}],
    }
    if purposes:
        root["purpose"] = [{"system": PURPOSE_SYSTEM, "code": code} for code in purposes]
    nested = provisions(scope, known_types)
    if nested:
        root["provision"] = nested
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [LOINC_CONSENT]}, {"coding": [GRANT_CATEGORY]}],
            "patient": {"reference": f"Patient/{patient}"}, "dateTime": format_instant(now_ms),
            "performer": [{"reference": performer}],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTIN"}]},
            "provision": root}


async def record_grant(services: Services, store: AuthStore, body: dict[str, Any], client_id: str,
                       patient: str) -> tuple[str, int]:
    """Write (or rewrite: re-authorizing updates the same Consent) the grant; its reference and version."""
    consent_id = await asyncio.to_thread(store.grant_consent, client_id, patient) or new_id()
    # no guard is set on /auth requests: the server writes with its own rights, not the app's
    outcome = await services.repository.update("Consent", consent_id, {**body, "id": consent_id})
    await asyncio.to_thread(store.keep_grant_consent, client_id, patient, consent_id)
    return f"Consent/{consent_id}", outcome.resource.vid


def _revoked_grant(write: Write) -> bool:
    """True for a write that ends a grant: its Consent deleted, or stored with any status but active."""
    if write.type != "Consent":
        return False
    if write.action == "delete":
        return True  # a deleted Consent has no body to tell whether it was a grant: every deletion counts (rare)
    found = orjson.loads(write.body or b"{}")
    is_grant = any(c.get("system") == GRANT_CATEGORY["system"] and c.get("code") == GRANT_CATEGORY["code"]
                   for category in found.get("category") or () for c in category.get("coding") or ())
    return is_grant and found.get("status") != "active"


class GrantRevocations:
    """A commit listener: a grant's Consent made inactive or deleted revokes its tokens before the write returns."""

    def __init__(self, signer: Signer, store: AuthStore) -> None:
        self._signer = signer
        self._store = store
        self._pending: set[asyncio.Future[None]] = set()

    def on_commit(self, writes: list[Write]) -> None:
        """Note revocations in memory at once (the next request sees them), and in the auth file (other
        processes and restarts see them) off the event loop."""
        for write in writes:
            if not _revoked_grant(write):
                continue
            self._signer.note_revoked_grant(write.id, write.vid)
            self._persist(write.id, write.vid)

    def _persist(self, consent: str, vid: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop: the store is safe to use from any thread
            self._store.revoke_grant_version(consent, vid)
            return
        future = loop.run_in_executor(None, self._store.revoke_grant_version, consent, vid)
        self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[None]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("could not record a revoked SMART grant in the auth store", exc_info=future.exception())

    async def drain(self) -> None:
        """Wait until every revocation noted so far is in the auth file (before closing it)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
