"""Validation of many resources under way: structural errors found at once, model checks still running.

https://hl7.org/fhir/R4B/validation.html
"""

from __future__ import annotations

from dataclasses import dataclass

from resources.errors import FhirError, Issue
from resources.model_pool import ModelJob
from resources.validation import raise_issues


@dataclass
class ValidationJob:
    """Validation of many resources under way: errors found so far and the model checks still running."""

    errors: list[Exception | None]
    pending: list[tuple[int, str, list[Issue]]]
    models: ModelJob
    submitted: list[int]  # body index of each model result, in order

    def first_error(self) -> tuple[int, Exception] | None:
        """The first error already known (before the model checks finish)."""
        return next(((i, e) for i, e in enumerate(self.errors) if e is not None), None)

    async def finish(self) -> list[Exception | None]:
        """Wait for the model checks and return one error or None per body."""
        results = await self.models.result()
        by_index = dict(zip(self.submitted, results, strict=True))
        for index, kind, references in self.pending:
            model = by_index.get(index, [])
            try:
                raise_issues(kind, [], model, references)
            except FhirError as exc:
                self.errors[index] = exc
        return self.errors
