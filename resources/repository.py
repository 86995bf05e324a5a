"""The Repository: FHIR interactions over a Store (ids, versions, meta, If-Match, conditional forms).

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from resources.audit_sink import Appender, current_sink
from resources.duplicates import DuplicateRule
from resources.errors import (
    FhirError,
    Forbidden,
    Gone,
    Invalid,
    Issue,
    MethodNotAllowed,
    NotFound,
    NotSupported,
    PreconditionFailed,
)
from resources.guard import Guard, current_guard
from resources.ids import new_id, now_ms
from resources.model_pool import ModelValidator
from resources.models import resource_types
from resources.patch import apply_patch
from resources.search.codesets import TERMINOLOGY_MODIFIERS, TerminologyResolver, needs_resolution, resolve
from resources.search.dates import format_instant
from resources.search.index import Indexer
from resources.search.parse import SearchLimits, parse_search
from resources.search.query import SYSTEM, SearchQuery
from resources.search.registry import SearchRegistry
from resources.store.protocol import (
    GroupKey,
    Groups,
    HistoryQuery,
    Measure,
    ReadSource,
    SearchPage,
    Spans,
    SpanStats,
    Store,
    StoredResource,
    Tallies,
    Write,
    WriteSession,
)
from resources.validation import ValidationLimits, precheck, raise_issues, valid_id
from resources.validation_job import ValidationJob

Params = Sequence[tuple[str, str]]
# resource types nobody may update, patch or delete through the API, whatever their scopes: the audit trail
APPEND_ONLY = frozenset({"AuditEvent"})
# a rule every stored version passes through: it may complete the resource in place or refuse it (FhirError)
WriteHook = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class WriteOutcome:
    """The result of a write: the stored version and whether it created the resource."""

    resource: StoredResource
    created: bool


@dataclass
class Repository:
    """FHIR interactions on one Store; every write validates, versions, indexes and records an event."""

    store: Store
    registry: SearchRegistry
    indexer: Indexer
    validation: ValidationLimits = field(default_factory=ValidationLimits)
    search_limits: SearchLimits = field(default_factory=SearchLimits)
    clock: Callable[[], int] = now_ms
    models: ModelValidator = field(default_factory=ModelValidator)
    write_hooks: list[WriteHook] = field(default_factory=list)
    terminology: TerminologyResolver | None = None  # for :in, :not-in, :above, :below and unit conversion
    appender: Appender | None = None  # the audit trail's chain writer: AuditEvents are appended through it only
    duplicates: DuplicateRule | None = None  # one record per patient (CARELOOP_PATIENT_UNIQUE_IDENTIFIER_SYSTEMS)

    # -- building writes -------------------------------------------------------------------------
    def prepare(self, resource_type: str, id_: str, body: dict[str, Any], vid: int, updated_ms: int,
                action: str, expected_vid: int | None, method: str,
                pending_links: dict[str, str] | None = None, current: StoredResource | None = None) -> Write:
        """Stamp id and meta onto a validated body and extract its index rows (current: the version replaced)."""
        resource = dict(body)
        resource["id"] = id_
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(vid)
        meta["lastUpdated"] = format_instant(updated_ms)
        resource["meta"] = meta
        guard = current_guard()
        if guard is not None and resource_type in guard.stamped_types:
            guard.stamp(resource_type, resource, orjson.loads(current.body) if current and current.body else None)
        if guard is not None and not guard.visible(resource_type, resource, "c" if method == "POST" else "u"):
            raise Forbidden(f"The access token does not allow writing this {resource_type}: it would fall outside "
                            f"the patient context or the granted filters", code="forbidden")
        if resource_type in APPEND_ONLY and self.appender is not None:
            # only POST [base]/AuditEvent joins the chain (create): a batch, transaction or PUT would bypass it
            raise MethodNotAllowed(f"{resource_type} is created one at a time with POST [base]/{resource_type}")
        for hook in self.write_hooks:
            hook(resource_type, resource)
        rows = self.indexer.extract(resource_type, resource, pending_links)
        if guard is not None:
            guard.admit(resource_type, resource, rows.compartments)
        sink = current_sink()
        if sink is not None:
            sink.wrote(resource_type, id_, vid, action, rows.compartments)
        return Write(resource_type, id_, vid, updated_ms, action, orjson.dumps(resource), rows, expected_vid, method)

    async def validate(self, body: Any, resource_type: str | None) -> str:
        """Full validation of a resource body: shape here, then the model check (in a worker when there is one)."""
        kind, structural, references = precheck(body, expected_type=resource_type, limits=self.validation)
        model = [] if structural else (await self.models.issues_many([(kind, body)]))[0]
        raise_issues(kind, structural, model, references)
        return kind

    def begin_validation(self, bodies: list[tuple[Any, str | None]]) -> ValidationJob:
        """Start the model checks (in parallel when large), then check shape, schema and references meanwhile."""
        typed = [(b.get("resourceType") if isinstance(b, dict) else None, b) for b, _ in bodies]
        plausible = [(i, kind, body) for i, (kind, body) in enumerate(typed) if isinstance(kind, str)]
        job = self.models.submit([(kind, body) for _, kind, body in plausible if kind in resource_types()])
        errors: list[Exception | None] = [None] * len(bodies)
        pending: list[tuple[int, str, list[Issue]]] = []
        for index, (body, expected) in enumerate(bodies):
            try:
                kind, structural, references = precheck(body, expected_type=expected, limits=self.validation)
                if structural:
                    raise_issues(kind, structural, [], references)
                pending.append((index, kind, references))
            except FhirError as exc:
                errors[index] = exc
        submitted = [i for i, kind, _ in plausible if kind in resource_types()]
        return ValidationJob(errors, pending, job, submitted)

    def parse_criteria(self, resource_type: str, params: Params, what: str) -> SearchQuery:
        """Search criteria of a conditional interaction; unknown parameters are refused, never ignored."""
        if not params:
            raise Invalid(f"{what} needs search criteria", code="required")
        parsed = parse_search(resource_type, params, self.registry, self.search_limits, strict=True)
        return SearchQuery(parsed.query.resource_type, parsed.query.filters, count=2)

    async def resolve(self, query: SearchQuery) -> SearchQuery:
        """The query with its terminology modifiers and units resolved into plain filters."""
        if self.terminology is None or not needs_resolution(query):
            if needs_resolution(query) and any(f.modifier in TERMINOLOGY_MODIFIERS for f in query.filters):
                raise NotSupported("This server has no terminology service for :in, :not-in, :above or :below")
            return query
        return await resolve(query, self.terminology)

    async def matches(self, session: WriteSession, query: SearchQuery) -> list[tuple[str, str, int]]:
        """Up to two matches of conditional criteria (among what the caller may see), inside the transaction."""
        guard = current_guard()
        if guard is not None:
            query = guard.narrow(query)
        return await session.search_ids(await self.resolve(query), 2)

    async def single_match(self, session: WriteSession, query: SearchQuery, what: str) -> str | None:
        """The id of the one match of conditional criteria, None for no match, 412 for several."""
        found = await self.matches(session, query)
        if len(found) > 1:
            raise PreconditionFailed(f"{what} criteria match more than one resource", code="multiple-matches")
        return found[0][1] if found else None

    async def duplicate_of(self, session: WriteSession, resource_type: str, body: Any) -> str | None:
        """The stored record a create would duplicate, in merge mode; None when there is none; 409 in refuse mode.

        The look-up sees what the caller may see, so the answer names nothing hidden; a caller who may not search
        the type at all is still refused a duplicate, without being told which record it is.
        """
        rule = self.duplicates
        keys = rule.keys(resource_type, body) if rule is not None else []
        if rule is None or not keys:
            return None
        query = self.parse_criteria(resource_type, rule.criteria(keys), "The duplicate check")
        try:
            found = [id_ for _, id_, _ in await self.matches(session, query)]
        except Forbidden:
            if await session.search_ids(query, 1):
                raise rule.refusal(resource_type, keys, ()) from None
            return None
        if found and (rule.mode == "refuse" or len(found) > 1):
            raise rule.refusal(resource_type, keys, found)
        return found[0] if found else None

    # -- reads -----------------------------------------------------------------------------------
    async def read(self, resource_type: str, id_: str, source: ReadSource | None = None) -> StoredResource:
        """The current version; NotFound or Gone otherwise (NotFound too for what the caller may not see)."""
        guard = current_guard()
        if guard is not None:
            guard.require(resource_type, "r")
        found = await (source or self.store).read(resource_type, id_) if valid_id(id_) else None
        _check_patient(guard, resource_type, id_, found)
        if found is None or not _visible(guard, resource_type, found, "r"):
            raise NotFound(f"{resource_type}/{id_} is not known")
        if found.deleted:
            raise Gone(f"{resource_type}/{id_} was deleted", headers={"ETag": f'W/"{found.vid}"'})
        return _returned(_shown(guard, found))

    async def vread(self, resource_type: str, id_: str, vid: str, source: ReadSource | None = None) -> StoredResource:
        """One version; NotFound for an unknown version, Gone for a deletion version."""
        guard = current_guard()
        if guard is not None:
            guard.require(resource_type, "r")
        found = None
        if valid_id(id_) and vid.isdigit():
            found = await (source or self.store).vread(resource_type, id_, int(vid))
        _check_patient(guard, resource_type, id_, found)
        if found is None or not _visible(guard, resource_type, found, "r"):
            raise NotFound(f"{resource_type}/{id_}/_history/{vid} is not known")
        if found.deleted:
            raise Gone(f"{resource_type}/{id_} version {vid} is a deletion")
        return _returned(_shown(guard, found))

    async def history(self, query: HistoryQuery) -> list[StoredResource]:
        """Versions newest first (of one resource: only the versions the caller may see)."""
        guard = current_guard()
        if guard is None:
            return _returned_all(await self.store.history(query))
        if query.id is not None and query.type is not None:
            guard.require(query.type, "r")
            versions = await self.store.history(query)
            _check_patient(guard, query.type, query.id, versions[0] if versions else None)
            visible = [v for v in versions if _visible(guard, query.type, v, "r")]
            if versions and not visible:
                raise NotFound(f"{query.type}/{query.id} is not known")
            return _returned_all([_shown(guard, v) for v in visible])
        # type and system history are only for callers whose scopes reach every resource of the type(s); the
        # patients' Consents then re-check each version (a deletion, which has no body, only when none apply)
        narrowed = guard.narrow(SearchQuery(query.type or SYSTEM), consent=False)
        if narrowed.filters:
            raise Forbidden(f"History of all {query.type or 'resources'} needs a scope that is not limited to one "
                            f"patient or by filters; read each resource's history instead", code="forbidden")
        return _returned_all([_shown(guard, v) for v in await self.store.history(query)
                              if not guard.restricts(v.type, "r") or (
                                  v.body is not None and _visible(guard, v.type, v, "r"))])

    async def search(self, query: SearchQuery, source: ReadSource | None = None) -> SearchPage:
        """One page of search results, narrowed to what the caller may see (included resources too)."""
        guard = current_guard()
        if guard is not None:
            query = guard.narrow(query)
        page = await (source or self.store).search(await self.resolve(query))
        if guard is not None and page.included:
            kept = [r for r in page.included if _may_include(guard, r)]
            if len(kept) != len(page.included):
                page = replace(page, included=kept)
        if guard is not None and guard.redacted_types and (
                query.resource_type in guard.redacted_types or query.is_system or page.included):
            page = replace(page, resources=[_shown(guard, r) for r in page.resources],
                           included=[_shown(guard, r) for r in page.included])
        sink = current_sink()
        if sink is not None:
            sink.returned(page.resources)
            if page.included:
                sink.returned(page.included)
        return page

    async def lastn(self, query: SearchQuery, code: str, date: str, per_code: int) -> list[StoredResource]:
        """Per code the latest matches by date (Observation/$lastn), narrowed to what the caller may see."""
        guard = current_guard()
        if guard is not None:
            query = guard.narrow(query)
        found = await self.store.lastn(await self.resolve(query), code, date, per_code)
        if guard is not None and query.resource_type in guard.redacted_types:
            found = [_shown(guard, r) for r in found]
        sink = current_sink()
        if sink is not None:
            sink.returned(found)
        return found

    async def aggregate(self, query: SearchQuery, keys: tuple[GroupKey, ...]) -> Groups:
        """How many matches the caller may see have each combination of the keys' values.

        The guard narrows the query as for a search, so its scope and consent filters run inside the store's
        GROUP BY; linked results (keys with `linked`) are counted for the matches only.
        """
        guard = current_guard()
        if guard is not None:
            query = guard.narrow(query)
        return await self.store.aggregate(await self.resolve(query), keys)

    async def tally(self, query: SearchQuery, keys: tuple[GroupKey, ...], measures: tuple[Measure, ...]) -> Tallies:
        """Per combination of the keys' values, the count and measures of the matches the caller may see.

        Narrowed like aggregate: the scope and consent filters run inside the store's GROUP BY.
        """
        return await self.store.tally(await self.resolve(self._narrowed(query)), keys, measures)

    async def spans(self, query: SearchQuery, spec: Spans) -> SpanStats:
        """Spans over a search's matches, computed in the store and narrowed to what the caller may see."""
        return await self.store.spans(await self.resolve(self._narrowed(query)), spec)

    async def distinct_targets(self, query: SearchQuery, code: str, also: SearchQuery | None = None) -> int:
        """Distinct resources a search's matches name through a reference parameter, narrowed like a search."""
        return await self.store.distinct_targets(
            await self.resolve(self._narrowed(query)), code,
            None if also is None else await self.resolve(self._narrowed(also)))

    @staticmethod
    def _narrowed(query: SearchQuery) -> SearchQuery:
        guard = current_guard()
        return query if guard is None else guard.narrow(query)

    async def entries(self, query: SearchQuery) -> list[tuple[bytes, bytes]]:
        """The matches of a search across types as (type/id, body), for a caller whose scopes reach them all.

        Narrowing a search across types either leaves it as it is or refuses it (Forbidden), so no match
        needs a look inside: the store can answer with references and bodies alone.
        """
        assert query.is_system and not query.includes
        guard = current_guard()
        if guard is not None:
            query = guard.narrow(query)
        found = await self.store.entries(await self.resolve(query))
        sink = current_sink()
        if sink is not None:
            sink.returned_entries(found)
        if guard is None or not guard.redacted_types:
            return found
        return [(ref, guard.redact(ref.split(b"/", 1)[0].decode(), body)
                 if ref.split(b"/", 1)[0].decode() in guard.redacted_types else body) for ref, body in found]

    # -- writes ----------------------------------------------------------------------------------
    async def create(self, resource_type: str, body: Any, *, if_none_exist: Params = ()) -> WriteOutcome:
        """Create with a server-assigned id; with If-None-Exist, return the match instead."""
        _require(resource_type, "cs" if if_none_exist else "c")
        await self.validate(body, resource_type)
        if resource_type in APPEND_ONLY and self.appender is not None:
            if if_none_exist:
                raise Invalid(f"A {resource_type} is always appended: If-None-Exist does not apply",
                              code="not-supported")
            stored = await self.appender.append(body)
            sink = current_sink()
            if sink is not None:
                sink.wrote(resource_type, stored.id, stored.vid, "create", ())
            return WriteOutcome(stored, created=True)
        criteria = self.parse_criteria(resource_type, if_none_exist, "If-None-Exist") if if_none_exist else None
        async with self.store.write_session() as session:
            match = await self.single_match(session, criteria, "If-None-Exist") if criteria else None
            match = match or await self.duplicate_of(session, resource_type, body)
            if match is not None:
                existing = await session.head(resource_type, match)
                assert existing is not None
                return WriteOutcome(existing, created=False)
            write = self.prepare(resource_type, new_id(), body, 1, self.clock(), "create", 0, "POST")
            await session.apply([write])
        return WriteOutcome(_stored(write), created=True)

    async def update(self, resource_type: str, id_: str, body: Any, *, if_match: int | None = None) -> WriteOutcome:
        """Update, or create with the client's id when the resource does not exist."""
        _append_only(resource_type)
        _require(resource_type, "u")
        await self.validate(body, resource_type)
        if not valid_id(id_):
            raise Invalid(f"Invalid id '{id_}' in the URL", code="value")
        if body.get("id") is None:
            raise Invalid("The resource in an update must carry its id", code="required",
                          expression=(f"{resource_type}.id",))
        if body["id"] != id_:
            raise Invalid(f"The resource id '{body['id']}' does not match the URL id '{id_}'", code="invalid",
                          expression=(f"{resource_type}.id",))
        async with self.store.write_session() as session:
            return await self.update_in(session, resource_type, id_, body, if_match, client_id=True)

    async def update_in(self, session: WriteSession, resource_type: str, id_: str, body: dict[str, Any],
                        if_match: int | None, method: str = "PUT", client_id: bool = False) -> WriteOutcome:
        """Update inside an open write transaction; client_id: the id was chosen by the client, not matched."""
        current = await session.head(resource_type, id_)
        absent = current is None or current.deleted
        _append_only(resource_type)  # not even at a new id: AuditEvents are appended by the server's chain writer
        # what the caller may not see answers like a missing id; and as a missing id at a chosen id could
        # not be created where a hidden resource stands, callers limited by content create with POST only
        if _hidden(current, resource_type, "u") or (client_id and absent and _confined(resource_type, "u")):
            raise NotFound(f"{resource_type}/{id_} is not known")
        _check_if_match(current, if_match, resource_type, id_)
        vid = (current.vid + 1) if current else 1
        created = absent
        write = self.prepare(resource_type, id_, body, vid, self.clock(), "create" if created else "update",
                             current.vid if current else 0, method, current=current)
        await session.apply([write])
        return WriteOutcome(_stored(write), created=created)

    async def patch(self, resource_type: str, id_: str, patch: Any, *, if_match: int | None = None) -> WriteOutcome:
        """Apply a JSON Patch to the current version and store the result as a new version."""
        _append_only(resource_type)
        _require(resource_type, "u")
        async with self.store.write_session() as session:
            current = await session.head(resource_type, id_) if valid_id(id_) else None
            return await self.patch_in(session, resource_type, id_, current, patch, if_match)

    async def patch_in(self, session: WriteSession, resource_type: str, id_: str, current: StoredResource | None,
                       patch: Any, if_match: int | None) -> WriteOutcome:
        """Patch inside an open write transaction."""
        _append_only(resource_type)
        if current is None or _hidden(current, resource_type, "u") or (
                current.deleted and _confined(resource_type, "u")):
            raise NotFound(f"{resource_type}/{id_} is not known")
        if current.deleted:
            raise Gone(f"{resource_type}/{id_} was deleted")
        _check_if_match(current, if_match, resource_type, id_)
        assert current.body is not None
        patched = apply_patch(orjson.loads(current.body), patch)
        if not isinstance(patched, dict) or patched.get("id") != id_ or patched.get(
                "resourceType") != resource_type:
            raise Invalid("A patch may not change the resource type or id", code="invalid")
        await self.validate(patched, resource_type)
        write = self.prepare(resource_type, id_, patched, current.vid + 1, self.clock(), "update", current.vid,
                             "PATCH", current=current)
        await session.apply([write])
        return WriteOutcome(_stored(write), created=False)

    async def delete(self, resource_type: str, id_: str, *, if_match: int | None = None) -> StoredResource | None:
        """Delete (a new, empty version); deleting an absent or deleted resource changes nothing."""
        _append_only(resource_type)
        _require(resource_type, "d")
        if not valid_id(id_):
            raise Invalid(f"Invalid id '{id_}' in the URL", code="value")
        async with self.store.write_session() as session:
            return await self.delete_in(session, resource_type, id_, if_match)

    async def delete_in(self, session: WriteSession, resource_type: str, id_: str,
                        if_match: int | None) -> StoredResource | None:
        """Delete inside an open write transaction; what the caller may not see is deleted like an absent id."""
        _append_only(resource_type)
        current = await session.head(resource_type, id_)
        if current is None or current.deleted or _hidden(current, resource_type, "d"):
            return None
        _check_if_match(current, if_match, resource_type, id_)
        write = Write(resource_type, id_, current.vid + 1, self.clock(), "delete", None, None, current.vid,
                      "DELETE")
        sink = current_sink()
        if sink is not None:
            sink.wrote(resource_type, id_, write.vid, "delete", ())
        await session.apply([write])
        return _stored(write)

    async def conditional_update(self, resource_type: str, params: Params, body: Any,
                                 *, if_match: int | None = None) -> WriteOutcome:
        """PUT Type?criteria: update the single match, create when none, 412 when several."""
        _append_only(resource_type)
        _require(resource_type, "us")
        await self.validate(body, resource_type)
        criteria = self.parse_criteria(resource_type, params, "Conditional update")
        async with self.store.write_session() as session:
            target = await self.single_match(session, criteria, "Conditional update")
            if target is not None:
                if body.get("id") not in (None, target):
                    raise Invalid(f"The resource id '{body['id']}' differs from the matched resource '{target}'",
                                  code="invalid")
                return await self.update_in(session, resource_type, target, {**body, "id": target}, if_match)
            id_ = body.get("id") or new_id()
            return await self.update_in(session, resource_type, id_, {**body, "id": id_}, if_match,
                                        client_id="id" in body)

    async def conditional_patch(self, resource_type: str, params: Params, patch: Any,
                                *, if_match: int | None = None) -> WriteOutcome:
        """PATCH Type?criteria: patch the single match."""
        _append_only(resource_type)
        _require(resource_type, "us")
        criteria = self.parse_criteria(resource_type, params, "Conditional patch")
        async with self.store.write_session() as session:
            target = await self.single_match(session, criteria, "Conditional patch")
            if target is None:
                raise NotFound("Conditional patch criteria match no resource")
            current = await session.head(resource_type, target)
            return await self.patch_in(session, resource_type, target, current, patch, if_match)

    async def conditional_delete(self, resource_type: str, params: Params) -> StoredResource | None:
        """DELETE Type?criteria: delete the single match; 412 when several match."""
        _append_only(resource_type)
        _require(resource_type, "ds")
        criteria = self.parse_criteria(resource_type, params, "Conditional delete")
        async with self.store.write_session() as session:
            target = await self.single_match(session, criteria, "Conditional delete")
            return None if target is None else await self.delete_in(session, resource_type, target, None)


