"""Verification of the audit trail: every event's hash, every link, every checkpoint's signature and the tail.

Reports the first event whose hash or link breaks (an edited or a deleted event) and any truncation: events missing
after the last signed checkpoint, or after the head the running writer knows. https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from consent.audit.chain import CHECKPOINT_TYPE, GENESIS, Checkpoint, checkpoints, digest, link_of, record_hash
from consent.audit.records import event_id
from resources.store.audit_log.sqlite import SqliteAuditLog
from resources.store.protocol import Store

_PAGE = 1000


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold."""

    sequence: int
    reference: str | None  # the event found there (None when it is missing)
    problem: str  # altered | missing | unlinked
    detail: str
    references: tuple[str, ...] = ()  # every AuditEvent the broken record carried (audit log)
    chain: str | None = None  # the writer instance's chain it is in (audit log)


@dataclass(frozen=True)
class ChainState:
    """One writer instance's chain as verified: its head, its last checkpoint and that checkpoint's signature."""

    chain: str
    checked: int
    head: tuple[int, str]
    checkpoint: Checkpoint | None
    signature: str


@dataclass
class Report:
    """What $verify-audit answers."""

    checked: int = 0
    head: tuple[int, str] = (0, GENESIS)
    checkpoint: Checkpoint | None = None
    signature: str = "none"  # valid | invalid | unsigned | none (no checkpoint yet)
    first_break: Break | None = None
    truncation: str | None = None
    problems: list[str] = field(default_factory=list)
    chains: list[ChainState] = field(default_factory=list)  # every writer instance's chain (audit log)

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        states = [self.signature, *(c.signature for c in self.chains)]
        return self.first_break is None and self.truncation is None and all(
            s in ("valid", "none", "unsigned") for s in states)


def signature_state(point: Checkpoint, keys: dict[str, Any] | None, chain: str | None = None) -> str:
    """Whether a checkpoint's JWS is the server's signature of its sequence and hash."""
    if point.jws is None:
        return "unsigned"
    if not keys:
        return "invalid"
    try:
        decoded = jwt.decode(point.jws, KeySet.import_key_set(keys), algorithms=["RS256"])  # type: ignore[arg-type]
    except (JoseError, ValueError):
        return "invalid"
    claims = decoded.claims
    if decoded.header.get("typ") != CHECKPOINT_TYPE or claims.get("seq") != point.sequence or claims.get(
            "hash") != point.hash or (chain is not None and claims.get("chain") != chain):
        return "invalid"
    return "valid"


async def verify(store: Store, keys: dict[str, Any] | None, live_head: tuple[int, str] | None = None) -> Report:
    """Walk the whole chain in write order and check it against its checkpoints (keys: the server's JWKS)."""
    report = Report()
    points = await checkpoints(store)
    at_points = {p.sequence: p for p in points}
    seen_at_points: dict[int, str] = {}
    sequence, previous = 0, GENESIS
    last, after = await store.last_seq(), 0
    while after < last:
        page = await store.changes(after, last, ["AuditEvent"], _PAGE)
        if not page:
            break
        after = page[-1].seq
        for stored in page:
            event = orjson.loads(stored.body or b"{}")
            reference = f"AuditEvent/{stored.id}"
            report.checked += 1
            chain = link_of(event)
            if chain is None:
                _first(report, Break(sequence + 1, reference, "altered", "the event carries no chain link"))
                continue
            if chain.sequence != sequence + 1:
                _first(report, Break(sequence + 1, None, "missing",
                                     f"events {sequence + 1} to {chain.sequence - 1} are missing before {reference}"))
            elif chain.previous != previous:
                _first(report, Break(chain.sequence, reference, "unlinked",
                                     "the event does not follow the previous event's hash"))
            if digest(event) != chain.hash:
                _first(report, Break(chain.sequence, reference, "altered",
                                     "the event's content does not match its hash"))
            if chain.sequence in at_points:
                seen_at_points[chain.sequence] = chain.hash
            sequence, previous = chain.sequence, chain.hash
    report.head = (sequence, previous)
    if points:
        point = points[-1]
        report.checkpoint = point
        report.signature = signature_state(point, keys)
        if sequence < point.sequence:
            report.truncation = (f"the trail ends at sequence {sequence}, but the checkpoint of {point.recorded} "
                                 f"signed {point.sequence} events")
        for known in points:
            if known.sequence in seen_at_points and seen_at_points[known.sequence] != known.hash:
                _first(report, Break(known.sequence, None, "altered",
                                     f"the event at sequence {known.sequence} is not the one checkpointed"))
    if report.truncation is None and live_head is not None and live_head[0] > sequence:
        report.truncation = (f"the trail ends at sequence {sequence}, but the server wrote {live_head[0]} "
                             f"events")
    return report


