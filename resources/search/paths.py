"""Compile search-parameter FHIRPath expressions into fast accessors, falling back to fhirpathpy.

Most R4B definitions are plain paths, unions, type casts or `where(resolve() is T)` filters; those are
compiled into Python closures over the JSON so ingest stays fast. Anything else runs through fhirpathpy.
https://hl7.org/fhir/R4B/searchparameter.html#expression
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any

import fhirpathpy
import orjson

from resources.search.registry import split_union, strip_parens

Accessor = Callable[[dict[str, Any]], list[Any]]
Step = Callable[[list[Any]], list[Any]]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TYPE_CALL = re.compile(r"(?:as|ofType)\(([A-Za-z]+)\)")
_RESOLVE_IS = re.compile(r"where\(resolve\(\) is ([A-Za-z]+)\)")
_WHERE_EQ = re.compile(r"where\(([A-Za-z_]+)\s*=\s*'([^']*)'\)")
_AS_SUFFIX = re.compile(r"^(.*\S)\s+as\s+([A-Za-z]+)$")


@cache
def fhirpath_model() -> dict[str, Any]:
    """fhirpathpy's R4 model tables (choice types, element types), which serve R4B as well.

    Read from fhirpathpy's files directly: importing fhirpathpy.models parses the tables of all four FHIR
    versions it knows (about 5 MB that would stay in memory).
    """
    spec = importlib.util.find_spec("fhirpathpy")
    assert spec is not None and spec.submodule_search_locations is not None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models" / "r4"
    return {path.stem: orjson.loads(path.read_bytes()) for path in sorted(folder.glob("*.json"))}


@cache
def _choice_keys() -> dict[str, tuple[str, ...]]:
    # element name -> the JSON keys its [x] choice can take (value -> valueQuantity, valueString, ...)
    keys: dict[str, set[str]] = {}
    for path, types in fhirpath_model()["choiceTypePaths"].items():
        name = path.rsplit(".", 1)[-1]
        keys.setdefault(name, set()).update(name + t[0].upper() + t[1:] for t in types)
    return {name: tuple(sorted(found)) for name, found in keys.items()}


def split_steps(text: str) -> list[str]:
    """A FHIRPath path split on its top-level dots."""
    steps, depth, start, quote = [], 0, 0, False
    for i, ch in enumerate(text):
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and depth == 0 and ch == ".":
            steps.append(text[start:i])
            start = i + 1
    steps.append(text[start:])
    return steps


def _flatten(value: Any, out: list[Any]) -> None:
    if isinstance(value, list):
        out.extend(v for v in value if v is not None)
    elif value is not None:
        out.append(value)


def _field_step(name: str, cast: str | None) -> Step:
    typed_key = name + cast[0].upper() + cast[1:] if cast else None
    choices = _choice_keys().get(name, ())

    def step(nodes: list[Any]) -> list[Any]:
        out: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            if typed_key is not None:
                if typed_key in node:
                    _flatten(node[typed_key], out)
                elif name in node:
                    _flatten(node[name], out)
                continue
            if name in node:
                _flatten(node[name], out)
                continue
            for key in choices:  # a choice element [x]: valueQuantity, effectiveDateTime, ...
                if key in node:
                    _flatten(node[key], out)
        return out

    return step


# Links a transaction will replace (placeholder -> Type/id): resolve() sees through them while a resource is
# indexed before its references are rewritten.
PENDING_LINKS: ContextVar[Mapping[str, str] | None] = ContextVar("pending_links", default=None)


def _resolve_is(type_name: str) -> Step:
    def step(nodes: list[Any]) -> list[Any]:
        kept = []
        links = PENDING_LINKS.get()
        for node in nodes:
            if not isinstance(node, dict):
                continue
            ref = node.get("reference")
            if links and isinstance(ref, str) and ref in links:
                ref = links[ref]
            typed = isinstance(ref, str) and (ref.startswith(type_name + "/") or f"/{type_name}/" in ref)
            if typed or node.get("type") == type_name:
                kept.append(node)
        return kept

    return step


def _where_eq(field: str, literal: str) -> Step:
    def step(nodes: list[Any]) -> list[Any]:
        return [n for n in nodes if isinstance(n, dict) and n.get(field) == literal]

    return step


def _compile_part(part: str) -> list[Step] | None:
    text = strip_parens(part)
    cast: str | None = None
    suffix = _AS_SUFFIX.match(text)
    if suffix:
        text, cast = strip_parens(suffix.group(1)), suffix.group(2)
    raw = split_steps(text)
    if not raw or not _IDENT.fullmatch(raw[0]):
        return None
    steps: list[Step] = []
    pending: str | None = None  # a field name waiting to learn whether a cast follows it
    for token in raw[1:] + ([f"as({cast})"] if cast else []):
        type_call = _TYPE_CALL.fullmatch(token)
        if type_call:
            if pending is None:
                return None
            steps.append(_field_step(pending, type_call.group(1)))
            pending = None
            continue
        if pending is not None:
            steps.append(_field_step(pending, None))
            pending = None
        if _IDENT.fullmatch(token):
            pending = token
        elif (match := _RESOLVE_IS.fullmatch(token)) is not None:
            steps.append(_resolve_is(match.group(1)))
        elif (match := _WHERE_EQ.fullmatch(token)) is not None:
            steps.append(_where_eq(match.group(1), match.group(2)))
        else:
            return None
    if pending is not None:
        steps.append(_field_step(pending, None))
    return steps


def compile_fast(expression: str) -> Accessor | None:
    """A closure evaluating a simple expression, or None when it needs full FHIRPath."""
    compiled = [_compile_part(p) for p in split_union(expression)]
    if not compiled or any(c is None for c in compiled):
        return None
    pipelines: list[list[Step]] = [c for c in compiled if c is not None]

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        results: list[Any] = []
        for steps in pipelines:
            nodes: list[Any] = [resource]
            for step in steps:
                nodes = step(nodes)
                if not nodes:
                    break
            results.extend(nodes)
        return results

    return evaluate


def _resolve(nodes: list[Any]) -> list[Any]:
    # fhirpathpy has no resolve(): type a reference from its URL, enough for `resolve() is T`.
    out = []
    for node in nodes:
        ref = node.get("reference") if isinstance(node, dict) else None
        if isinstance(ref, str) and "/" in ref:
            parts = ref.split("/")
            type_name = parts[-4] if "_history" in parts and len(parts) >= 4 else parts[-2]
            out.append({"resourceType": type_name, "id": parts[-1]})
    return out


_USER_FUNCTIONS = {"resolve": {"fn": _resolve, "arity": {0: []}}}


def _as_to_of_type(expression: str) -> str:
    # a strict `x as T` fails on collections in fhirpathpy; ofType(T) has the intended meaning here.
    return re.sub(r"\s+as\s+([A-Za-z]+)", r".ofType(\1)", expression)


def compile_fhirpath(expression: str) -> Accessor:
    """A closure evaluating an expression with fhirpathpy (the slow, complete path)."""
    fn = fhirpathpy.compile(_as_to_of_type(expression), model=fhirpath_model(),
                            options={"userInvocationTable": _USER_FUNCTIONS})

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        try:
            values = fn(resource, {})
        except Exception:  # an expression fhirpathpy cannot run must not block a write
            return []
        return [v if isinstance(v, dict | list | str | int | float | bool) else str(v) for v in values]

    return evaluate


@cache
def compile_expression(expression: str) -> Accessor:
    """The fastest correct accessor for an expression."""
    return compile_fast(expression) or compile_fhirpath(expression)
