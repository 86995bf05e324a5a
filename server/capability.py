"""The CapabilityStatement, generated from the resource types, search registry and interactions served.

https://hl7.org/fhir/R4B/capabilitystatement.html
"""

from __future__ import annotations

from typing import Any

import orjson

from operations.registry import OPERATIONS
from resources.models import FHIR_VERSION, resource_types
from resources.repository import APPEND_ONLY
from resources.search.registry import SearchRegistry

VERSION = "0.1.0"
TYPE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                     "search-type")
SUPPORTED_SEARCH_TYPES = ("token", "string", "reference", "date", "number", "quantity", "uri", "composite")


def security(base_url: str) -> dict[str, Any]:
    """rest.security: SMART on FHIR, with the oauth-uris extension some clients read instead of discovery."""
    origin = base_url[: -len("/fhir")] if base_url.endswith("/fhir") else base_url
    uris = [{"url": name, "valueUri": f"{origin}/auth/{path}"} for name, path in (
        ("authorize", "authorize"), ("token", "token"), ("introspect", "introspect"), ("revoke", "revoke"))]
    return {"cors": True, "service": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
        "description": "SMART App Launch 2 (scopes v1 and v2); discovery at .well-known/smart-configuration",
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                       "extension": uris}]}


def capability_statement(registry: SearchRegistry, base_url: str, software_version: str,
                         auth: bool = True) -> dict[str, Any]:
    """A CapabilityStatement describing exactly what this server implements."""
    resources = []
    for name in sorted(resource_types()):
        params = [
            {"name": p.code, "definition": p.url, "type": p.type}
            for p in sorted(registry.for_type(name).values(), key=lambda p: p.code)
            if p.type in SUPPORTED_SEARCH_TYPES and (p.expression or p.code in ("_id", "_lastUpdated"))
        ]
        operations = [{"name": op.name, "definition": op.definition} for op in OPERATIONS
                      if name in op.resource_types and (op.type_level or op.instance_level)]
        resources.append({
            "type": name,
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS
                            if name not in APPEND_ONLY or code not in ("update", "patch", "delete")],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": name not in APPEND_ONLY,
            "conditionalDelete": "not-supported" if name in APPEND_ONLY else "single",
            "referencePolicy": ["literal", "logical"],
            "searchParam": params,
            **({"operation": operations} if operations else {}),
        })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-24",
        "publisher": "CareLoop",
        "kind": "instance",
        "software": {"name": "CareLoop", "version": software_version},
        "implementation": {"description": "CareLoop FHIR server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"},
                            {"code": "search-system"}],
            "operation": [{"name": op.name, "definition": op.definition} for op in OPERATIONS if op.system_level],
            **({"security": security(base_url)} if auth else {}),
        }],
    }


def capability_bytes(registry: SearchRegistry, base_url: str, software_version: str, auth: bool = True) -> bytes:
    """The CapabilityStatement serialised once at start-up."""
    return orjson.dumps(capability_statement(registry, base_url, software_version, auth))
