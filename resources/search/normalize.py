"""String normalisation for search: case- and accent-insensitive matching.

https://hl7.org/fhir/R4B/search.html#string
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache


@lru_cache(maxsize=65536)
def normalize_string(value: str) -> str:
    """Casefolded, accent-free, whitespace-collapsed form of a string."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())
