"""SearchParameter resources stored at run time become live search parameters, and existing data is
reindexed for them.

https://hl7.org/fhir/R4B/searchparameter.html
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from resources.errors import Issue
from resources.search.index import Indexer
from resources.search.registry import SearchRegistry, narrow_expression
from resources.store.protocol import Write

SEARCH_TYPES = ("number", "date", "string", "token", "reference", "composite", "quantity", "uri")


class _Collect(ErrorListener):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def syntaxError(self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any) -> None:  # noqa: N802
        self.errors.append(f"column {column + 1}: {msg}")


def fhirpath_syntax_errors(expression: str) -> list[str]:
    """Syntax errors of a FHIRPath expression (fhirpathpy's own parser recovers from them silently)."""
    listener = _Collect()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.expression()
    if not listener.errors and tokens.LA(1) != Token.EOF:
        listener.errors.append(f"unexpected text after position {tokens.LT(1).start}")
    return listener.errors


def definition_issues(resource: dict[str, Any], resource_types: Iterable[str]) -> list[Issue]:
    """Why a SearchParameter cannot serve as a search parameter here (empty when it can)."""
    issues = []
    known = set(resource_types) | {"Resource", "DomainResource"}
    code, kind, bases = resource.get("code"), resource.get("type"), resource.get("base", [])
    if not isinstance(code, str) or not code:
        issues.append(Issue("required", "SearchParameter.code is required", expression=("SearchParameter.code",)))
    if kind not in SEARCH_TYPES:
        issues.append(Issue("value", f"SearchParameter.type '{kind}' cannot be searched here",
                            expression=("SearchParameter.type",)))
    unknown = [b for b in bases if b not in known]
    if unknown:
        issues.append(Issue("value", f"SearchParameter.base names unknown types: {', '.join(unknown)}",
                            expression=("SearchParameter.base",)))
    expression = resource.get("expression")
    if kind != "composite" and not isinstance(expression, str):
        issues.append(Issue("required", "SearchParameter.expression is required",
                            expression=("SearchParameter.expression",)))
    elif isinstance(expression, str):
        errors = fhirpath_syntax_errors(expression)
        if errors:
            issues.append(Issue("value", f"SearchParameter.expression is not valid FHIRPath: {errors[0]}",
                                expression=("SearchParameter.expression",)))
        if not issues and not any(narrow_expression(expression, b) for b in bases):
            issues.append(Issue("value", "SearchParameter.expression selects none of its base types",
                                expression=("SearchParameter.expression",)))
    return issues


class CustomParameters:
    """Keeps the registry in step with stored SearchParameter resources; reports the types to reindex."""

    def __init__(self, registry: SearchRegistry, indexer: Indexer, resource_types: Iterable[str]) -> None:
        self._registry = registry
        self._indexer = indexer
        self._types = sorted(resource_types)
        self._by_id: dict[str, str] = {}  # SearchParameter id -> canonical url it registered
        self._official = {p.url for params in registry.by_type.values() for p in params.values()}

    def apply(self, resource_id: str, resource: dict[str, Any] | None) -> list[str]:
        """Register, replace or remove one definition; returns the resource types to reindex."""
        previous = self._by_id.pop(resource_id, None)
        if previous and previous not in self._official:
            self._registry.remove_url(previous)
        if resource is None or resource.get("status") == "retired":
            self._indexer.invalidate()
            return []
        url = resource.get("url") or f"urn:careloop:SearchParameter/{resource_id}"
        added = self._registry.add_definition({**resource, "url": url}, self._types)
        self._by_id[resource_id] = url
        self._indexer.invalidate()
        return sorted({p.resource_type for p in added})

    def on_commit(self, writes: list[Write]) -> list[str]:
        """React to committed writes of SearchParameter resources; returns the types to reindex."""
        types: set[str] = set()
        for write in writes:
            if write.type == "SearchParameter":
                body = orjson.loads(write.body) if write.body else None
                types.update(self.apply(write.id, body))
        return sorted(types)