def _first(report: Report, found: Break) -> None:
    if report.first_break is None:
        report.first_break = found


async def verify_log(audit_log: SqliteAuditLog, keys: dict[str, Any] | None, own_chain: str,
                     live_head: tuple[int, str] | None = None) -> Report:
    """Walk every chain of the audit log in order and check each against its checkpoints (keys: the JWKS).

    The top-level head, checkpoint and signature are those of this instance's chain (`own_chain`); each chain's
    are in `chains`. A record breaks when its number skips (missing), it does not name the previous record's hash
    (unlinked) or its bytes do not give its hash (altered).
    """
    report = Report()
    for chain in sorted(set(await audit_log.chains()) | {own_chain}, key=lambda c: (c != own_chain, c)):
        state = await _verify_chain(audit_log, keys, chain, live_head if chain == own_chain else None, report)
        report.chains.append(state)
        if chain == own_chain:
            report.head, report.checkpoint, report.signature = state.head, state.checkpoint, state.signature
    return report


async def _verify_chain(audit_log: SqliteAuditLog, keys: dict[str, Any] | None, chain: str,
                        live_head: tuple[int, str] | None, report: Report) -> ChainState:
    points = [Checkpoint(p.n, p.hash, p.recorded, p.jws) for p in await audit_log.checkpoints(chain)]
    at_points = {p.sequence: p for p in points}
    n, previous, checked = 0, GENESIS, 0
    while True:
        page = await audit_log.walk(chain, n, _PAGE)
        if not page:
            break
        for record in page:
            checked += 1
            ids = tuple(f"AuditEvent/{event_id(record.seq, m)}" for m in range(record.members))
            first = ids[0] if ids else None
            if record.n != n + 1:
                _first(report, Break(n + 1, None, "missing", f"records {n + 1} to {record.n - 1} of chain {chain} "
                                     f"are missing before {first}", (), chain))
            elif record.previous != previous:
                _first(report, Break(record.n, first, "unlinked", "the record does not follow the previous record's "
                                     "hash", ids, chain))
            if record_hash(chain, record.n, record.recorded, record.members, record.previous,
                           record.body) != record.hash:
                _first(report, Break(record.n, first, "altered", "the record's content does not match its hash",
                                     ids, chain))
            point = at_points.get(record.n)
            if point is not None and point.hash != record.hash:
                _first(report, Break(record.n, first, "altered", f"the record at {record.n} of chain {chain} is not "
                                     f"the one checkpointed", ids, chain))
            n, previous = record.n, record.hash
    report.checked += checked
    point = points[-1] if points else None
    signature = signature_state(point, keys, chain) if point is not None else "none"
    if point is not None and n < point.sequence and report.truncation is None:
        report.truncation = (f"chain {chain} ends at record {n}, but the checkpoint of {point.recorded} signed "
                             f"{point.sequence} records")
    if report.truncation is None and live_head is not None and live_head[0] > n:
        report.truncation = f"chain {chain} ends at record {n}, but the server wrote {live_head[0]} records"
    return ChainState(chain, checked, (n, previous), point, signature)
