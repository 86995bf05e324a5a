"""create_app: the composition root (settings, store, registries, routes, error handlers).

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry import TelemetryConfig

from consent.access import AccessPolicy
from consent.audit.chain import CHECKPOINT_TYPE
from consent.audit.log_recorder import LogRecorder
from consent.audit.recorder import AuditRecorder
from consent.audit.redact import STAFF_VIEWS
from consent.audit.trail import AuditTrail
from consent.deidentify_profile import ProfileError, load_profile
from consent.engine import ConsentPolicy
from consent.engine.writes import refuse_unevaluable
from operations.bulk_jobs import BulkJobs
from operations.cohort import CohortRules, PopulationCache
from operations.definitions import seed_definitions
from operations.recompute import Recomputation
from resources.duplicates import DuplicateRule
from resources.model_pool import ModelValidator
from resources.models import resource_types, warm_up
from resources.reindex import Reindexer
from resources.repository import APPEND_ONLY, Repository
from resources.search.custom import CustomParameters
from resources.search.index import Indexer, load_patient_compartment
from resources.search.parse import SearchLimits
from resources.search.registry import SearchRegistry, default_registry
from resources.store.audit_log.sqlite import SqliteAuditLog
from resources.store.follower import FeedFollower
from resources.store.protocol import Store, Write, every
from resources.store.routed import RoutedStore
from resources.store.sqlite.reserve import DiskReserve
from resources.store.sqlite.store import SqliteStore
from resources.validation import ValidationLimits
from server import errors
from server import health as probes
from server import metrics as metrics_routes
from server.audit import AuditMiddleware
from server.auth import routes as auth_routes
from server.auth.bearer import BearerMiddleware
from server.auth.grants import GrantRevocations
from server.auth.service import AuthService
from server.auth.transport import issuer_problem
from server.capability import VERSION
from server.consent_setup import install_consent, notification_audience
from server.context import Services, configured_base, configured_issuer
from server.cors import AllowedOrigins
from server.docs import install_docs
from server.edge import EdgeMiddleware
from server.forwarded import ForwardedMiddleware, TrustedProxies
from server.logging_json import AccessLogMiddleware
from server.memory import limit_arenas, release_free_memory
from server.metrics import Metrics, MetricsMiddleware, check_settings
from server.negotiation import NegotiationMiddleware
from server.openapi import describe_fhir_media, describe_parameters, describe_security
from server.routes import bulk, health, instance, operations, reindex, system
from server.routes import type as type_routes
from server.routing import DepthDispatch
from server.settings import Settings
from server.tls import HstsMiddleware, check_tls
from subscriptions.endpoints import EndpointPolicy
from subscriptions.engine import EngineConfig, SubscriptionEngine
from subscriptions.escalation import EscalationConfig, EscalationWorker
from subscriptions.seed import seed_pathways
from subscriptions.surveys import SurveyWorker
from terminology.bindings import RequiredBindings
from terminology.device_rules import DeviceRules
from terminology.seed import seed
from terminology.service import TerminologyService

log = logging.getLogger("careloop")


def telemetry_config(environ: Mapping[str, str]) -> TelemetryConfig:
    """FastAPI's native OpenTelemetry signals, each on only where a provider for it can be configured.

    https://opentelemetry.io/docs/languages/python/
    """
    # FastAPI asks OpenTelemetry on every request whether a provider is set (three look-ups in os.environ,
    # 3 to 4 us of a 25 us read by id). CareLoop sets none in code, so only FastAPI's auto-configuration or
    # these variables can configure one; with none of them set every answer is the same "no", said once here.
    if environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return {}
    return {"tracing": "OTEL_PYTHON_TRACER_PROVIDER" in environ, "metrics": "OTEL_PYTHON_METER_PROVIDER" in environ,
            "logs": "OTEL_PYTHON_LOGGER_PROVIDER" in environ}


def disk_reserve(settings: Settings) -> DiskReserve | None:
    """The room kept for the audit trail in the SQLite data folder (None for MongoDB, memory, or size 0)."""
    if settings.store != "sqlite" or settings.sqlite_path == ":memory:" or settings.disk_reserve_mib <= 0:
        return None
    return DiskReserve(Path(settings.sqlite_path).parent, settings.disk_reserve_mib)


def build_store(settings: Settings, registry: SearchRegistry, mongo_client: Any = None,
                reserve: DiskReserve | None = None) -> Store:
    """The configured store adapter (not yet opened)."""
    if settings.store == "sqlite":
        return SqliteStore(settings.sqlite_path, readers=settings.sqlite_readers, subsumed=registry.subsumed,
                           cache_mib=settings.sqlite_cache_mib, loop_cache_mib=settings.sqlite_loop_cache_mib,
                           inline_ms=settings.sqlite_inline_ms,
                           writer_idle_s=settings.sqlite_writer_idle_seconds, on_release=release_free_memory,
                           body_memo_mib=settings.sqlite_body_memo_mib,
                           heap_limit_mib=settings.sqlite_heap_limit_mib, reserve=reserve)
    if settings.store == "mongodb":
        # imported only when used: pymongo adds about 14 MB to every process that loads it
        from resources.store.mongo.store import MongoStore

        return MongoStore(settings.mongodb_url, settings.mongodb_database, client=mongo_client,
                          timeout_ms=settings.mongodb_timeout_ms)
    raise SystemExit(f"CARELOOP_STORE={settings.store!r} is not a store; use 'sqlite' or 'mongodb'")


def build_audit_store(settings: Settings, mongo_client: Any = None) -> Store:
    """The audit trail's own MongoDB database (on SQLite the trail is the audit log, resources/store/audit_log/)."""
    from resources.store.mongo.store import AUDIT_INDEXES, MongoStore

    return MongoStore(settings.mongodb_url, settings.mongodb_database + "_audit", client=mongo_client,
                      timeout_ms=settings.mongodb_timeout_ms, indexes=AUDIT_INDEXES)


