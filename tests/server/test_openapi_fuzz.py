"""A bounded schemathesis run against the live server's OpenAPI document: no answer may be a 500.

https://schemathesis.readthedocs.io/
"""

from __future__ import annotations

import hypothesis
import schemathesis

EXAMPLES_PER_OPERATION = 25


def test_no_server_errors(live_server: str) -> None:
    schema = schemathesis.openapi.from_url(live_server.removesuffix("/fhir") + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    calls = [0]
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def run(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            calls[0] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} {response.text[:300]}")
            elif response.status_code >= 400:
                assert response.json()["resourceType"] == "OperationOutcome", response.text
            # every FHIR answer but the public documents, whatever route or error built it (issue 27 item 8)
            path = case.formatted_path
            if path.startswith("/fhir") and path not in ("/fhir/metadata", "/fhir/.well-known/smart-configuration"):
                for name, value in (("cache-control", "no-store"), ("x-content-type-options", "nosniff"),
                                    ("referrer-policy", "no-referrer")):
                    found = response.headers.get(name)  # schemathesis lists each header's values
                    if found not in ([value], value):
                        failures.append(f"{case.method} {path} -> {response.status_code}: {name} {found}")

        run()
    assert failures == [], "\n".join(failures[:20])
    assert calls[0] >= 10 * len(operations)
