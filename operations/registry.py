"""The operation registry: every `$operation` the server offers, at which levels and for which types.

The routes dispatch through it and the CapabilityStatement lists it. A new operation is one module plus one
line in `OPERATIONS`. https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from operations import (
    access_report,
    access_report_html,
    churn_risk,
    cohort_stats,
    consent_evaluate,
    everything,
    expand,
    export,
    export_request,
    follow_up_metrics,
    lastn,
    lookup,
    match,
    merge,
    meta,
    subscription_status,
    subsumes,
    tier,
    translate,
    validate,
    validate_code,
    verify_audit,
)
from operations.context import OperationCall
from operations.definitions import CANONICAL
from operations.parameters import OperationInput
from resources.errors import Invalid, MethodNotAllowed, NotFound
from resources.models import resource_types

Handler = Callable[[OperationCall], Awaitable[dict[str, Any] | bytes]]


@dataclass(frozen=True)
class Operation:
    """One operation: its name, the types and levels it runs at, its definition and its handler."""

    name: str
    resource_types: tuple[str, ...]  # empty: system level only
    handler: Handler
    definition: str
    type_level: bool = True
    instance_level: bool = True
    system_level: bool = False
    affects_state: bool = False  # False: GET is allowed too
    # the handler decides who may call it (instead of the read scope on the type the route requires)
    own_access: bool = False
    html: Callable[[dict[str, Any]], str] | None = None  # a page for callers who ask for text/html
    # the input parameters it declares (its OperationDefinition's `in` parameters); any other is refused.
    # None: the handler checks them itself ($lastn takes any Observation search parameter)
    parameters: tuple[str, ...] | None = ()

    def levels(self) -> tuple[str, ...]:
        """The levels this operation runs at."""
        return tuple(name for name, on in (("system", self.system_level), ("type", self.type_level),
                                           ("instance", self.instance_level)) if on)

    def refuse_unknown(self, given: OperationInput) -> None:
        """400 naming each parameter the operation does not declare: one silently ignored (`persist`) would
        let a caller believe it took effect. https://hl7.org/fhir/R4B/operations.html#request
        """
        if self.parameters is None:
            return
        unknown = sorted({p["name"] for p in given.parts} - set(self.parameters) - GENERAL_PARAMETERS)
        if unknown:
            names = ", ".join(f"'{n}'" for n in unknown)
            takes = ", ".join(self.parameters) or "no parameters"
            raise Invalid(f"Unknown parameter {names} for ${self.name}; it takes {takes}", code="not-supported",
                          expression=tuple(unknown))


# the parameters of every FHIR interaction that shape the answer, not the operation's input (http.html#parameters)
GENERAL_PARAMETERS = frozenset({"_format", "_pretty", "_summary", "_elements"})
_HL7 = "http://hl7.org/fhir/OperationDefinition/"
_CARELOOP = CANONICAL  # served by this server (operations/definitions.py)
_BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
_EVERY_TYPE = tuple(sorted(resource_types()))  # the Resource-level operations

# The input parameters are those of each OperationDefinition (R4B's for HL7's operations).
_LOOKUP = ("code", "system", "version", "coding", "date", "displayLanguage", "property")
_VALIDATE_CODE = ("url", "context", "valueSet", "valueSetVersion", "code", "system", "systemVersion", "version",
                  "display", "coding", "codeableConcept", "date", "abstract", "displayLanguage", "codeSystem")
_SUBSUMES = ("codeA", "codeB", "system", "version", "codingA", "codingB")
_EXPAND = ("url", "valueSet", "valueSetVersion", "context", "contextDirection", "filter", "date", "offset", "count",
           "includeDesignations", "designation", "includeDefinition", "activeOnly", "excludeNested",
           "excludeNotForUI", "excludePostCoordinated", "displayLanguage", "exclude-system", "system-version",
           "check-system-version", "force-system-version")
_TRANSLATE = ("url", "conceptMap", "conceptMapVersion", "code", "system", "version", "source", "coding",
              "codeableConcept", "target", "targetsystem", "dependency", "reverse")

OPERATIONS: tuple[Operation, ...] = (
    Operation("lookup", ("CodeSystem",), lookup.run, _HL7 + "CodeSystem-lookup", parameters=_LOOKUP),
    Operation("validate-code", ("CodeSystem", "ValueSet"), validate_code.run, _HL7 + "ValueSet-validate-code",
              parameters=_VALIDATE_CODE),
    Operation("subsumes", ("CodeSystem",), subsumes.run, _HL7 + "CodeSystem-subsumes", parameters=_SUBSUMES),
    Operation("expand", ("ValueSet",), expand.run, _HL7 + "ValueSet-expand", parameters=_EXPAND),
    Operation("translate", ("ConceptMap",), translate.run, _HL7 + "ConceptMap-translate", parameters=_TRANSLATE),
    Operation("everything", ("Patient",), everything.run, _HL7 + "Patient-everything", type_level=False,
              parameters=("start", "end", "_since", "_type", "_count")),
    Operation("lastn", ("Observation",), lastn.run, _HL7 + "Observation-lastn", instance_level=False,
              parameters=None),
    Operation("match", ("Patient",), match.run, _HL7 + "Patient-match", instance_level=False,
              parameters=("resource", "onlyCertainMatches", "count")),
    Operation("merge", ("Patient",), merge.run, _HL7 + "Patient-merge", instance_level=False, affects_state=True,
              parameters=("source-patient", "source-patient-identifier", "target-patient",
                          "target-patient-identifier", "result-patient", "preview", "delete-source")),
    Operation("tier", ("Patient",), tier.run, _CARELOOP + "Patient-tier", parameters=("persist",)),
    Operation("churn-risk", ("Patient",), churn_risk.run, _CARELOOP + "Patient-churn-risk", parameters=("persist",)),
    Operation("evaluate", ("Consent",), consent_evaluate.run, _CARELOOP + "Consent-evaluate", instance_level=False,
              parameters=consent_evaluate.KNOWN),
    Operation("access-report", ("Patient",), access_report.run, _CARELOOP + "Patient-access-report",
              type_level=False, own_access=True, html=access_report_html.render, parameters=access_report.PARAMETERS),
    Operation("status", ("Subscription",), subscription_status.status, _BACKPORT + "backport-subscription-status",
              parameters=("id", "status")),
    Operation("events", ("Subscription",), subscription_status.events, _BACKPORT + "backport-subscription-events",
              type_level=False, parameters=("eventsSinceNumber", "eventsUntilNumber", "content")),
    Operation("meta", _EVERY_TYPE, meta.meta, _HL7 + "Resource-meta", system_level=True),
    Operation("meta-add", _EVERY_TYPE, meta.meta_add, _HL7 + "Resource-meta-add", type_level=False, affects_state=True,
              parameters=("meta",)),
    Operation("meta-delete", _EVERY_TYPE, meta.meta_delete, _HL7 + "Resource-meta-delete", type_level=False,
              affects_state=True, parameters=("meta",)),
    Operation("validate", _EVERY_TYPE, validate.run, _HL7 + "Resource-validate",
              parameters=("resource", "mode", "profile")),
    Operation("cohort-stats", (), cohort_stats.run, _CARELOOP + "cohort-stats", type_level=False,
              instance_level=False, system_level=True, parameters=("start", "end", "cross")),
    # the bulk kick-offs are answered by server/routes/bulk.py, which checks their parameters (and the $import
    # body); these lines list them and refuse a synchronous call
    Operation("export", (), export.asynchronous_only, _BULK + "export", type_level=False, instance_level=False,
              system_level=True, parameters=export_request.KNOWN),
    Operation("export", ("Patient",), export.asynchronous_only, _BULK + "patient-export", instance_level=False,
              parameters=export_request.KNOWN),
    Operation("export", ("Group",), export.asynchronous_only, _BULK + "group-export", type_level=False,
              parameters=export_request.KNOWN),
    Operation("import", (), export.asynchronous_only, _CARELOOP + "import", type_level=False, instance_level=False,
              system_level=True, affects_state=True, parameters=None),
    Operation("verify-audit", (), verify_audit.run, _CARELOOP + "verify-audit", type_level=False,
              instance_level=False, system_level=True),
    Operation("follow-up-metrics", (), follow_up_metrics.run, _CARELOOP + follow_up_metrics.NAME, type_level=False,
              instance_level=False, system_level=True, parameters=follow_up_metrics.PARAMETERS),
)


def find(name: str, resource_type: str | None, level: str, method: str) -> Operation:
    """The operation `name` at this level and type; 404 when unknown there, 405 for GET on a state change."""
    for op in OPERATIONS:
        if op.name != name or level not in op.levels():
            continue
        if level != "system" and resource_type not in op.resource_types:
            continue
        if method == "GET" and op.affects_state:
            raise MethodNotAllowed(f"${name} changes data: use POST")
        return op
    where = f"on {resource_type}" if resource_type else "at the system level"
    raise NotFound(f"Operation ${name} is not supported {where} ({level} level)", code="not-supported")
