"""Every stored Consent, by patient, kept current as Consents are written (SECURITY.md §3.6 C3, C11).

The enforcement decides from memory: a request must not read the Consents of every patient it touches. The
store's commit listener runs before a write returns to its client, so a revoked Consent is gone from the
book before the next request with the same token. https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

from typing import Any

import orjson

from resources.store.protocol import Store, Write, every


class ConsentBook:
    """The current version of every Consent, grouped by the patient it is about."""

    def __init__(self) -> None:
        self._by_patient: dict[str, dict[str, dict[str, Any]]] = {}
        self._patient_of: dict[str, str] = {}
        self._versions: dict[str, int] = {}  # patient -> how often its Consents changed (a cache key part)
        self.generation = 0  # how often any Consent changed

    async def load(self, store: Store) -> None:
        """Read every stored Consent."""
        async for found in every(store, "Consent"):
            self._put(found.id, orjson.loads(found.body or b"{}"))

    def on_commit(self, writes: list[Write]) -> None:
        """Follow created, changed and deleted Consents (called before the write answers its client)."""
        for write in writes:
            if write.type != "Consent":
                continue
            if write.action == "delete" or write.body is None:
                self._drop(write.id)
            else:
                self._put(write.id, orjson.loads(write.body))

    def of(self, patient: str) -> list[dict[str, Any]]:
        """The Consents about one patient (every status: the engine picks the candidates)."""
        found = self._by_patient.get(patient)
        return list(found.values()) if found else []

    def version(self, patient: str) -> int:
        """A number that changes whenever one of the patient's Consents changes."""
        return self._versions.get(patient, 0)

    def patients(self) -> list[str]:
        """The patients that have at least one Consent."""
        return list(self._by_patient)

    def consent(self, id_: str) -> dict[str, Any] | None:
        """One Consent by id."""
        patient = self._patient_of.get(id_)
        return None if patient is None else self._by_patient[patient].get(id_)

    def _put(self, id_: str, consent: dict[str, Any]) -> None:
        self._drop(id_)
        patient = _patient_id(consent)
        if patient is None:
            return
        self._by_patient.setdefault(patient, {})[id_] = consent
        self._patient_of[id_] = patient
        self._touch(patient)

    def _drop(self, id_: str) -> None:
        patient = self._patient_of.pop(id_, None)
        if patient is None:
            return
        found = self._by_patient.get(patient, {})
        found.pop(id_, None)
        if not found:
            self._by_patient.pop(patient, None)
        self._touch(patient)

    def _touch(self, patient: str) -> None:
        self._versions[patient] = self._versions.get(patient, 0) + 1
        self.generation += 1


def _patient_id(consent: dict[str, Any]) -> str | None:
    reference = (consent.get("patient") or {}).get("reference")
    if isinstance(reference, str) and reference.startswith("Patient/") and "/" not in reference[8:]:
        return reference[8:]
    return None
