"""Loading the shipped terminology content into the store at first start (and again when it changes).

The content: the R4B specification's CodeSystems and ValueSets, CareLoop's own code systems, a LOINC
subset for vitals and labs, a SNOMED CT subset for the conditions of the clinic rules, a ConceptMap
and the ObservationDefinitions holding units and reference ranges.
https://hl7.org/fhir/R4B/terminology-module.html
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import Iterator
from importlib import resources as pkg
from typing import Any

import orjson

from resources.ids import now_ms
from resources.repository import Repository
from resources.search.query import Filter, SearchQuery, TokenValue

log = logging.getLogger("careloop.terminology")

SEED_SYSTEM = "http://careloop.health/fhir/CodeSystem/seed"
BUNDLES = ("careloop.json", "loinc.json", "snomed.json", "observation-definitions.json")
R4B = "r4b-terminology.ndjson.gz"
_CHUNK = 250


def _data(name: str) -> bytes:
    return pkg.files("terminology").joinpath("data", name).read_bytes()


def content_version() -> str:
    """A digest of the shipped content: it changes when any data file changes."""
    digest = hashlib.sha256()
    for name in (R4B, *BUNDLES):
        digest.update(_data(name))
    return digest.hexdigest()[:16]


def shipped_resources() -> Iterator[dict[str, Any]]:
    """Every resource of the shipped content, R4B first so CareLoop's own content follows it."""
    for line in gzip.decompress(_data(R4B)).splitlines():
        if line.strip():
            yield orjson.loads(line)
    for name in BUNDLES:
        for entry in orjson.loads(_data(name))["entry"]:
            yield entry["resource"]


async def is_seeded(repository: Repository, version: str) -> bool:
    """True when the store already holds this version of the content."""
    tag = Filter("_tag", "token", None, (TokenValue(f"terminology-{version}", SEED_SYSTEM, False),))
    page = await repository.store.search(SearchQuery("ObservationDefinition", (tag,), count=1))
    return bool(page.resources)


async def seed(repository: Repository) -> int:
    """Store the shipped content unless this version is stored already; the number of resources written."""
    version = content_version()
    if await is_seeded(repository, version):
        return 0
    tag = {"system": SEED_SYSTEM, "code": f"terminology-{version}", "display": "Shipped with CareLoop"}
    batch: list[dict[str, Any]] = []
    written = 0
    for resource in shipped_resources():
        meta = dict(resource.get("meta") or {})
        meta["tag"] = [t for t in meta.get("tag") or [] if t.get("system") != SEED_SYSTEM] + [tag]
        batch.append({**resource, "meta": meta})
        if len(batch) >= _CHUNK:
            written += await _write(repository, batch)
            batch = []
    if batch:
        written += await _write(repository, batch)
    log.info("Loaded %d terminology resources (content %s)", written, version)
    return written


async def _write(repository: Repository, batch: list[dict[str, Any]]) -> int:
    # the shipped files are checked by the test suite; at start-up they go straight to the store
    async with repository.store.write_session() as session:
        writes = []
        for resource in batch:
            kind, id_ = resource["resourceType"], resource["id"]
            current = await session.head(kind, id_)
            vid = current.vid + 1 if current else 1
            action = "update" if current and not current.deleted else "create"
            writes.append(repository.prepare(kind, id_, resource, vid, now_ms(), action,
                                             current.vid if current else 0, "PUT"))
        await session.apply(writes)
    return len(batch)
