"""Settings: one pydantic-settings class, environment variables prefixed CARELOOP_.

https://docs.pydantic.dev/latest/concepts/pydantic_settings/
"""

from __future__ import annotations

import json
import textwrap

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server configuration; build one in create_app() or the CLI, never at import time."""

    model_config = SettingsConfigDict(env_prefix="CARELOOP_", env_ignore_empty=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    store: str = Field("sqlite", description="sqlite (embedded) or mongodb")
    sqlite_path: str = Field("./data/careloop.db", description="SQLite file; ':memory:' for a throw-away store")
    sqlite_readers: int = 2
    sqlite_cache_mib: int = Field(32, ge=1, description="SQLite page cache of the writer's and each reader's "
                                  "connection, in MiB: smaller saves memory, larger keeps more of the index in "
                                  "memory for long searches")
    sqlite_heap_limit_mib: float = Field(32, ge=0, description="Bound on all SQLite page caches of the process "
                                         "together, in MiB (SQLite's soft heap limit): near it, connections "
                                         "recycle their own pages rather than grow; 0 sets no bound")
    sqlite_loop_cache_mib: int = Field(8, ge=1, description="SQLite page cache of the event loop's own "
                                       "connection, in MiB (it serves reads by id and searches within "
                                       "CARELOOP_SQLITE_INLINE_MS, which touch few pages)")
    sqlite_inline_ms: float = Field(1.0, ge=0, description="A search first runs on the event loop's own "
                                    "connection for up to this many milliseconds (a thread hand-off costs more "
                                    "than most searches), then moves to a reader thread; 0 sends every search "
                                    "to a reader thread")
    sqlite_writer_idle_seconds: float = Field(5.0, ge=0, description="After this many seconds without a write, "
                                              "the writer's page cache (filled by ingests, used only by writes) "
                                              "is handed back to the system; 0 keeps it")
    sqlite_body_memo_mib: float = Field(8, ge=0, description="Memo of restored resource bodies, in MiB, "
                                        "shared by the process: hot resources skip decompression; 0 turns "
                                        "it off")
    malloc_arenas: int = Field(1, ge=0, description="Most malloc arenas the serving process's threads share "
                               "(glibc); one keeps memory freed by one thread reusable by the others, 0 keeps "
                               "glibc's default of one per contending thread")
    mongodb_url: str = Field("mongodb://localhost:27017/?replicaSet=rs0", description="MongoDB connection string "
                             "(a replica set: transactions need one)")
    mongodb_database: str = "careloop"
    mongodb_timeout_ms: int = Field(5000, description="How long to wait for MongoDB before answering 503")
    base_url: str | None = Field(None, description="Externally visible FHIR base URL, e.g. https://x.org/fhir: "
                                 "the audience of access tokens, the issuer's origin, every URL of discovery, and "
                                 "the base of links (default: http://<host>:<port>/fhir)")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Addresses or CIDR networks of reverse proxies whose Forwarded / "
        "X-Forwarded-* headers are believed (client address, scheme, host for links), e.g. [\"10.0.0.5\"]; "
        "requests from anyone else have them ignored")
    cors_origins: list[str] | None = Field(
        None, description="Browser origins (scheme://host[:port]) allowed to call the token, introspection and "
        "revocation endpoints and the FHIR API cross-origin (default: the origins of the registered clients' "
        "redirect URIs)")
    cors_cache_seconds: float = Field(5.0, ge=0, description="How long the origins of registered redirect URIs "
                                      "are remembered before the client list is read again (clients added from "
                                      "the CLI count within this time)")
    max_body_bytes: int = 16 * 1024 * 1024
    max_depth: int = 64
    max_bundle_entries: int = 5000
    default_count: int = 50
    max_count: int = 1000
    max_or_values: int = 100
    validation_workers: int = Field(-1, description="Processes holding the R4B models and validating every write; "
                                    "-1 = one per spare core, 0 = in the serving process")
    log_level: str = "info"
    tls_cert: str | None = Field(None, description="PEM certificate (chain) for TLS in the server itself; with "
                                 "CARELOOP_TLS_KEY the server speaks only HTTPS and sends HSTS")
    tls_key: str | None = Field(None, description="PEM private key of CARELOOP_TLS_CERT")
    hsts_seconds: int = Field(31536000, ge=0, description="max-age of Strict-Transport-Security when TLS is on")
    log_format: str = Field("text", description="text: readable lines on stderr; json: one JSON object per line "
                            "on stdout with an access line per request (request id, client, interaction, status, "
                            "latency; no query, body or header values)")
    terminology_seed: bool = Field(True, description="Load the shipped CodeSystems, ValueSets, ConceptMaps and "
                                   "ObservationDefinitions into the store at start (once per content version)")
    auth: str = Field("on", description="on: SMART on FHIR tokens required; off: no authorization (development only)")
    auth_db: str | None = Field(None, description="The authorization server's SQLite file (default: beside the "
                                "FHIR store, <name>-auth.db)")
    launch_seconds: float = Field(300, gt=0, description="How long an EHR launch context (POST /auth/launch) "
                                  "may be used; it is used once")
    btg_token_seconds: int = Field(900, gt=0, le=900, description="Lifetime of a break-glass (__pou/BTG) access "
                                   "token, in seconds: at most 15 minutes, and never refreshed")
    signin_user_failures: int = Field(10, ge=1, description="Failed sign-ins of one user name (known or not) "
                                      "that lock it: sign-in is refused (429) until `careloop users "
                                      "unlock` or CARELOOP_SIGNIN_LOCK_SECONDS pass")
    signin_lock_seconds: float = Field(86400, ge=0, description="How long a locked user name stays locked "
                                       "unless an administrator unlocks it first; 0: until unlocked")
    signin_address_failures: int = Field(30, ge=1, description="Failed sign-ins from one client address within "
                                         "CARELOOP_SIGNIN_ADDRESS_WINDOW_SECONDS after which that address is "
                                         "refused (429) until the window ends")
    signin_address_window_seconds: float = Field(900, gt=0, description="The window of "
                                                 "CARELOOP_SIGNIN_ADDRESS_FAILURES")
    audit: str = Field("on", description="on: every FHIR request is recorded in the audit trail before it is "
                       "answered (503 when the trail cannot be written); off: nothing is recorded (development only)")
    disk_reserve_mib: float = Field(8, ge=0, description="Room kept free in the SQLite data folder (a file "
                                    "careloop.reserve) for the audit trail: when the disk fills it is released, "
                                    "writes answer 507 and reads stay recorded; 0: none")
    audit_db: str | None = Field(None, description="The audit trail's SQLite file (default: beside the FHIR store, "
                                 "<name>-audit.sqlite); with MongoDB the trail is the database <name>_audit")
    metrics: str = Field("off", description="Prometheus metrics at /metrics: off (404), open (anyone who reaches "
                         "the port; a private network only), or token (a bearer CARELOOP_METRICS_TOKEN)")
    metrics_token: SecretStr | None = Field(None, description="The bearer secret /metrics asks for with "
                                            "CARELOOP_METRICS=token (16 characters or more)")
    instance_id: str | None = Field(None, description="This server process's name among several on one store: its "
                                    "audit records form a hash chain of their own (default: an id minted once and "
                                    "kept in the audit file)")
    audit_checkpoint_events: int = Field(1000, ge=1, description="Sign a checkpoint of the audit chain's head "
                                         "after this many events")
    audit_checkpoint_seconds: float = Field(60, gt=0, description="... or this many seconds after the first "
                                            "event not yet checkpointed")
    audit_patient_shows_staff: str = Field("roles", description="How a patient reading the AuditEvents about "
                                           "their record sees the staff who acted: names, roles (who replaced by "
                                           "their role) or none")
    expansion_limit: int = Field(10_000, description="Largest ValueSet expansion ($expand, :in, :not-in)")
    deidentify_profile: str | None = Field(None, description="A de-identification profile (JSON) to use instead "
                                           "of the shipped one: what the trainee role sees (docs/deidentification.md)")
    subscriptions: bool = Field(True, description="Run the subscription engine: topics, rest-hook notifications "
                                "and follow-up Tasks from pathways")
    pathways_seed: bool = Field(True, description="Load the default follow-up pathways (SubscriptionTopics, "
                                "ActivityDefinitions, PlanDefinitions) the store does not hold yet, and the "
                                "OperationDefinitions of $tier and $churn-risk")
    subscription_allowed_networks: list[str] = Field(
        default_factory=list, description="CIDR networks rest-hook endpoints may reach besides public addresses, "
        "e.g. [\"10.1.0.0/16\"] for an in-house receiver (loopback and private addresses are refused otherwise)")
    subscription_retry_delays: list[float] = Field(
        default_factory=lambda: [0.5, 2.0, 10.0, 30.0],
        description="Seconds to wait before each retry of a failed notification; after the last the "
        "Subscription is set to error")
    subscription_events_retained: int = Field(1000, ge=1, description="Numbered events kept in the store per "
                                              "subscription for $events (events not yet delivered are kept too)")
    service_level_minutes: dict[str, int] = Field(
        default_factory=lambda: {"stat": 30, "asap": 120, "urgent": 120, "routine": 1440},
        description="Deadline of a follow-up Task by priority when its template gives no due offset "
        "(DOMAIN.md section 4)")
    escalation: bool = Field(True, description="Run the escalation worker: open Tasks past their deadline are "
                             "escalated (docs/subscriptions.md, Service levels and escalation)")
    escalation_interval_seconds: float = Field(30, gt=0, description="How often the escalation worker looks for "
                                               "overdue Tasks (a Task is escalated within this of its deadline)")
    escalation_max_level: int = Field(2, ge=1, description="How often one Task may be escalated; still open "
                                      "after the last escalation's deadline it is marked exhausted")
    cohort_rules: dict[str, float | str] = Field(
        default_factory=dict, description="Overrides of the tier and churn-risk rules (DOMAIN.md sections 1-2), "
        "e.g. {\"lost_days\": 150}; every rule and its value is listed in each $tier and $churn-risk answer")
    consent_policy: dict[str, list[str] | str] = Field(
        default_factory=dict, description="Overrides of the consent engine's policy (docs/consent.md), e.g. "
        "{\"implicit\": \"all-normal\", \"combining\": \"most-recent\"}; codings as \"system|code\"")
    audit_retention_days: int = Field(2190, ge=1, description="How long AuditEvents are kept, in days (default "
                                      "six years): older ones are exported and removed by `careloop audit "
                                      "export-expired` and `purge-expired`, never automatically")
    cohort_cache_seconds: float = Field(
        300, ge=0, description="How long one patient's $tier may use the population's spend lines before they "
        "are computed again (0: every time); the answer says when they were computed")
    cohort_recompute_seconds: float = Field(
        86400, ge=0, description="How often the persisted tiers, lifecycle stages and churn risks are recomputed "
        "(default daily: nightly; 0: never); only changed results are written (docs/cohort.md)")
    cohort_recompute_at: str = Field(
        "02:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="The time of day (UTC, HH:MM) the "
        "recomputation is first due; then every CARELOOP_COHORT_RECOMPUTE_SECONDS")
    consent_collected_types: list[str] = Field(
        default_factory=lambda: ["Observation"], description="Resource types whose creation by a device or "
        "backend client needs the patient's Consent to collect (provision.action collect)")
    patient_unique_identifier_systems: list[str] = Field(
        default_factory=list, description="Identifier systems that give each person one value (e.g. a national ID "
        "or the clinic's MRN): creating a Patient with a value already stored is refused or merged "
        "(docs/patient-matching.md); also what makes two $match candidates certainly-not the same person")
    patient_duplicate_mode: str = Field(
        "refuse", description="What a create of an existing patient gets: refuse (409 naming the record) or merge "
        "(200 with the existing record, as a conditional create)")
    bulk_folder: str | None = Field(None, description="Folder of the $export and $import files (default: beside "
                                    "the SQLite file, <name>-bulk; a temporary folder for ':memory:' or MongoDB)")
    bulk_file_seconds: float = Field(3600, gt=0, description="How long a finished bulk job's status and files are "
                                     "kept before they are removed, in seconds")
    bulk_sweep_seconds: float = Field(60, gt=0, description="How often expired bulk jobs are looked for, in seconds")
    bulk_import_sources: list[str] = Field(default_factory=list, description="URL prefixes $import may fetch input "
                                           "files from (none: inputs must be uploaded); the rest-hook address rules "
                                           "apply too (CARELOOP_SUBSCRIPTION_ALLOWED_NETWORKS)")
    bulk_import_max_bytes: int = Field(1 << 30, gt=0, description="Largest $import input file (uploaded or fetched)")
    clinic_organization: str | None = Field(
        None, description="The clinic's own Organization (e.g. Organization/clinic): clients and users "
        "registered with any other organization are third parties, who need a Consent naming them")


def settings_help() -> str:
    """Every setting with its environment variable, default and meaning: the text of `serve --help`."""
    lines = ["settings (environment variables; JSON for lists and maps):"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None else json.dumps(default) if isinstance(default, list | dict) else default
        lines.append(f"  CARELOOP_{name.upper()}  (default: {shown})")
        if field.description:
            lines.extend(textwrap.wrap(field.description, 100, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)