def audit_path(settings: Settings) -> str:
    """The audit trail's SQLite file: CARELOOP_AUDIT_DB, else <store>-audit.sqlite beside the FHIR store."""
    return settings.audit_db or (":memory:" if settings.sqlite_path == ":memory:" else
                                 str(Path(settings.sqlite_path).with_suffix("")) + "-audit.sqlite")


def build_audit(settings: Settings, registry: SearchRegistry, indexer: Indexer, store: Store,
                mongo_client: Any = None, reserve: DiskReserve | None = None) -> tuple[Store, AuditTrail | None]:
    """The store the repository uses (AuditEvents routed to their own) and the audit trail; none when off."""
    if settings.audit == "off":
        return store, None
    if settings.audit != "on":
        raise SystemExit(f"CARELOOP_AUDIT={settings.audit!r}: use 'on' or 'off'")
    if settings.audit_patient_shows_staff not in STAFF_VIEWS:
        raise SystemExit(f"CARELOOP_AUDIT_PATIENT_SHOWS_STAFF must be one of {', '.join(STAFF_VIEWS)}")
    recorder: LogRecorder | AuditRecorder
    if settings.store == "sqlite":  # the audit log: one record per request, materialised on read (docs/audit.md)
        path = audit_path(settings)
        shared = reserve if reserve is not None and Path(path).parent == reserve.path.parent else None
        recorder = LogRecorder(SqliteAuditLog(path, inline_ms=settings.sqlite_inline_ms, reserve=shared), indexer,
                               checkpoint_events=settings.audit_checkpoint_events,
                               checkpoint_seconds=settings.audit_checkpoint_seconds, instance_id=settings.instance_id)
    else:  # MongoDB keeps each AuditEvent whole in a database of its own
        recorder = AuditRecorder(build_audit_store(settings, mongo_client), indexer,
                                 checkpoint_events=settings.audit_checkpoint_events,
                                 checkpoint_seconds=settings.audit_checkpoint_seconds)
    return RoutedStore(store, recorder.store, APPEND_ONLY), AuditTrail(recorder, indexer)


