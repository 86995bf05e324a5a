"""FHIR date, dateTime and instant values as [low, high] ranges in epoch milliseconds (UTC).

A partial date stands for the whole interval it names (2023-02 is all of February).
https://hl7.org/fhir/R4B/search.html#date
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
MIN_MS = -62135596800000  # 0001-01-01T00:00:00Z
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _epoch_ms(moment: datetime) -> int:
    return int((moment - _EPOCH) / _MS)


# Search values repeat (ge2020-01-01 in every request of a screen) and so do the dates of an ingest's
# resources; a hit costs 0.1 us against 3 us to parse. Bounded, since clients choose the text.
@lru_cache(maxsize=4096)
def date_range(text: str) -> tuple[int, int] | None:
    """The inclusive [low, high] millisecond range a FHIR date value covers, or None if malformed."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        return None
    g = match.groupdict()
    try:
        year = int(g["y"])
        if g["m"] is None:
            low = datetime(year, 1, 1, tzinfo=UTC)
            high = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None
        elif g["d"] is None:
            month = int(g["m"])
            low = datetime(year, month, 1, tzinfo=UTC)
            high = low + timedelta(days=calendar.monthrange(year, month)[1])
        elif g["H"] is None:
            low = datetime(year, int(g["m"]), int(g["d"]), tzinfo=UTC)
            high = low + timedelta(days=1)
        else:
            tz = UTC
            if g["tz"] and g["tz"] != "Z":
                sign = 1 if g["tz"][0] == "+" else -1
                hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
                tz = timezone_offset(sign * (hours * 60 + minutes))
            fraction = g["f"] or ""
            micro = int((fraction + "000000")[:6]) if fraction else 0
            low = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"] or 0), micro,
                           tzinfo=tz)
            if g["S"] is None:
                step = timedelta(minutes=1)
            elif fraction:
                step = timedelta(microseconds=10 ** (6 - min(len(fraction), 6)))
            else:
                step = timedelta(seconds=1)
            high = low + step
    except OverflowError:  # a period that ends after 9999-12-31: it runs to the end of representable time
        high = None
    except ValueError:
        return None
    low_ms = _epoch_ms(low)
    high_ms = _epoch_ms(high) - 1 if high is not None else MAX_MS
    return low_ms, max(low_ms, high_ms)


def timezone_offset(minutes: int) -> timezone:
    """A fixed-offset timezone."""
    return timezone(timedelta(minutes=minutes))


def format_instant(ms: int) -> str:
    """An epoch-millisecond value as a FHIR instant."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


