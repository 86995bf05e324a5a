"""Index rows of a transaction resource, remapped after link replacement, equal the rows of the rewritten resource.

https://hl7.org/fhir/R4B/http.html#trules
"""

from __future__ import annotations

import orjson
import pytest

from resources.ids import new_id
from resources.models import resource_types
from resources.references import rewrite_blob
from resources.search.index import Indexer, IndexRows, load_patient_compartment
from resources.search.registry import default_registry
from tests.conftest import DATA


@pytest.fixture(scope="module")
def indexer() -> Indexer:
    return Indexer(default_registry(resource_types()), load_patient_compartment())


def normalised(rows: IndexRows) -> dict[str, list[object]]:
    return {name: sorted(map(repr, getattr(rows, name))) for name in
            ("tokens", "strings", "references", "dates", "numbers", "quantities", "uris", "compartments")}


@pytest.mark.parametrize("path", sorted((DATA / "synthea").glob("*.json"))[:4], ids=lambda p: p.name)
def test_remapped_rows_match_rewritten_resource(indexer: Indexer, path: object) -> None:
    bundle = orjson.loads(path.read_bytes())  # type: ignore[attr-defined]
    ids = {e["fullUrl"]: (e["resource"]["resourceType"], new_id()) for e in bundle["entry"]}
    mapping = {url: f"{kind}/{id_}" for url, (kind, id_) in ids.items()}
    originals = [e["resource"] for e in bundle["entry"]]
    rewritten = rewrite_blob(originals, mapping)
    compared = 0
    for entry, original, final in zip(bundle["entry"], originals, rewritten, strict=True):
        kind, id_ = ids[entry["fullUrl"]]
        expected = indexer.extract(kind, {**final, "id": id_})
        remapped = indexer.remap(kind, id_, indexer.extract(kind, {**original, "id": id_}, mapping), mapping)
        assert normalised(remapped) == normalised(expected), entry["fullUrl"]
        compared += 1
    assert compared == len(bundle["entry"])