def build_services(settings: Settings, mongo_client: Any = None) -> Services:
    """Store, registry, indexer and repository for the settings (not yet opened)."""
    registry = default_registry(resource_types())
    indexer = Indexer(registry, load_patient_compartment())
    limits = SearchLimits(settings.default_count, settings.max_count, settings.max_or_values)
    reserve = disk_reserve(settings)
    store, audit = build_audit(settings, registry, indexer, build_store(settings, registry, mongo_client, reserve),
                               mongo_client, reserve)
    workers = settings.validation_workers if settings.validation_workers >= 0 else max(0, (os.cpu_count() or 1) - 1)
    repository = Repository(store, registry, indexer, ValidationLimits(settings.max_depth), limits,
                            models=ModelValidator(workers))
    custom = CustomParameters(registry, indexer, resource_types())
    reindexer = Reindexer(store, indexer)

    def on_commit(writes: list[Write]) -> None:
        types = custom.on_commit(writes)
        if types:  # a new or changed SearchParameter: existing data gets its entries in the background
            reindexer.start(types)

    store.add_commit_listener(on_commit)
    terminology = TerminologyService(store, settings.expansion_limit)
    repository.terminology = terminology
    repository.write_hooks.append(RequiredBindings().check)
    repository.write_hooks.append(refuse_unevaluable)  # Consents the engine cannot decide on: 422 (issue 28)
    rules = DeviceRules()
    store.add_commit_listener(rules.on_commit)
    repository.write_hooks.append(rules.check)
    indexer.canonical = rules.canonical_quantities
    try:
        profile = load_profile(settings.deidentify_profile)
    except ProfileError as exc:
        raise SystemExit(f"CARELOOP_DEIDENTIFY_PROFILE: {exc}") from exc
    policy = AccessPolicy(registry, indexer, load_patient_compartment(), limits, deidentify=profile)
    policy.patient_shows_staff = settings.audit_patient_shows_staff
    if audit is not None:
        repository.appender = audit.recorder
    engine = None
    if settings.subscriptions:
        engine = SubscriptionEngine(repository, engine_config(settings))
        repository.write_hooks.append(engine.check)
        store.add_commit_listener(engine.on_commit)
    try:
        cohort = CohortRules.of(settings.cohort_rules)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"CARELOOP_COHORT_RULES: {exc}") from exc
    try:
        consent_policy = ConsentPolicy.of(dict(settings.consent_policy))
    except ValueError as exc:
        raise SystemExit(f"CARELOOP_CONSENT_POLICY: {exc}") from exc
    try:
        repository.duplicates = DuplicateRule(frozenset(settings.patient_unique_identifier_systems),
                                              settings.patient_duplicate_mode)
    except ValueError as exc:
        raise SystemExit(f"CARELOOP_PATIENT_DUPLICATE_MODE: {exc}") from exc
    install_consent(settings, policy, repository, consent_policy)
    found = Services(settings, repository, custom, reindexer, terminology, rules, policy, engine, cohort,
                     PopulationCache(settings.cohort_cache_seconds), consent_policy=consent_policy)
    found.audit = audit
    found.disk = reserve
    return found


def bulk_folder(settings: Settings) -> Path:
    """Where bulk jobs keep their files: configured, else beside the SQLite file, else a temporary folder."""
    if settings.bulk_folder:
        return Path(settings.bulk_folder)
    if settings.store == "sqlite" and settings.sqlite_path != ":memory:":
        return Path(str(Path(settings.sqlite_path).with_suffix("")) + "-bulk")
    return Path(tempfile.gettempdir()) / f"careloop-bulk-{os.getpid()}"


def trusted_proxies(settings: Settings) -> TrustedProxies:
    """The proxies whose forwarded headers count; SystemExit for an entry that is not an address or a network."""
    try:
        return TrustedProxies(settings.trusted_proxies)
    except ValueError as exc:
        raise SystemExit(f"CARELOOP_TRUSTED_PROXIES: {exc}") from exc


