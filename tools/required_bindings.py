"""Build terminology/data/required-bindings.json from the R4B StructureDefinitions (run by hand, not at runtime).

Usage: python -m tools.required_bindings <unpacked hl7.fhir.r4b.core 4.3.0 package dir>
(`npm pack hl7.fhir.r4b.core@4.3.0` fetches it). For every resource and data type it records the elements of
type `code` with a required binding, and expands each bound value set against the shipped R4B terminology.
https://hl7.org/fhir/R4B/terminologies.html#required
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from resources.errors import FhirError
from terminology.codesystem import CodeSystemIndex
from terminology.expansion import Expander
from terminology.seed import shipped_resources

OUT = Path(__file__).parent.parent / "terminology" / "data" / "required-bindings.json"
NOT_WALKED = {"extension", "modifierExtension", "contained", "id"}


class Memory:
    """The shipped terminology as an in-memory content source."""

    def __init__(self) -> None:
        self.systems: dict[str, dict[str, Any]] = {}
        self.sets: dict[str, dict[str, Any]] = {}
        for resource in shipped_resources():
            if resource["resourceType"] == "CodeSystem" and resource.get("content") in ("complete", "fragment"):
                self.systems.setdefault(resource["url"], resource)
            elif resource["resourceType"] == "ValueSet":
                self.sets.setdefault(resource["url"], resource)

    async def code_system(self, url: str, version: str | None = None) -> CodeSystemIndex | None:
        found = self.systems.get(url)
        return CodeSystemIndex.of(found) if found else None

    async def value_set(self, url: str, version: str | None = None) -> dict[str, Any] | None:
        return self.sets.get(url)


def _tree(definition: dict[str, Any], kinds: set[str]) -> dict[str, Any]:
    """element key tree -> value set url | '#Type' for one StructureDefinition's snapshot."""
    root: dict[str, Any] = {}
    base = definition["type"]
    for element in definition["snapshot"]["element"]:
        path: str = element["path"]
        parts = path.split(".")[1:]
        if not parts or NOT_WALKED & set(parts):
            continue
        types = [t["code"] for t in element.get("type") or []]
        leaf = parts[-1]
        keys = [leaf] if not leaf.endswith("[x]") else [leaf[:-3] + t[:1].upper() + t[1:] for t in types]
        binding = element.get("binding") or {}
        for key, kind in zip(keys, types if leaf.endswith("[x]") else types[:1] or [""], strict=False):
            node = root
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    break
            else:
                if kind == "code" and binding.get("strength") == "required" and binding.get("valueSet"):
                    node[key] = binding["valueSet"].split("|")[0]
                elif kind in kinds and kind != base:
                    node.setdefault(key, f"#{kind}")
    return root


def _prune(node: Any, types: dict[str, Any], alive: set[str]) -> Any:
    if isinstance(node, str):
        return node if not node.startswith("#") or node[1:] in alive else None
    out = {k: p for k, v in node.items() if (p := _prune(v, types, alive)) not in (None, {})}
    return out


async def main(package: Path) -> None:
    definitions = [orjson.loads(p.read_bytes()) for p in package.glob("StructureDefinition-*.json")]
    definitions = [d for d in definitions if d.get("derivation") == "specialization" and d.get("kind") in (
        "resource", "complex-type") and d.get("snapshot") and not d.get("abstract")]
    kinds = {d["type"] for d in definitions if d["kind"] == "complex-type"}
    trees = {d["type"]: _tree(d, kinds) for d in definitions}
    alive: set[str] = set()
    while True:  # a type is worth checking when it holds a binding, directly or through another type
        pruned = {name: _prune(tree, trees, alive) for name, tree in trees.items()}
        grown = {name for name, tree in pruned.items() if tree}
        if grown == alive:
            break
        alive = grown
    types = {name: tree for name, tree in pruned.items() if tree}
    urls = sorted({v for tree in types.values() for v in _leaves(tree) if not v.startswith("#")})
    expander = Expander(Memory(), limit=5000)
    value_sets: dict[str, list[str]] = {}
    for url in urls:
        try:
            value_sets[url] = sorted({c.code for c in await expander.expand_url(url)})
        except FhirError as exc:  # a value set on a system not shipped (currencies, mime types) stays unchecked
            sys.stderr.write(f"not checked: {url}: {exc}\n")
    types = {name: t for name, tree in types.items() if (t := _keep(tree, value_sets))}
    OUT.write_bytes(orjson.dumps({"source": "hl7.fhir.r4b.core 4.3.0", "valueSets": value_sets, "types": types},
                                 option=orjson.OPT_SORT_KEYS))
    sys.stdout.write(f"{len(types)} types, {len(value_sets)} value sets -> {OUT}\n")


def _leaves(node: Any) -> list[str]:
    return [node] if isinstance(node, str) else [x for v in node.values() for x in _leaves(v)]


def _keep(node: Any, value_sets: dict[str, list[str]]) -> Any:
    if isinstance(node, str):
        return node if node.startswith("#") or node in value_sets else None
    return {k: p for k, v in node.items() if (p := _keep(v, value_sets)) not in (None, {})}


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
