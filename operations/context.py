"""What an operation handler receives: the services, the target type and id, and its input.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from consent.audit.trail import AuditTrail
from consent.engine import ConsentPolicy
from operations.cohort import CohortRules, PopulationCache
from operations.parameters import OperationInput
from resources.repository import Repository
from subscriptions.engine import SubscriptionEngine
from terminology.service import TerminologyService


@dataclass(frozen=True)
class OperationContext:
    """The services operations use."""

    repository: Repository
    terminology: TerminologyService
    base_url: str
    subscriptions: SubscriptionEngine | None = None
    cohort: CohortRules = field(default_factory=CohortRules)
    population: PopulationCache = field(default_factory=PopulationCache)
    consent_policy: ConsentPolicy = field(default_factory=ConsentPolicy)
    audit: AuditTrail | None = None  # None with CARELOOP_AUDIT=off


@dataclass(frozen=True)
class OperationCall:
    """One invocation: level, type, id and input."""

    context: OperationContext
    resource_type: str | None
    id: str | None
    input: OperationInput

    async def target(self) -> dict[str, Any] | None:
        """The instance an instance-level call names (404/410 when absent), None at type level."""
        if self.id is None or self.resource_type is None:
            return None
        stored = await self.context.repository.read(self.resource_type, self.id)
        assert stored.body is not None
        found: dict[str, Any] = orjson.loads(stored.body)
        return found
