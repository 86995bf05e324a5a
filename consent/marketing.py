"""Marketing contact needs the patient's opt-in: a marketing Communication, CommunicationRequest or Task is
written only for a patient whose Consents permit purpose HMARKT (DOMAIN.md §5; issue 28 item 5).

It holds for every writer, the server's own pathway steps included (a refused pathway Task is skipped, the
others of its event are created); treatment follow-up carries no marketing code and never needs it.
https://terminology.hl7.org/CodeSystem-v3-ActReason.html#v3-ActReason-HMARKT
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from consent.book import ConsentBook
from consent.decisions import DecisionRecord, note
from consent.engine import Actor, Ask, ConsentPolicy, holds, verdict
from consent.engine.facts import facts_from_rows
from consent.engine.terms import PURPOSE
from resources.errors import Forbidden
from resources.search.index import Indexer

HMARKT = (PURPOSE, "HMARKT")
MARKETING = (HMARKT, ("http://careloop.health/fhir/CodeSystem/communication-category", "marketing"))
# where each type says what it is for: Communication(Request).category, Task.code, and any resource's meta.tag
_ELEMENTS = {"Communication": ("category", "subject"), "CommunicationRequest": ("category", "subject"),
             "Task": ("code", "for")}


class MarketingGate:
    """A write hook: 403 for marketing about a patient who did not opt in."""

    def __init__(self, book: ConsentBook, policy: ConsentPolicy, indexer: Indexer,
                 codings: tuple[tuple[str, str], ...] = MARKETING, clinic: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._book = book
        self._policy = policy
        self._indexer = indexer
        self._codings = frozenset(codings)
        self._clinic = clinic
        self._clock = clock

    def check(self, resource_type: str, resource: dict[str, Any]) -> None:
        """Refuse a marketing resource unless its patient's Consents permit marketing use."""
        elements = _ELEMENTS.get(resource_type)
        if elements is None or not self._is_marketing(resource, elements[0]):
            return
        patient = _patient(resource.get(elements[1]))
        if patient is None:
            return
        actor = Actor(frozenset({self._clinic} if self._clinic else ()), frozenset(), "clinic-system")
        ask = Ask(patient, actor, frozenset({HMARKT}), "use", self._clock())
        found = verdict(self._book.of(patient), ask, self._policy)
        rows = self._indexer.extract(resource_type, resource)
        permitted = holds(found.expr, facts_from_rows(resource_type, resource, rows))
        note(DecisionRecord(patient, permitted, found.consents, found.policy,
                            f"marketing {resource_type} {'permitted' if permitted else 'refused'}"))
        if not permitted:
            raise Forbidden(f"Patient/{patient} has no active Consent that permits marketing contact (purpose "
                            f"HMARKT): marketing needs the patient's opt-in; treatment follow-up does not",
                            code="forbidden", expression=(f"{resource_type}.{elements[0]}",))

    def _is_marketing(self, resource: dict[str, Any], element: str) -> bool:
        concepts = resource.get(element) or []
        concepts = concepts if isinstance(concepts, list) else [concepts]
        codings = [c for concept in concepts if isinstance(concept, dict) for c in concept.get("coding") or []]
        codings.extend((resource.get("meta") or {}).get("tag") or [])
        return any(isinstance(c, dict) and (c.get("system"), c.get("code")) in self._codings for c in codings)


def _patient(reference: Any) -> str | None:
    text = reference.get("reference") if isinstance(reference, dict) else None
    if isinstance(text, str) and text.startswith("Patient/") and "/" not in text[8:]:
        return text[8:]
    return None
