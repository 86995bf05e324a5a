"""$follow-up-metrics: the measures the clinics track (DOMAIN.md section 4), computed in the store.

For a period (start, end; default the 30 days before now), and optionally a team (the Tasks' owner) and a
pathway (the PlanDefinition the Tasks are based on): follow-up on time, median and 90th-percentile response
time, satisfaction, complaint rate, retention, NPS and escalations, each with its numerator, denominator and
target. Every figure is a count or a span the store aggregates over a search (resources/store/protocol.py
Spans and distinct_targets), narrowed to what the caller may see like any search: no resource body is read.
https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from operations.context import OperationCall
from operations.parameter_definitions import param
from operations.parameters import parameters
from resources.errors import Invalid
from resources.ids import now_ms
from resources.repository import Repository
from resources.search.dates import date_range, format_instant
from resources.search.parse import parse_search
from resources.store.protocol import Spans

NAME = "follow-up-metrics"
PARAMETERS = ("start", "end", "team", "pathway")
MEASURE = "http://careloop.health/fhir/CodeSystem/follow-up-measure"
_ESCALATION = "http://careloop.health/fhir/CodeSystem/task-escalation"
_SATISFACTION = "http://careloop.health/fhir/CodeSystem/churn-signal|satisfaction"
_NPS = MEASURE + "|nps"
_COMPLAINT = "http://careloop.health/fhir/CodeSystem/follow-up-task|complaint"
_DAY = 86_400_000
TARGETS = {"follow-up-on-time": 95.0, "satisfaction": 90.0, "retention": 85.0}  # percent, DOMAIN.md section 4
Params = list[tuple[str, str]]


def _bounds(call: OperationCall, now: int) -> tuple[int, int]:
    """The period as [first ms, last ms]: a date's whole day counts; default the 30 days up to now."""
    found = []
    for name in ("start", "end"):
        raw = call.input.text(name)
        span = date_range(raw) if raw is not None else None
        if raw is not None and span is None:
            raise Invalid(f"Parameter '{name}' must be a FHIR date or dateTime, not '{raw}'", code="value",
                          expression=(name,))
        found.append(span)
    end = found[1][1] if found[1] else now
    start = found[0][0] if found[0] else end - 30 * _DAY + 1
    if start > end:
        raise Invalid("Parameter 'start' is after 'end'", code="value", expression=("start", "end"))
    return start, end


def _within(code: str, start: int, end: int) -> Params:
    return [(code, "ge" + format_instant(start)), (code, "le" + format_instant(end))]


def _reference(call: OperationCall, name: str, default_type: str | None, types: tuple[str, ...]) -> str | None:
    raw = call.input.text(name)
    if raw is None:
        return None
    kind, sep, id_ = raw.rpartition("/")
    if not sep and default_type is not None:
        kind, id_ = default_type, raw
    if kind not in types or not id_:
        raise Invalid(f"Parameter '{name}' must name a {' or '.join(types)} (Type/id), not '{raw}'", code="value",
                      expression=(name,))
    return f"{kind}/{id_}"


