"""The OperationDefinition of $import (CareLoop's, after the Bulk Data Import proposal), served at its canonical URL.

https://github.com/smart-on-fhir/bulk-import/blob/master/import.md
"""

from __future__ import annotations

from typing import Any

from operations.parameter_definitions import param


def definition(canonical: str, version: str) -> dict[str, Any]:
    """The OperationDefinition of $import (served at canonical + "import")."""
    return {
        "resourceType": "OperationDefinition", "id": "import", "url": f"{canonical}import", "version": version,
        "name": "BulkImport", "title": "Bulk import", "status": "active", "kind": "operation",
        "publisher": "CareLoop", "affectsState": True, "code": "import", "system": True, "type": False,
        "instance": False,
        "description": "Load NDJSON files asynchronously (Prefer: respond-async; 202 and a status URL), each line "
                       "through the same write path as a create or update, with a per-line error file. The body is "
                       "the NDJSON itself (application/fhir+ndjson), or this Parameters naming files to fetch from "
                       "allowed locations. Imported resources carry the tag "
                       "http://careloop.health/fhir/CodeSystem/careloop|import (docs/bulk-data.md).",
        "parameter": [
            param("inputFormat", "in", 0, "1", "code", "application/fhir+ndjson (the default and only format)"),
            param("input", "in", 0, "*", None, "One file to fetch", (
                param("type", "in", 0, "1", "code", "The resource type every line of the file holds"),
                param("url", "in", 1, "1", "url", "Where to fetch it: under CARELOOP_BULK_IMPORT_SOURCES")))]}
