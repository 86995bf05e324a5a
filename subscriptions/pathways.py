"""Follow-up pathways as data: a PlanDefinition (eca-rule) whose actions fire on a topic and name Task templates.

Each action has a trigger of type named-event whose name is a SubscriptionTopic's canonical URL, and a
definitionCanonical naming an ActivityDefinition of kind Task; its priority and timingDuration (the due
offset) make the Task's service level. https://hl7.org/fhir/R4B/plandefinition.html,
https://hl7.org/fhir/R4B/activitydefinition.html
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resources.search.dates import format_instant

PRIORITIES = ("routine", "urgent", "asap", "stat")
TASK_INTENTS = frozenset({"unknown", "proposal", "plan", "order", "original-order", "reflex-order", "filler-order",
                          "instance-order", "option"})
PATHWAY_EVENT = "http://careloop.health/fhir/sid/pathway-event"
_SD = "http://careloop.health/fhir/StructureDefinition/"
TASK_OWNER = _SD + "task-owner"  # on an ActivityDefinition: rule, tier and default owner
TASK_INPUT = _SD + "task-input"  # on an ActivityDefinition: a canonical the Task carries as input (a Questionnaire)
FOLLOWS_TRIGGER = _SD + "task-follows-trigger"  # on an ActivityDefinition: deadline from, and cancel with, the trigger
STOPS_ON = _SD + "plan-stops-on"  # on a PlanDefinition: a topic whose event cancels the plan's open Tasks
FHIR_QUERY = "application/x-fhir-query"
OPEN_STATUSES = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")
_UNIT_MS = {"s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, "wk": 7 * 86_400_000}


@dataclass(frozen=True)
class Step:
    """One Task template an event on a topic starts."""

    plan_id: str
    action_index: int
    template: dict[str, Any]  # the ActivityDefinition
    conditions: tuple[tuple[str, str], ...] = ()  # (exists | none, FHIR query with {{patient}} and {{focus}})
    delay_ms: int = 0  # the action's timingDuration: the step starts this long after its event

    @property
    def key(self) -> str:
        """The step's name in Task identifiers: plan and action."""
        return f"{self.plan_id}-{self.action_index}"


def extension(element: dict[str, Any], url: str) -> dict[str, Any]:
    """The parts of a complex extension by their url (empty when absent)."""
    found = [e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]
    return {str(e.get("url")): e for e in found[0].get("extension") or []} if found else {}


def _conditions(action: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """An action's applicability conditions written as FHIR queries (expression.name: exists or none)."""
    out = []
    for condition in action.get("condition") or []:
        expression = condition.get("expression") or {}
        if condition.get("kind") == "applicability" and expression.get("language") == FHIR_QUERY:
            out.append(("none" if expression.get("name") == "none" else "exists", str(expression.get("expression"))))
    return tuple(out)


def duration_ms(duration: dict[str, Any] | None) -> int | None:
    """A Duration (UCUM s, min, h, d, wk) in milliseconds; None when absent or in another unit."""
    if not duration:
        return None
    value, unit = duration.get("value"), duration.get("code") or duration.get("unit")
    if not isinstance(value, int | float) or unit not in _UNIT_MS:
        return None
    return int(value * _UNIT_MS[unit])


def steps_by_topic(plans: list[dict[str, Any]], templates: dict[str, dict[str, Any]]) -> dict[str, list[Step]]:
    """Topic URL -> the Task templates its events start, from active eca-rule PlanDefinitions."""
    out: dict[str, list[Step]] = {}
    for plan in plans:
        if plan.get("status") != "active":
            continue
        for n, action in enumerate(plan.get("action") or []):
            canonical = str(action.get("definitionCanonical") or "").split("|")[0]
            template = templates.get(canonical)
            if template is None or template.get("status") != "active" or template.get("kind") != "Task":
                continue
            for trigger in action.get("trigger") or []:
                if trigger.get("type") == "named-event" and trigger.get("name"):
                    out.setdefault(str(trigger["name"]), []).append(Step(
                        str(plan.get("id")), n, template, _conditions(action),
                        duration_ms(action.get("timingDuration")) or 0))
    return out


def stops_by_topic(plans: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Topic URL -> the plans whose open Tasks an event on it cancels (the patient returned, say)."""
    out: dict[str, list[str]] = {}
    for plan in plans:
        if plan.get("status") != "active":
            continue
        for ext in plan.get("extension") or []:
            if isinstance(ext, dict) and ext.get("url") == STOPS_ON and ext.get("valueCanonical"):
                out.setdefault(str(ext["valueCanonical"]), []).append(str(plan.get("id")))
    return out


def due_at(anchor_ms: int, offset_ms: int, level_ms: int, now: int) -> int:
    """The deadline of a step whose event happened at anchor_ms: anchor + offset; a late-recorded event whose
    deadline has already passed gets its offset, at most its priority's service level, from now."""
    return anchor_ms + offset_ms if anchor_ms + offset_ms > now else now + min(offset_ms, level_ms)


def task_for(step: Step, event: str, focus: tuple[str, str, int], patient: str | None, now_ms: int,
             service_levels: dict[str, int], anchor_ms: int | None = None, owner: dict[str, Any] | None = None,
             deadline_ms: int | None = None) -> dict[str, Any]:
    """The Task one event makes from one template: due by the template's offset or its priority's level, counted
    from the event's own time (anchor_ms) plus the step's delay; identified by step, trigger and event key."""
    template = step.template
    priority = template.get("priority") if template.get("priority") in PRIORITIES else "routine"
    level = service_levels.get(str(priority), 86_400_000)
    due = duration_ms(template.get("timingDuration")) or level
    start = (now_ms if anchor_ms is None else min(anchor_ms, now_ms)) + step.delay_ms
    end = deadline_ms if deadline_ms is not None else due_at(start, due, level, now_ms)
    kind, id_, _ = focus
    canonical = str(template.get("url"))
    if template.get("version"):
        canonical += f"|{template['version']}"
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": PATHWAY_EVENT, "value": f"{step.key}:{kind}/{id_}:{event}"}],
        "instantiatesCanonical": canonical,
        "basedOn": [{"reference": f"PlanDefinition/{step.plan_id}"}],
        "status": "requested",
        "intent": template.get("intent") if template.get("intent") in TASK_INTENTS else "order",
        "priority": priority,
        "focus": {"reference": f"{kind}/{id_}"},
        "authoredOn": format_instant(now_ms),
        "lastModified": format_instant(now_ms),
        "restriction": {"period": {"start": format_instant(start if deadline_ms is None else now_ms),
                                   "end": format_instant(end)}},
    }
    for source, target in (("code", "code"), ("description", "description")):
        if template.get(source):
            task[target] = template[source]
    if "description" not in task and template.get("title"):
        task["description"] = template["title"]
    if patient is not None:
        task["for"] = {"reference": f"Patient/{patient}"}
    roles = [p["role"] for p in template.get("participant") or [] if isinstance(p, dict) and p.get("role")]
    if roles:
        task["performerType"] = roles
    if owner is not None:
        task["owner"] = owner
    for ext in template.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == TASK_INPUT and ext.get("valueCanonical"):
            task.setdefault("input", []).append({"type": {"text": "questionnaire"},
                                                 "valueCanonical": ext["valueCanonical"]})
    return task
