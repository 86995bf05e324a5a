"""The instants the audit trail writes (`recorded`, `meta.lastUpdated`), formatted at the cost of a look-up.

Every request formats the current time; the date and time down to the second repeat for every request of that
second, so only the milliseconds are formatted anew. https://hl7.org/fhir/R4B/datatypes.html#instant
"""

from __future__ import annotations

from resources.ids import now_ms
from resources.search.dates import format_instant

_second = -1
_prefix = ""


def instant(ms: int) -> str:
    """The FHIR instant of an epoch-millisecond value, as resources.search.dates.format_instant writes it."""
    global _second, _prefix
    second, milli = divmod(ms, 1000)
    if second != _second:
        _second, _prefix = second, format_instant(second * 1000)[:-4]  # "YYYY-MM-DDThh:mm:ss."
    return f"{_prefix}{milli:03d}Z"


def now() -> str:
    """The current instant."""
    return instant(now_ms())
