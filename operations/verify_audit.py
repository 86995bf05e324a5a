"""$verify-audit: check the audit trail's hash chain and signed checkpoints (CareLoop operation, auditors only).

Answers a Parameters resource: whether the trail holds, the first event whose hash or link breaks, and any
truncation after the last checkpoint. https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from typing import Any

from consent.audit.verify import Report
from operations.context import OperationCall
from resources.errors import Forbidden, NotSupported
from resources.guard import current_guard


def parameters(report: Report) -> dict[str, Any]:
    """A verification report as Parameters."""
    parts: list[dict[str, Any]] = [{"name": "result", "valueBoolean": report.ok},
                                   {"name": "checked", "valueInteger": report.checked},
                                   {"name": "head", "part": [{"name": "sequence", "valueInteger": report.head[0]},
                                                             {"name": "hash", "valueString": report.head[1]}]}]
    if report.checkpoint is not None:
        parts.append({"name": "checkpoint", "part": [
            {"name": "sequence", "valueInteger": report.checkpoint.sequence},
            {"name": "hash", "valueString": report.checkpoint.hash},
            {"name": "recorded", "valueInstant": report.checkpoint.recorded},
            {"name": "signature", "valueCode": report.signature}]})
    if report.first_break is not None:
        found = report.first_break
        part: list[dict[str, Any]] = [{"name": "sequence", "valueInteger": found.sequence},
                                      {"name": "problem", "valueCode": found.problem},
                                      {"name": "detail", "valueString": found.detail}]
        if found.reference:
            part.insert(1, {"name": "event", "valueReference": {"reference": found.reference}})
        for other in found.references[1:]:  # the other AuditEvents of the broken record
            part.append({"name": "event", "valueReference": {"reference": other}})
        if found.chain is not None:
            part.append({"name": "chain", "valueString": found.chain})
        parts.append({"name": "break", "part": part})
    if report.truncation is not None:
        parts.append({"name": "truncation", "valueString": report.truncation})
    for state in report.chains:  # every writer instance's chain (the audit log)
        chain: list[dict[str, Any]] = [{"name": "id", "valueString": state.chain},
                                       {"name": "checked", "valueInteger": state.checked},
                                       {"name": "sequence", "valueInteger": state.head[0]},
                                       {"name": "hash", "valueString": state.head[1]},
                                       {"name": "signature", "valueCode": state.signature}]
        if state.checkpoint is not None:
            chain.append({"name": "checkpoint", "valueInteger": state.checkpoint.sequence})
        parts.append({"name": "chain", "part": chain})
    return {"resourceType": "Parameters", "parameter": parts}


async def run(call: OperationCall) -> dict[str, Any]:
    """Verify the whole trail."""
    guard = current_guard()
    if guard is not None:
        guard.require("AuditEvent", "s")  # the auditor role or a backend audit scope (consent/access.py)
        if guard.patient_bound("AuditEvent", "s"):
            raise Forbidden("Verifying the audit trail is for auditors", code="forbidden")
    if call.context.audit is None:
        raise NotSupported("The audit trail is off on this server (CARELOOP_AUDIT=off)")
    return parameters(await call.context.audit.verify())
