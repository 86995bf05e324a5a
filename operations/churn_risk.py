"""Patient/$churn-risk: how likely a patient is to drift away, with each signal's value and level.

Signals (DOMAIN.md section 2): days since the last finished Encounter, consecutive unanswered outreach
(Communications to the patient with no reply), the latest satisfaction score, consecutive missed
Appointments, and open complaints (complaint Communications without a completed Task on them). Any high
signal makes the risk high, any elevated one elevated. At type level every patient is judged and the
distribution is returned. https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from operations.cohort import CARELOOP, DAY_MS, CohortRules, end_ms, scan, scan_stored
from operations.context import OperationCall
from operations.parameters import parameters, part
from resources.ids import now_ms
from resources.repository import Repository

RISK = CARELOOP + "churn-risk"
SIGNAL = CARELOOP + "churn-signal"
_LEVELS = ("low", "elevated", "high")


@dataclass(frozen=True)
class Signal:
    """One signal: its code, the value found (None: no data) and the level it reaches."""

    code: str
    value: float | None
    level: str


def _level(value: float | None, elevated: float, high: float) -> str:
    if value is None:
        return "low"
    return "high" if value >= high else "elevated" if value >= elevated else "low"


async def _days_since_visit(repo: Repository, patient: str, now: int) -> float | None:
    latest = None
    async for encounter in scan(repo, "Encounter", [("patient", patient), ("status", "finished")]):
        ended = end_ms(encounter.get("period"))
        if ended is not None and (latest is None or ended > latest):
            latest = ended
    return None if latest is None else max(0.0, (now - latest) / DAY_MS)


async def _unanswered(repo: Repository, patient: str) -> int:
    replies: set[str] = set()
    async for sent in scan(repo, "Communication", [("sender", f"Patient/{patient}")]):
        replies.update(str(r.get("reference", "")).split("/_history")[0] for r in sent.get("inResponseTo") or [])
    outreach = [(c.get("sent") or "", f"Communication/{c['id']}") async for c in scan(
        repo, "Communication", [("recipient", f"Patient/{patient}")])]
    count = 0
    for _, ref in sorted(outreach, reverse=True):  # newest first: count until one was answered
        if ref in replies:
            break
        count += 1
    return count


async def _satisfaction(repo: Repository, patient: str, code: str) -> float | None:
    latest: tuple[int, float] | None = None
    async for obs in scan(repo, "Observation", [("patient", patient), ("code", code)]):
        value = obs.get("valueInteger", (obs.get("valueQuantity") or {}).get("value"))
        when = end_ms(obs.get("effectiveDateTime") or obs.get("effectivePeriod") or obs.get("issued"))
        if isinstance(value, int | float) and when is not None and (latest is None or when > latest[0]):
            latest = (when, float(value))
    return None if latest is None else latest[1]


async def _missed(repo: Repository, patient: str, now: int) -> int:
    past = []
    async for appointment in scan(repo, "Appointment", [("patient", patient)]):
        start = end_ms(appointment.get("start"))
        if start is not None and start <= now and appointment.get("status") in ("fulfilled", "noshow", "arrived",
                                                                                  "checked-in"):
            past.append((start, appointment["status"]))
    count = 0
    for _, status in sorted(past, reverse=True):  # newest first: count the no-shows in a row
        if status != "noshow":
            break
        count += 1
    return count


async def _open_complaints(repo: Repository, patient: str, category: str) -> int:
    complaints = [f"Communication/{c.id}" async for c in scan_stored(
        repo, "Communication", [("patient", patient), ("category", category)])]
    if not complaints:
        return 0
    resolved = set()
    step = repo.search_limits.max_or_values  # one search may OR only so many values
    for at in range(0, len(complaints), step):
        chunk = ",".join(complaints[at:at + step])
        async for task in scan(repo, "Task", [("focus", chunk), ("status", "completed")]):
            resolved.add(str((task.get("focus") or {}).get("reference", "")))
    return len([c for c in complaints if c not in resolved])


async def signals_of(repo: Repository, patient: str, rules: CohortRules, now: int) -> list[Signal]:
    """The five signals of one patient, each with its level."""
    days = await _days_since_visit(repo, patient, now)
    unanswered = await _unanswered(repo, patient)
    score = await _satisfaction(repo, patient, rules.satisfaction_code)
    missed = await _missed(repo, patient, now)
    complaints = await _open_complaints(repo, patient, rules.complaint_category)
    satisfaction = "low"
    if score is not None:
        satisfaction = ("high" if score < rules.satisfaction_high else
                        "elevated" if score <= rules.satisfaction_elevated else "low")
    return [
        Signal("days-since-last-visit", None if days is None else round(days, 1),
               _level(days, rules.elevated_days, rules.lost_days)),
        Signal("unanswered-outreach", unanswered, _level(unanswered, rules.unanswered_elevated,
                                                         rules.unanswered_high)),
        Signal("satisfaction", score, satisfaction),
        Signal("missed-appointments", missed, _level(missed, rules.missed_elevated, rules.missed_high)),
        Signal("open-complaints", complaints, _level(complaints, rules.complaints_elevated, rules.complaints_high)),
    ]


def risk_of(signals: list[Signal]) -> str:
    """The highest level any signal reaches."""
    return max((s.level for s in signals), key=_LEVELS.index, default="low")


def _result(patient: str, signals: list[Signal]) -> dict[str, Any]:
    parts = [part("patient", "Reference", {"reference": f"Patient/{patient}"}),
             part("risk", "Coding", {"system": RISK, "code": risk_of(signals)})]
    for signal in signals:
        inner = [part("code", "Coding", {"system": SIGNAL, "code": signal.code}),
                 part("value", "Decimal", signal.value), part("level", "Coding", {"system": RISK,
                                                                                  "code": signal.level})]
        parts.append({"name": "signal", "part": [p for p in inner if p is not None]})
    return {"name": "result", "part": [p for p in parts if p is not None]}


async def run(call: OperationCall) -> dict[str, Any]:
    """One patient's churn risk (instance level) or every patient's, with the distribution (type level)."""
    rules, repo = call.context.cohort, call.context.repository
    now = now_ms()
    target = await call.target()
    patients = [str(target["id"])] if target is not None else [p.id async for p in scan_stored(repo, "Patient", [])]
    results, counts = [], Counter[str]()
    for patient in patients:
        signals = await signals_of(repo, patient, rules, now)
        counts[risk_of(signals)] += 1
        results.append(_result(patient, signals))
    summary = [part(f"count-{level}", "Integer", counts.get(level, 0)) for level in _LEVELS]
    return parameters(*results, *summary, {"name": "rules", "part": rules.as_parts()})