def _require(resource_type: str, letters: str) -> None:
    guard = current_guard()
    if guard is not None:
        for letter in letters:
            guard.require(resource_type, letter)


def _check_patient(guard: Guard | None, resource_type: str, id_: str, found: StoredResource | None) -> None:
    """C10: a request that names a patient whose Consents deny the caller everything is told so (403)."""
    if guard is not None and resource_type == "Patient" and found is not None and not found.deleted:
        guard.check_patient(id_)


def _visible(guard: Guard | None, resource_type: str, found: StoredResource, letter: str) -> bool:
    """Whether the caller may see this version; a deletion is visible unless the caller is patient-bound."""
    if guard is None or not guard.restricts(resource_type, letter):
        return True  # the scopes reach every resource of the type: no need to look inside
    if found.body is None:
        return not guard.patient_bound(resource_type, letter)
    return guard.visible(resource_type, orjson.loads(found.body), letter)


def _may_include(guard: Guard, found: StoredResource) -> bool:
    """An _include/_revinclude target: the caller needs r or s on its type and must be allowed to see it."""
    for letter in ("r", "s"):
        try:
            guard.require(found.type, letter)
        except FhirError:
            continue
        return _visible(guard, found.type, found, letter)
    return False


def _append_only(resource_type: str) -> None:
    if resource_type in APPEND_ONLY:
        raise MethodNotAllowed(f"{resource_type} is append-only: it cannot be updated, patched or deleted")