def engine_config(settings: Settings) -> EngineConfig:
    """The subscription engine's settings; SystemExit for an allowed network that is not a CIDR."""
    try:
        policy = EndpointPolicy.of(settings.subscription_allowed_networks)
    except ValueError as exc:
        raise SystemExit(f"CARELOOP_SUBSCRIPTION_ALLOWED_NETWORKS: {exc}") from exc
    return EngineConfig(configured_base(settings), policy, tuple(settings.subscription_retry_delays),
                        {k: v * 60_000 for k, v in settings.service_level_minutes.items()},
                        settings.subscription_events_retained)


def escalation_worker(settings: Settings, svc: Services) -> EscalationWorker | None:
    """The service-level escalation worker (not yet started); None when turned off."""
    if not settings.escalation:
        return None
    return EscalationWorker(svc.repository, EscalationConfig(
        {k: v * 60_000 for k, v in settings.service_level_minutes.items()}, settings.escalation_max_level,
        settings.escalation_interval_seconds, base_url=configured_base(settings)))


async def load_custom_parameters(svc: Services) -> None:
    """Register the SearchParameter resources stored by earlier runs."""
    async for res in every(svc.repository.store, "SearchParameter"):
        svc.custom.apply(res.id, orjson.loads(res.body or b"{}"))


async def open_services(svc: Services) -> Services:
    """Open the store and load what serving needs: validation workers, stored SearchParameters, device rules, seed."""
    await svc.repository.store.open()  # first: an unreachable database stops the start at once
    svc.repository.models.start()  # early: the workers load the models while the rest of the start goes on
    await load_custom_parameters(svc)
    await svc.device_rules.load(svc.repository.store)
    if svc.policy.consent is not None:
        await svc.policy.consent.book.load(svc.repository.store)
    if svc.settings.terminology_seed:
        await seed(svc.repository)
    if svc.settings.pathways_seed:
        await seed_pathways(svc.repository)
        await seed_definitions(svc.repository)
    if svc.repository.models.local:
        # last, so the long-lived models fill the memory the start-up work above freed instead of new pages
        warm_up()
    return svc


