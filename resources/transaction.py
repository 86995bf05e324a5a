"""Batch and transaction bundles: entry ordering, placeholder ids, conditional references, atomicity.

https://hl7.org/fhir/R4B/http.html#transaction
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from urllib.parse import parse_qsl

from resources.bundle_entries import Entry, EntryResult, json_patch_of
from resources.errors import Conflict, FhirError, Invalid, Issue, MethodNotAllowed, PreconditionFailed
from resources.guard import current_guard
from resources.ids import new_id
from resources.references import Rewriter, conditional_references, rewrite_blob
from resources.repository import APPEND_ONLY, Repository, WriteOutcome
from resources.store.protocol import ReadSource, StoredResource, Write, WriteSession
from resources.validation_job import ValidationJob

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
Reader = Callable[[str, ReadSource], Awaitable["EntryResult"]]


def _status(outcome: WriteOutcome) -> str:
    return "201 Created" if outcome.created else "200 OK"


class TransactionProcessor:
    """Runs a transaction bundle inside one store write session: all entries commit, or none."""

    def __init__(self, repository: Repository, base_url: str) -> None:
        self.repo = repository
        self.base_url = base_url
        self.mapping: dict[str, str] = {}

    def _begin_validation(self, entries: list[Entry]) -> tuple[list[Entry], ValidationJob]:
        seen: set[str] = set()
        for entry in entries:
            if entry.method in ("PUT", "PATCH", "DELETE") and entry.id:
                key = f"{entry.type}/{entry.id}"
                if key in seen:
                    raise _at_entry(Invalid(f"{key} appears more than once in the transaction", code="duplicate"),
                                    entry)
                seen.add(key)
        writes = [e for e in entries if e.method in ("POST", "PUT")]
        job = self.repo.begin_validation([(e.resource, e.type) for e in writes])
        known = job.first_error()
        if known is not None:
            job.models.cancel()
            error = known[1]
            assert isinstance(error, FhirError)
            raise _at_entry(error, writes[known[0]]) from error
        return writes, job

    @staticmethod
    async def _finish_validation(writes: list[Entry], job: ValidationJob) -> None:
        errors = await job.finish()
        for entry, error in zip(writes, errors, strict=True):
            if isinstance(error, FhirError):
                raise _at_entry(error, entry) from error

    async def _resolve_conditional_references(self, session: WriteSession, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.resource is None:
                continue
            for ref in conditional_references(entry.resource):
                if ref in self.mapping:
                    continue
                type_, _, query = ref.partition("?")
                criteria = self.repo.parse_criteria(type_, parse_qsl(query, keep_blank_values=True),
                                                    "A conditional reference")
                found = await self.repo.matches(session, criteria)
                if len(found) != 1:
                    raise _at_entry(PreconditionFailed(
                        f"Conditional reference '{ref}' matches {'no' if not found else 'more than one'} resource",
                        code="not-found" if not found else "multiple-matches"), entry)
                self.mapping[ref] = f"{found[0][0]}/{found[0][1]}"

    async def _check_duplicate(self, session: WriteSession, entry: Entry, claimed: dict[tuple[str, str], int]) -> None:
        """A create of a record that exists already (issue 32): 409, or in merge mode the existing record."""
        rule = self.repo.duplicates
        keys = rule.keys(entry.type, entry.resource) if rule is not None else []
        for key in keys:  # two entries of one bundle creating the same person: which one wins is not ours to say
            if key in claimed:
                raise _at_entry(Conflict(f"Bundle.entry[{claimed[key]}] creates a {entry.type} with identifier "
                                         f"{key[0]}|{key[1]} too", code="duplicate"), entry)
            claimed[key] = entry.index
        try:
            entry.target_id = await self.repo.duplicate_of(session, entry.type, entry.resource)
        except FhirError as exc:
            raise _at_entry(exc, entry) from exc

    async def _assign_ids(self, session: WriteSession, entries: list[Entry]) -> None:
        claimed: dict[tuple[str, str], int] = {}
        for entry in entries:
            if entry.method == "POST":
                if entry.if_none_exist:
                    criteria = self.repo.parse_criteria(entry.type, entry.if_none_exist, "ifNoneExist")
                    try:
                        entry.target_id = await self.repo.single_match(session, criteria, "ifNoneExist")
                    except FhirError as exc:
                        raise _at_entry(exc, entry) from exc
                if entry.target_id is None and entry.resource is not None:
                    await self._check_duplicate(session, entry, claimed)
                entry.extra["existing"] = entry.target_id is not None
                entry.target_id = entry.target_id or new_id()
            elif entry.method == "PUT" and entry.id:
                entry.target_id = entry.id
            if entry.full_url and entry.target_id:
                self.mapping[entry.full_url] = f"{entry.type}/{entry.target_id}"

    async def run(self, entries: list[Entry], read: Reader) -> list[EntryResult]:
        """Process every entry in the spec's order and return the results in the request's order."""
        _require_all(entries)  # 403 for an interaction no scope grants, before any data is read
        validated, job = self._begin_validation(entries)
        try:
            async with self.repo.store.write_session() as session:
                await self._assign_ids(session, entries)
                await self._resolve_conditional_references(session, entries)
                rewriter = Rewriter(self.mapping)
                creates = self._prepare_creates(entries, rewriter)  # indexing overlaps the model checks
                others = [e for e in entries if e.resource is not None and e.method != "POST"]
                if self.mapping and others:
                    for entry, resource in zip(others, rewrite_blob([e.resource for e in others], self.mapping),
                                               strict=True):
                        entry.resource = resource
                await self._finish_validation(validated, job)
                await self._write_all(session, entries, creates)
                await self._existing_results(session, entries)
                for entry in entries:  # reads run last and see this transaction's writes
                    if entry.method in ("GET", "HEAD"):
                        try:
                            entry.result = await read(entry.url, session)
                        except FhirError as exc:
                            raise _at_entry(exc, entry) from exc
        finally:
            job.models.cancel()
        return [e.result or EntryResult("200 OK") for e in entries]

    async def _write_all(self, session: WriteSession, entries: list[Entry], creates: list[Write]) -> None:
        for entry in sorted(entries, key=lambda e: _ORDER[e.method]):
            if entry.method == "POST" and creates:
                await session.apply(creates)
                creates = []
            if entry.method in ("GET", "HEAD", "POST"):
                continue
            try:
                entry.result = await self._write(session, entry, entries)
            except FhirError as exc:
                raise _at_entry(exc, entry) from exc

    def _prepare_creates(self, entries: list[Entry], rewriter: Rewriter) -> list[Write]:
        # Created resources are indexed and serialised as sent; their links are then replaced in the bytes
        # and in the index rows, which spares a second parse of the whole bundle.
        writes = []
        clock = self.repo.clock()
        for entry in entries:
            if entry.method != "POST" or entry.extra.get("existing"):
                continue
            assert entry.target_id is not None and entry.resource is not None
            try:
                write = self.repo.prepare(entry.type, entry.target_id, entry.resource, 1, clock, "create", 0, "POST",
                                          self.mapping)
            except FhirError as exc:
                raise _at_entry(exc, entry) from exc
            if self.mapping and write.rows is not None and write.body is not None:
                rows = self.repo.indexer.remap(entry.type, entry.target_id, write.rows, self.mapping)
                write = replace(write, body=rewriter.rewrite(write.body), rows=rows)
            writes.append(write)
            entry.result = EntryResult("201 Created", StoredResource(write.type, write.id, 1, clock, False,
                                                                    write.body, "POST"))
        return writes

    async def _write(self, session: WriteSession, entry: Entry, entries: list[Entry]) -> EntryResult | None:
        repo = self.repo
        if entry.method == "DELETE":
            if entry.id:
                await repo.delete_in(session, entry.type, entry.id, entry.if_match)
            else:
                criteria = repo.parse_criteria(entry.type, entry.query, "Conditional delete")
                found = await repo.single_match(session, criteria, "Conditional delete")
                if found is not None:
                    await repo.delete_in(session, entry.type, found, None)
            return EntryResult("204 No Content")
        if entry.method == "POST":
            return None  # written together in _flush_creates
        if entry.method == "PUT":
            assert entry.resource is not None
            target = entry.id
            chosen = target is not None  # an id the client chose, not one its criteria matched
            if target is None:
                criteria = repo.parse_criteria(entry.type, entry.query, "Conditional update")
                target = await repo.single_match(session, criteria, "Conditional update")
                if target is None:
                    chosen = "id" in entry.resource
                    target = entry.resource.get("id") or new_id()
            elif entry.resource.get("id") != target:
                raise Invalid(f"The resource id does not match the url {entry.url}", code="invalid")
            outcome = await repo.update_in(session, entry.type, target, {**entry.resource, "id": target},
                                           entry.if_match, client_id=chosen)
            return EntryResult(_status(outcome), outcome.resource)
        # PATCH
        target = entry.id
        if target is None:
            criteria = repo.parse_criteria(entry.type, entry.query, "Conditional patch")
            target = await repo.single_match(session, criteria, "Conditional patch")
            if target is None:
                raise PreconditionFailed("Conditional patch criteria match no resource", code="not-found")
        current = await session.head(entry.type, target)
        outcome = await repo.patch_in(session, entry.type, target, current, json_patch_of(entry), entry.if_match)
        return EntryResult("200 OK", outcome.resource)

    async def _existing_results(self, session: WriteSession, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.method == "POST" and entry.extra.get("existing") and entry.target_id:
                entry.result = EntryResult("200 OK", await session.head(entry.type, entry.target_id))


def _require_all(entries: list[Entry]) -> None:
    for entry in entries:  # append-only types refuse changes whoever asks (405 before any scope is looked at)
        if entry.type in APPEND_ONLY and entry.method in ("PUT", "PATCH", "DELETE"):
            raise _at_entry(MethodNotAllowed(f"{entry.type} is append-only: it cannot be updated, patched or "
                                             f"deleted"), entry)
    guard = current_guard()
    if guard is None:
        return
    for entry in entries:
        letters = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}.get(entry.method, "r" if entry.id else "s")
        if entry.method != "GET" and (entry.id is None and entry.method != "POST" or entry.if_none_exist):
            letters += "s"  # conditional forms search too
        try:
            for letter in letters:
                guard.require(entry.type, letter)
        except FhirError as exc:
            raise _at_entry(exc, entry) from exc


def _at_entry(exc: FhirError, entry: Entry) -> FhirError:
    where = f"Bundle.entry[{entry.index}]"
    issues = tuple(Issue(i.code, f"{where} ({entry.method} {entry.url}): {i.diagnostics}", i.severity,
                         tuple(f"{where}.resource.{e.split('.', 1)[1]}" if "." in e else where for e in i.expression)
                         or (where,))
                   for i in exc.issues)
    clone = type(exc)(issues[0].diagnostics, issues=issues, headers=exc.headers)
    return clone
