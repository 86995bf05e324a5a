"""OperationDefinitions of CareLoop's own operations, stored at start-up so their canonical URLs resolve.

The CapabilityStatement names each operation's definition; HL7's and the Backport IG's resolve on hl7.org,
CareLoop's ($tier, $churn-risk, $access-report) are served here: `GET /fhir/OperationDefinition?url=...`. They are built
from the same rules the operations use, and rewritten when a new server version changes them.
https://hl7.org/fhir/R4B/operationdefinition.html
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from operations import consent_evaluate, follow_up_metrics, import_definition
from operations.cohort import CohortRules
from operations.parameter_definitions import param as _param
from resources.repository import Repository

log = logging.getLogger("careloop.operations")

CANONICAL = "http://careloop.health/fhir/OperationDefinition/"
VERSION = "1.2"  # raise when a definition changes: stored copies of an older version are replaced


def _rules() -> dict[str, Any]:
    parts = tuple(_param(f.name, "out", 1, "1", "string" if isinstance(f.default, str) else "decimal",
                         f"The rule {f.name} as applied (CARELOOP_COHORT_RULES)") for f in fields(CohortRules))
    return _param("rules", "out", 1, "1", None, "Every rule the answer was computed with", parts)


def _persist() -> list[dict[str, Any]]:
    return [_param("persist", "in", 0, "1", "boolean", "true (in a POST): store each result, one current result "
                   "per patient, written only when it changed (docs/cohort.md)"),
            _param("written", "out", 0, "1", "integer", "With persist=true: how many results were written")]


def _judged(name: str, doc: str, high: str) -> dict[str, Any]:
    return _param(name, "out", 0 if high == "*" else 1, high, None, doc, (
        _param("code", "out", 1, "1", "Coding", "The value"),
        _param("reason", "out", 0, "1", "string", "Why"),
        _param("evidence", "out", 0, "*", "Reference", "The resources it was judged from")))


def _definition(code: str, title: str, description: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationDefinition", "id": f"Patient-{code}", "url": f"{CANONICAL}Patient-{code}",
            "version": VERSION, "name": title.replace(" ", "").replace("-", ""), "title": title,
            "status": "active", "kind": "operation", "publisher": "CareLoop", "description": description,
            "affectsState": False, "code": code, "resource": ["Patient"], "system": False, "type": True,
            "instance": True, "parameter": parameters}


def _access_report() -> dict[str, Any]:
    access = _param("access", "out", 1, "*", None, "One access: a request's data events with the consent "
                    "decisions made for it", (
        _param("when", "out", 1, "1", "instant", "When it was recorded (AuditEvent.recorded)"),
        _param("action", "out", 0, "1", "code", "C, R, U, D or E (AuditEvent.action)"),
        _param("interaction", "out", 0, "1", "Coding", "The interaction or decision (AuditEvent.subtype)"),
        _param("what", "out", 0, "*", "Reference", "The patient's data read or written (versioned)"),
        _param("query", "out", 0, "1", "string", "The search that was run"),
        _param("purpose", "out", 0, "*", "Coding", "The purpose of use (v3-ActReason)"),
        _param("consent", "out", 0, "*", "Reference", "The Consents the access was decided under"),
        _param("decision", "out", 0, "1", "code", "permit or deny, when the consent engine decided"),
        _param("break-glass", "out", 1, "1", "boolean", "Whether a break-glass override allowed it"),
        _param("reason", "out", 0, "1", "string", "The break-glass reason, or why it was refused or failed"),
        _param("outcome", "out", 0, "1", "code", "0 success, 4 refused, 8 failed (AuditEvent.outcome)"),
        _param("request", "out", 0, "1", "string", "The request id (X-Request-Id)")))
    accessor = _param("accessor", "out", 0, "*", None, "Everyone who accessed the data, in order of first "
                      "access", (
        _param("who", "out", 1, "1", "Reference", "The user (fhirUser), or the app when no user took part"),
        _param("client", "out", 0, "*", "string", "The apps (client ids) the user acted through"),
        _param("role", "out", 0, "*", "string", "The roles the user acted in"),
        _param("count", "out", 1, "1", "integer", "How many accesses follow"), access))
    found = _definition("access-report", "Access report", "Who accessed which of the patient's data, when, for "
                        "what purpose, under which consent or break-glass override, grouped by accessor, from the "
                        "audit trail (issue 29). For auditors and for the patient (right of access). Asked with "
                        "Accept: text/html, a printable page.", [
        _param("start", "in", 0, "1", "dateTime", "Accesses recorded at or after this date"),
        _param("end", "in", 0, "1", "dateTime", "Accesses recorded at or before this date (the whole day of a "
               "date)"),
        _param("patient", "out", 1, "1", "Reference", "The patient"),
        _param("start", "out", 0, "1", "dateTime", "The start asked for"),
        _param("end", "out", 0, "1", "dateTime", "The end asked for"),
        _param("generated", "out", 1, "1", "instant", "When the report was made"),
        _param("events", "out", 1, "1", "integer", "How many audit events it was made from"),
        accessor])
    return {**found, "type": False}


def _cohort_stats() -> dict[str, Any]:
    def group(doc: str) -> dict[str, Any]:
        return _param("group", "out", 0, "*", None, doc, (
            _param("value", "out", 1, "*", "string", "The value of each dimension, in order ('unknown': none)"),
            _param("count", "out", 1, "1", "integer", "How many patients")))

    found = _definition("cohort-stats", "Cohort statistics", "Counts of the patients the caller may see by tier, "
                        "lifecycle stage, age band, sex, region and churn level, their cross-tabs, the results "
                        "that changed within a period, and referral chains (DOMAIN.md section 6), counted in the "
                        "store over the persisted results.", [
        _param("start", "in", 0, "1", "dateTime", "Start of the period for trends"),
        _param("end", "in", 0, "1", "dateTime", "End of the period for trends (default now)"),
        _param("cross", "in", 0, "*", "string", "A cross-tab as two dimensions a|b (default tier|age-band, "
               "tier|lifecycle, churn|tier, lifecycle|age-band)"),
        _param("total", "out", 1, "1", "integer", "How many patients the caller may see"),
        _param("by", "out", 6, "6", None, "The counts of one dimension", (
            _param("dimension", "out", 1, "1", "code", "tier, lifecycle, age-band, sex, region or churn"),
            group("One value and its count"))),
        _param("cross", "out", 0, "*", None, "A cross-tab of two dimensions", (
            _param("dimension", "out", 2, "2", "code", "The two dimensions"),
            group("One pair of values and its count"))),
        _param("start", "out", 0, "1", "dateTime", "The period's start"),
        _param("end", "out", 0, "1", "dateTime", "The period's end"),
        _param("trend", "out", 0, "3", None, "Current results that changed within the period", (
            _param("dimension", "out", 1, "1", "code", "tier, lifecycle (from, to) or churn"),
            group("A value (lifecycle: the stage it came from and the new one) and how many changed to it"))),
        _param("referral-count", "out", 1, "1", "integer", "How many patients were referred by another"),
        _param("referral", "out", 0, "*", None, "Who referred whom", (
            _param("referrer", "out", 1, "1", "Reference", "The patient who referred"),
            _param("referred", "out", 1, "1", "Reference", "The patient referred"))),
        _param("chain", "out", 0, "*", None, "A referral chain from its first referrer", (
            _param("patient", "out", 2, "*", "Reference", "The patients in order"),)),
        _param("generated", "out", 1, "1", "instant", "When the statistics were computed")])
    found.pop("resource")  # a system-level operation
    return {**found, "id": "cohort-stats", "url": f"{CANONICAL}cohort-stats", "system": True, "type": False,
            "instance": False}


def definitions() -> list[dict[str, Any]]:
    """The OperationDefinitions of $tier, $churn-risk, Consent/$evaluate, $access-report and $import."""
    per_tier = [_param(f"count-{t}", "out", 1, "1", "integer", f"How many patients are in tier {t}")
                for t in ("A", "B", "C")]
    tier = _definition("tier", "Service tier", "Each patient's service tier (A core, B potential, C basic) with "
                       "the reasons for it, from spend against the population's lines, visit frequency and active "
                       "programmes (DOMAIN.md section 1). At type level every patient, with the count per tier.", [
        _param("result", "out", 0, "*", None, "One patient's tier", (
            _param("patient", "out", 1, "1", "Reference", "The patient"),
            _param("tier", "out", 1, "1", "Coding", "A, B or C (http://careloop.health/fhir/CodeSystem/tier)"),
            _param("spend", "out", 1, "1", "decimal", "Gross total of issued and balanced Invoices in the window"),
            _param("visits", "out", 1, "1", "integer", "Finished Encounters in the window"),
            _param("programme", "out", 1, "1", "boolean", "Whether an active programme CarePlan exists"),
            _param("reason", "out", 1, "*", "string", "Why the patient has this tier"),
            _judged("health-status", "healthy, sub-healthy, chronic or severe (CodeSystem health-status)", "1"),
            _judged("service-type", "checkup, outpatient, inpatient, health-management or pharmacy (CodeSystem "
                    "service-type)", "*"),
            _judged("value", "high, mid or low (CodeSystem value-segment)", "1"),
            _judged("lifecycle", "potential, new, active, loyal or lost (CodeSystem lifecycle-stage)", "1"))),
        *per_tier,
        *_persist(),
        _param("spend-line-a", "out", 1, "1", "decimal", "Spend at or above which a patient is tier A"),
        _param("spend-line-b", "out", 1, "1", "decimal", "Spend at or above which a patient is at least tier B"),
        _param("spend-lines-at", "out", 1, "1", "instant", "When the population's spend lines were computed"),
        _rules()])
    levels = [_param(f"count-{level}", "out", 1, "1", "integer", f"How many patients are at risk level {level}")
              for level in ("low", "elevated", "high")]
    churn = _definition("churn-risk", "Churn risk", "How likely each patient is to drift away: five signals "
                        "(days since the last visit, unanswered outreach, satisfaction, missed appointments, open "
                        "complaints), each with its value and level, and the highest level as the risk "
                        "(DOMAIN.md section 2). At type level every patient, with the distribution.", [
        _param("result", "out", 0, "*", None, "One patient's risk", (
            _param("patient", "out", 1, "1", "Reference", "The patient"),
            _param("risk", "out", 1, "1", "Coding", "low, elevated or high "
                   "(http://careloop.health/fhir/CodeSystem/churn-risk)"),
            _param("signal", "out", 5, "5", None, "One signal", (
                _param("code", "out", 1, "1", "Coding", "The signal "
                       "(http://careloop.health/fhir/CodeSystem/churn-signal)"),
                _param("value", "out", 0, "1", "decimal", "What was found; absent when there is no data"),
                _param("level", "out", 1, "1", "Coding", "The level this signal reaches"))))),
        *levels,
        *_persist(),
        _rules()])
    return [tier, churn, consent_evaluate.definition(CANONICAL, VERSION), _access_report(), _cohort_stats(),
            import_definition.definition(CANONICAL, VERSION), follow_up_metrics.definition(CANONICAL, VERSION)]


async def seed_definitions(repository: Repository) -> int:
    """Store the definitions that are missing or of an older version; how many were written."""
    written = 0
    for definition in definitions():
        stored = await repository.store.read("OperationDefinition", definition["id"])
        if stored is not None and stored.body is not None and f'"version":"{VERSION}"'.encode() in stored.body:
            continue
        await repository.update("OperationDefinition", definition["id"], definition)
        written += 1
    if written:
        log.info("Stored %d OperationDefinitions of CareLoop's operations", written)
    return written