def create_app(settings: Settings | None = None, *, mongo_client: Any = None) -> FastAPI:
    """The CareLoop ASGI application (mongo_client: an already made client, for tests)."""
    settings = settings or Settings()
    if settings.auth != "off":  # refuse to start rather than hand out tokens and codes over clear text
        problem = issuer_problem(configured_issuer(configured_base(settings)))
        if problem:
            raise ValueError(problem)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_arenas(settings.malloc_arenas)  # before the store starts its threads
        svc = await open_services(build_services(settings, mongo_client))
        if svc.subscriptions is not None:
            await svc.subscriptions.start()
        escalation = escalation_worker(settings, svc)
        app.state.escalation = escalation
        surveys = app.state.surveys = SurveyWorker(svc.repository) if settings.subscriptions else None
        if surveys is not None:  # answered satisfaction surveys complete their Tasks (issue 30)
            svc.repository.store.add_commit_listener(surveys.on_commit)
            await surveys.start()
        revocations = None
        if settings.auth == "off":
            log.warning("CARELOOP_AUTH=off: every request has full access with no token. Never use this outside "
                        "local development.")
        else:
            svc.auth = AuthService.open(settings, frozenset(resource_types()))
            if svc.subscriptions is not None and svc.policy.consent is not None:
                svc.subscriptions.audience = notification_audience(svc.policy.consent, svc.auth)
            # a patient's grant Consent made inactive or deleted revokes the app's tokens before the write returns
            revocations = GrantRevocations(svc.auth.signer, svc.auth.store)
            svc.repository.store.add_commit_listener(revocations.on_commit)
        svc.bulk = BulkJobs(bulk_folder(settings), settings.bulk_file_seconds, settings.bulk_sweep_seconds)
        await svc.bulk.open()
        if svc.audit is not None:
            if svc.auth is not None:  # checkpoints are signed with the authorization server's key (its JWKS)
                signer = svc.auth.signer
                svc.audit.recorder.sign = lambda claims: signer.sign(claims, CHECKPOINT_TYPE)
                svc.audit.keys = signer.jwks
            await svc.audit.recorder.open()
        app.state.services = svc
        # several instances on one store: the others' Consent, SearchParameter and ObservationDefinition writes reach
        # this one's caches within half a second (resources/store/follower.py, docs/operations.md Scale out)
        follower = FeedFollower(svc.repository.store, svc.repository.store.committed_elsewhere)
        svc.repository.store.add_commit_listener(follower.on_commit)
        await follower.start()
        # The registry, indexer and (with no workers) the R4B models are long-lived objects; freezing them keeps every
        # garbage collection from walking them again (otherwise a full collection costs milliseconds).
        gc.collect()
        gc.freeze()
        release_free_memory()
        # requests allocate many short-lived objects that reference counting frees; collect cycles less often
        gc.set_threshold(50_000, 20, 20)
        log.info("CareLoop serving FHIR %s on the %s store", "4.3.0", settings.store)
        recomputing = None  # the nightly recomputation of the persisted segments (docs/cohort.md)
        if settings.cohort_recompute_seconds > 0:
            job = Recomputation(svc.repository, svc.cohort, svc.population, settings.cohort_recompute_seconds,
                                settings.cohort_recompute_at)
            recomputing = asyncio.create_task(job.run(), name="cohort-recompute")
        if escalation is not None:  # after the audit trail opened: escalations are audited
            await escalation.start()
        try:
            yield
        finally:
            await follower.close()
            if recomputing is not None:
                recomputing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recomputing
            if escalation is not None:
                await escalation.close()
            if surveys is not None:
                await surveys.close()
            if svc.subscriptions is not None:
                await svc.subscriptions.close()
            await svc.reindexer.close()
            if svc.bulk is not None:
                await svc.bulk.close()
            if svc.audit is not None:
                await svc.audit.recorder.close()
            await svc.repository.store.close()
            if svc.auth is not None:
                if revocations is not None:
                    await revocations.drain()
                svc.auth.close()
            svc.repository.models.close()

    app = FastAPI(title="CareLoop FHIR server", version=VERSION, lifespan=lifespan, docs_url=None,
                  redoc_url=None, telemetry=telemetry_config(os.environ))
    install_docs(app)  # Swagger UI from a package: /docs works offline
    errors.install(app)
    # OAuth errors are RFC 6749 JSON wherever raised: a 404 on the discovery and key endpoints with auth off
    app.add_exception_handler(auth_routes.JsonError, auth_routes.json_error_handler)
    app.add_middleware(NegotiationMiddleware)
    app.add_middleware(BearerMiddleware)
    # outside the token check: refused requests are recorded too, and every answer waits for its record
    app.add_middleware(AuditMiddleware)
    # outside the token check: 401s get the edge headers too, and preflights need no token
    app.add_middleware(EdgeMiddleware, origins=AllowedOrigins(settings.cors_origins, settings.cors_cache_seconds))
    if check_tls(settings.tls_cert, settings.tls_key):  # browsers keep to https for this host from then on
        app.add_middleware(HstsMiddleware, seconds=settings.hsts_seconds)
    if settings.log_format == "json":  # the access line waits for the audit edge's X-Request-Id
        app.add_middleware(AccessLogMiddleware)
    check_settings(settings.metrics, settings.metrics_token)
    if settings.metrics != "off":  # outside the audit and token checks: refused requests are counted too
        app.state.metrics = Metrics()
        app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    if settings.trusted_proxies:  # outermost: everything after it sees the client behind the proxy
        app.add_middleware(ForwardedMiddleware, proxies=trusted_proxies(settings))
    for module in (instance, type_routes, system, reindex, bulk, operations, auth_routes, health, probes,
                   metrics_routes):
        # routes join the app's own table: FastAPI walks included routers one by one on every request,
        # which cost a third of the time of a read. The path convertors keep these routes from overlapping.
        app.router.routes.extend(module.router.routes)
    # a request then tries only the FHIR routes of its path's depth (server/routing.py)
    app.router.middleware_stack = DepthDispatch(app.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description="FHIR R4B REST API (application/fhir+json)")
            describe_parameters(schema)
            describe_fhir_media(schema)
            if settings.auth != "off":
                describe_security(schema, configured_base(settings))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