def _confined(resource_type: str, letter: str) -> bool:
    """True when what the caller may write of this type depends on the content (a patient, granular filters)."""
    guard = current_guard()
    return guard is not None and guard.restricts(resource_type, letter)


def _hidden(current: StoredResource | None, resource_type: str, letter: str) -> bool:
    """True when the caller may neither write nor see this version: it then answers like an absent resource.

    A version the caller may see but not write is refused (403): its existence is no secret to them.
    """
    guard = current_guard()
    if guard is None or current is None or current.deleted or _visible(guard, resource_type, current, letter):
        return False
    try:
        guard.require(resource_type, "r")
    except FhirError:
        return True
    if _visible(guard, resource_type, current, "r"):
        raise Forbidden(f"The access token does not allow changing this {resource_type}", code="forbidden")
    return True


def _shown(guard: Guard | None, found: StoredResource) -> StoredResource:
    """The version as this caller may see it (secrets some types carry are masked or removed)."""
    if guard is None or found.body is None or found.type not in guard.redacted_types:
        return found
    return found._replace(body=guard.redact(found.type, found.body))


def _returned(found: StoredResource) -> StoredResource:
    sink = current_sink()
    if sink is not None:
        sink.returned((found,))
    return found


def _returned_all(found: list[StoredResource]) -> list[StoredResource]:
    sink = current_sink()
    if sink is not None:
        sink.returned(found)
    return found


def _check_if_match(current: StoredResource | None, if_match: int | None, resource_type: str, id_: str) -> None:
    if if_match is None:
        return
    if current is None or current.deleted:
        raise PreconditionFailed(f"If-Match version {if_match} given, but {resource_type}/{id_} does not exist")
    if current.vid != if_match:
        raise PreconditionFailed(f"{resource_type}/{id_} is at version {current.vid}, not {if_match} (If-Match)")


def _stored(write: Write) -> StoredResource:
    return StoredResource(write.type, write.id, write.vid, write.updated_ms, write.action == "delete", write.body,
                          write.method)