class _Counter:
    """Counts and aggregates of searches, in the store, as the caller may see them."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    def query(self, kind: str, params: Params) -> Any:
        return parse_search(kind, params, self.repository.registry, strict=True).query

    async def count(self, kind: str, params: Params) -> int:
        page = await self.repository.search(replace(self.query(kind, params), count=0, total="accurate"))
        return int(page.total or 0)


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else round(100.0 * numerator / denominator, 1)


def _measure(code: str, value: float | None, unit: str, numerator: int | None = None,
             denominator: int | None = None, definition: str = "", **extra: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "code", "valueCoding": {"system": MEASURE, "code": code}}]
    if value is not None:
        parts.append({"name": "value", "valueQuantity": {"value": value, "unit": unit,
                                                         "system": "http://unitsofmeasure.org", "code": unit}})
    if numerator is not None:
        parts.append({"name": "numerator", "valueInteger": numerator})
    if denominator is not None:
        parts.append({"name": "denominator", "valueInteger": denominator})
    if code in TARGETS:
        parts.append({"name": "target", "valueQuantity": {"value": TARGETS[code], "unit": "%",
                                                          "system": "http://unitsofmeasure.org", "code": "%"}})
    for name, given in extra.items():
        if all(v is not None for v in given.values()):
            parts.append({"name": name, **given})
    parts.append({"name": "definition", "valueString": definition})
    return {"name": "measure", "part": parts}


async def run(call: OperationCall) -> dict[str, Any]:
    """Every measure for the period, team and pathway asked for."""
    now = now_ms()
    start, end = _bounds(call, now)
    team = _reference(call, "team", None, ("Organization", "PractitionerRole", "Practitioner", "CareTeam"))
    pathway = _reference(call, "pathway", "PlanDefinition", ("PlanDefinition",))
    counter = _Counter(call.context.repository)
    tasks: Params = _within("authored-on", start, end)
    if team is not None:
        tasks.append(("owner", team))
    if pathway is not None:
        tasks.append(("based-on", pathway))
    done = await call.context.repository.spans(
        counter.query("Task", [*tasks, ("status", "completed"), ("deadline:missing", "false")]),
        Spans("authored-on", "modified", "deadline", (0.5, 0.9)))
    escalated = await counter.count("Task", [*tasks, ("business-status", f"{_ESCALATION}|escalated,"
                                                                         f"{_ESCALATION}|exhausted")])
    scored = [("code", _SATISFACTION), *_within("date", start, end)]
    satisfied, scores = await counter.count("Observation", [*scored, ("score", "ge4")]), await counter.count(
        "Observation", scored)
    asked = [("code", _NPS), *_within("date", start, end)]
    answers = await counter.count("Observation", asked)
    promoters = await counter.count("Observation", [*asked, ("score", "ge9")])
    detractors = await counter.count("Observation", [*asked, ("score", "le6")])
    complaints = await counter.count("Communication", [("category", _COMPLAINT), *_within("sent", start, end)])
    visits = counter.query("Encounter", [("status", "finished"), *_within("date", start, end)])
    before = counter.query("Encounter", [("status", "finished"), *_within("date", 2 * start - end - 1, start - 1)])
    served = await call.context.repository.distinct_targets(visits, "patient")
    earlier = await call.context.repository.distinct_targets(before, "patient")
    returned = await call.context.repository.distinct_targets(visits, "patient", also=before) if earlier else 0
    median, p90 = done.quantiles
    nps = None if answers == 0 else round(100.0 * (promoters - detractors) / answers, 1)
    measures = [
        _measure("follow-up-on-time", _ratio(done.on_time, done.count), "%", done.on_time, done.count,
                 "Completed Tasks authored in the period that have a deadline: the share completed by it "
                 "(completion: Task.lastModified, else the version's time)"),
        _measure("response-time", None, "min", None, done.measured,
                 "Time from Task.authoredOn to completion, over the same Tasks",
                 median={"valueQuantity": _minutes(median)}, p90={"valueQuantity": _minutes(p90)}),
        _measure("satisfaction", _ratio(satisfied, scores), "%", satisfied, scores,
                 "Satisfaction scores (churn-signal#satisfaction, 1 to 5) of the period: the share of 4 or more"),
        _measure("complaint-rate", _ratio(complaints, served), "%", complaints, served,
                 "Complaints received in the period (Communication.sent) per patient served in it (a finished "
                 "Encounter in the period)"),
        _measure("retention", _ratio(returned, earlier), "%", returned, earlier,
                 "Patients served in the period of the same length before this one who were served again in it"),
        _measure("net-promoter-score", nps, "%", promoters - detractors, answers,
                 "NPS answers of the period: promoters (9-10) minus detractors (0-6), as a share of all answers",
                 promoters={"valueInteger": promoters}, detractors={"valueInteger": detractors}),
        _measure("escalations", float(escalated), "1", escalated, None,
                 "Tasks authored in the period that were escalated (businessStatus escalated or exhausted)"),
    ]
    period = [{"name": "start", "valueDateTime": format_instant(start)},
              {"name": "end", "valueDateTime": format_instant(end)}]
    given = [{"name": "team", "valueReference": {"reference": team}} if team else None,
             {"name": "pathway", "valueReference": {"reference": pathway}} if pathway else None]
    return parameters(*period, *given, {"name": "patients-served", "valueInteger": served}, *measures)


def _minutes(ms: int | None) -> dict[str, Any] | None:
    if ms is None:
        return None
    return {"value": round(ms / 60_000, 1), "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}


def definition(canonical: str, version: str) -> dict[str, Any]:
    """The OperationDefinition of $follow-up-metrics."""
    measure = param("measure", "out", 7, "7", None, "One measure", (
        param("code", "out", 1, "1", "Coding", f"Which measure ({MEASURE})"),
        param("value", "out", 0, "1", "Quantity", "Its value (absent when its denominator is 0)"),
        param("numerator", "out", 0, "1", "integer", "What was counted"),
        param("denominator", "out", 0, "1", "integer", "Out of how many"),
        param("target", "out", 0, "1", "Quantity", "The clinics' target (DOMAIN.md section 4)"),
        param("median", "out", 0, "1", "Quantity", "response-time: the median"),
        param("p90", "out", 0, "1", "Quantity", "response-time: the 90th percentile"),
        param("promoters", "out", 0, "1", "integer", "net-promoter-score: answers of 9 or 10"),
        param("detractors", "out", 0, "1", "integer", "net-promoter-score: answers of 0 to 6"),
        param("definition", "out", 1, "1", "string", "What exactly was counted")))
    return {"resourceType": "OperationDefinition", "id": NAME, "url": f"{canonical}{NAME}", "version": version,
            "name": "FollowUpMetrics", "title": "Follow-up metrics", "status": "active", "kind": "operation",
            "publisher": "CareLoop", "affectsState": False, "code": NAME, "system": True, "type": False,
            "instance": False,
            "description": "The measures the clinics track (DOMAIN.md section 4) for a period, team and pathway: "
                           "follow-up on time, response time, satisfaction, complaint rate, retention, NPS and "
                           "escalations, computed in the store over what the caller may see (docs/"
                           "follow-up-metrics.md).",
            "parameter": [
                param("start", "in", 0, "1", "dateTime", "First day of the period (default: 30 days before end)"),
                param("end", "in", 0, "1", "dateTime", "Last day of the period (default: now)"),
                param("team", "in", 0, "1", "string", "Only Tasks owned by this Organization, PractitionerRole, "
                      "Practitioner or CareTeam (Type/id)"),
                param("pathway", "in", 0, "1", "string", "Only Tasks based on this PlanDefinition (id or "
                      "PlanDefinition/id)"),
                param("start", "out", 1, "1", "dateTime", "The period's first instant"),
                param("end", "out", 1, "1", "dateTime", "The period's last instant"),
                param("team", "out", 0, "1", "Reference", "The team asked for"),
                param("pathway", "out", 0, "1", "Reference", "The pathway asked for"),
                param("patients-served", "out", 1, "1", "integer", "Patients with a finished Encounter in the "
                      "period"),
                measure]}
