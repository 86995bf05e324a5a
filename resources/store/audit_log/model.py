"""What the audit log keeps: records (one per request or per supplied event), index entries, checkpoints, queries.

A record is opaque bytes here (the audit trail's own encoding); the log only stores, chains by column and finds
them. An index entry names one member of a record, or every member (MEMBERS). https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

MEMBERS = -1  # an index entry of every member of its record (a request-level fact)


# One index entry: (param, value, sys, member): a parameter's value (and its system, reference type or exact text,
# "" for none) for one member, or for all (MEMBERS). A plain tuple: a record has about 25 of them.
Entry = tuple[str, str, str, int]


class ChainMoved(Exception):
    """Another writer appended to the same chain since this one read its head: read it again and renumber."""


@dataclass(frozen=True)
class NewRecord:
    """A record to append: its place in its chain, when it happened, how many members, its hash and bytes."""

    chain: str
    n: int
    recorded: int  # epoch ms, the instant every member carries
    members: int
    previous: str
    hash: str
    body: bytes
    entries: list[Entry] = field(default_factory=list)


class StoredRecord(NamedTuple):
    """A record as stored, with its global sequence (the first part of its members' ids)."""

    seq: int
    chain: str
    n: int
    recorded: int
    members: int
    previous: str
    hash: str
    body: bytes


class CheckpointRow(NamedTuple):
    """A signed statement of one chain's head: `n` records, the last with `hash` (jws None when unsigned)."""

    chain: str
    n: int
    hash: str
    recorded: str
    jws: str | None


@dataclass(frozen=True)
class Condition:
    """One AND-ed test on the index: any of the alternatives (OR) holds for the parameter."""

    param: str
    # each alternative: (value, sys) equality, sys None for any; or ("prefix", low, high) for a string prefix
    alternatives: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class LogQuery:
    """The part of a search the index answers: conditions, the time window, ids, order, page."""

    conditions: tuple[Condition, ...] = ()
    dates: tuple[tuple[tuple[str, float, float], ...], ...] = ()  # AND of OR-ed (prefix, low, high) on recorded
    ids: tuple[tuple[int, int], ...] | None = None  # (seq, member) of the ids asked for
    descending: bool | None = None  # None: in write order; else by recorded (ties in write order)
    newest_first: bool = False  # in write order, newest record first (history)
    before_seq: int | None = None  # records written before this one only (history pages)
    limit: int | None = None
    offset: int = 0
