"""A patient's view of the AuditEvents about their own record: other people's identities as the clinic configures.

Right of access (issue 29): a patient may read who accessed their record; whether staff appear by name, by role
only, or not at all is the clinic's choice (CARELOOP_AUDIT_PATIENT_SHOWS_STAFF = names | roles | none).
https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from typing import Any

import orjson

STAFF_VIEWS = ("names", "roles", "none")


def _role_text(agent: dict[str, Any]) -> str:
    for role in agent.get("role", ()):
        if role.get("text"):
            return str(role["text"])
        for coding in role.get("coding", ()):
            if coding.get("display") or coding.get("code"):
                return str(coding.get("display") or coding.get("code"))
    return "clinic staff"


def _agent_for_patient(agent: dict[str, Any], shows: str) -> dict[str, Any]:
    kept = {k: v for k, v in agent.items() if k in ("type", "requestor", "purposeOfUse")}
    if shows == "names":  # who they are (their Practitioner reference or name) and their role; not their address
        kept.update({k: v for k, v in agent.items() if k in ("who", "name", "role")})
    elif shows == "roles":
        kept["who"] = {"display": _role_text(agent)}
        if agent.get("role"):
            kept["role"] = agent["role"]
    return kept


def for_patient(body: bytes, patient_id: str, shows: str) -> bytes:
    """The stored AuditEvent as its patient may see it: the people acting shown by name, role or not at all."""
    event = orjson.loads(body)
    own = f"Patient/{patient_id}"
    agents = []
    for agent in event.get("agent", ()):
        who = agent.get("who") or {}
        if agent.get("requestor") and who.get("reference") != own:
            agents.append(_agent_for_patient(agent, shows))
        else:
            agents.append({k: v for k, v in agent.items() if k != "network"} if who.get("reference") != own
                          else agent)
    event["agent"] = agents
    return orjson.dumps(event)
