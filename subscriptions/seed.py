"""The default follow-up pathways (DOMAIN.md section 3) as data: topics, Task templates and plans.

Each shipped resource is written once, under its fixed id, when the store does not hold it: a clinic's edits
and deletions are kept across restarts and upgrades. https://hl7.org/fhir/R4B/plandefinition.html
"""

from __future__ import annotations

import logging
from importlib import resources as pkg
from typing import Any

import orjson

from resources.repository import Repository

log = logging.getLogger("careloop.subscriptions")


# service-levels.json: the Task `deadline` SearchParameter and the satisfaction Questionnaire (issue 30)
_FILES = ("pathways.json", "service-levels.json")


def shipped() -> list[dict[str, Any]]:
    """The shipped pathway resources, topics first so the plans that name them follow."""
    found = []
    for name in _FILES:
        bundle = orjson.loads(pkg.files("subscriptions").joinpath("data", name).read_bytes())
        found.extend(entry["resource"] for entry in bundle["entry"])
    return found


async def seed_pathways(repository: Repository) -> int:
    """Write the shipped pathway resources the store has never held; how many were written."""
    written = 0
    for resource in shipped():
        if await repository.store.read(resource["resourceType"], resource["id"]) is not None:
            continue  # present, edited or deleted by the clinic: theirs to keep
        await repository.update(resource["resourceType"], resource["id"], resource)
        written += 1
    if written:
        log.info("Loaded %d follow-up pathway resources", written)
    return written
