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
_UNIT_MS = {"s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, "wk": 7 * 86_400_000}


@dataclass(frozen=True)
class Step:
    """One Task template an event on a topic starts."""

    plan_id: str
    action_index: int
    template: dict[str, Any]  # the ActivityDefinition


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
                    out.setdefault(str(trigger["name"]), []).append(Step(str(plan.get("id")), n, template))
    return out


def task_for(step: Step, seq: int, focus: tuple[str, str, int], patient: str | None, now_ms: int,
             service_levels: dict[str, int]) -> dict[str, Any]:
    """The Task one event makes from one template: due by the template's offset or its priority's level."""
    template = step.template
    priority = template.get("priority") if template.get("priority") in PRIORITIES else "routine"
    due = duration_ms(template.get("timingDuration")) or service_levels.get(str(priority), 86_400_000)
    kind, id_, _ = focus
    canonical = str(template.get("url"))
    if template.get("version"):
        canonical += f"|{template['version']}"
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": PATHWAY_EVENT, "value": f"{seq}-{step.plan_id}-{step.action_index}"}],
        "instantiatesCanonical": canonical,
        "basedOn": [{"reference": f"PlanDefinition/{step.plan_id}"}],
        "status": "requested",
        "intent": template.get("intent") if template.get("intent") in TASK_INTENTS else "order",
        "priority": priority,
        "focus": {"reference": f"{kind}/{id_}"},
        "authoredOn": format_instant(now_ms),
        "lastModified": format_instant(now_ms),
        "restriction": {"period": {"start": format_instant(now_ms), "end": format_instant(now_ms + due)}},
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
    return task
