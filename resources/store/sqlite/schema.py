"""SQLite schema of the embedded store: current resources, the version log and typed index tables.

Every byte of a resource is stored once: the current version's body lives in `resource` (zstd with a
dictionary, see bodies.py) and moves into its `version` row when a newer version replaces it. The version
log, ordered by `seq` and written in the same transaction as each change, is also the change feed that
subscriptions read. Code systems are stored as small integers (`system`). Index tables are clustered by
(rid, n): a new resource's entries append at the end of each table, and the entries of one resource are
deleted as one range, so each table needs only its search index beside it.

https://www.sqlite.org/wal.html
"""

from __future__ import annotations

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA wal_autocheckpoint=10000",
    "PRAGMA temp_store=MEMORY",
)
# Each connection keeps its own page cache (4 connections: the writer, two readers, the event loop's).
# The writer and the readers get 32 MiB each: ingests and long searches (broad counts, large includes) run
# there. The event loop's connection serves reads by id and searches within the inline budget, which
# touch few pages, so 8 MiB holds what they reuse (side by side at 10k, 100k and 1M resources, 8 and 32
# MiB gave the same latencies within noise; 32 MiB kept 13 to 24 MiB more after a search mix). Pages
# beyond the caches come from the operating system's file cache, which the processes share.
CACHE_MIB = 32
LOOP_CACHE_MIB = 8
# ... and all of them together stay near this bound (SQLite's soft heap limit, which is the process's):
# once SQLite's heap reaches it, a connection that needs a page recycles its own least recently used one
# rather than allocating, so one connection may still use its whole cache while the others hold little.
# Without it the four caches could grow to 104 MiB between them on a file that large; a server under a
# steady mix filled them, 32 MiB of growth in ten minutes. https://www.sqlite.org/pragma.html#pragma_soft_heap_limit
HEAP_LIMIT_MIB = 32

DDL = """
CREATE TABLE IF NOT EXISTS resource (
    rid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    vid INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    body BLOB,
    UNIQUE (type, id)
);
CREATE INDEX IF NOT EXISTS resource_updated ON resource (type, updated);
CREATE INDEX IF NOT EXISTS resource_type_rid ON resource (type, rid);
CREATE TABLE IF NOT EXISTS version (
    seq INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    type TEXT NOT NULL,
    vid INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    method TEXT NOT NULL,
    action TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    body BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS version_instance ON version (rid, vid);
CREATE INDEX IF NOT EXISTS version_type ON version (type, seq);
CREATE INDEX IF NOT EXISTS version_updated ON version (updated);
CREATE TABLE IF NOT EXISTS mark (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event (
    sub TEXT NOT NULL,
    n INTEGER NOT NULL,
    at INTEGER NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    vid INTEGER NOT NULL,
    method TEXT NOT NULL,
    withheld INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sub, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS system (
    sid INTEGER PRIMARY KEY,
    uri TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS sp (
    pid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    code TEXT NOT NULL,
    UNIQUE (type, code)
);
CREATE TABLE IF NOT EXISTS idx_token (rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, system INTEGER,
                                      code TEXT, text TEXT, PRIMARY KEY (rid, n)) WITHOUT ROWID;
DROP INDEX IF EXISTS idx_token_code;
CREATE INDEX IF NOT EXISTS idx_token_code_rid ON idx_token (pid, code, rid, system);
CREATE INDEX IF NOT EXISTS idx_token_text ON idx_token (pid, text) WHERE text IS NOT NULL;
CREATE TABLE IF NOT EXISTS idx_string (rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                                       norm TEXT NOT NULL, exact TEXT NOT NULL, PRIMARY KEY (rid, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_string_norm ON idx_string (pid, norm);
CREATE TABLE IF NOT EXISTS idx_ref (rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, target_type TEXT,
                                    target_id TEXT, url TEXT, PRIMARY KEY (rid, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_ref_target ON idx_ref (pid, target_id, target_type);
CREATE INDEX IF NOT EXISTS idx_ref_url ON idx_ref (pid, url) WHERE url IS NOT NULL;
CREATE TABLE IF NOT EXISTS idx_date (rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                                     low INTEGER NOT NULL, high INTEGER NOT NULL, PRIMARY KEY (rid, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_date_low ON idx_date (pid, low, high);
CREATE TABLE IF NOT EXISTS idx_number (rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                                       value REAL NOT NULL, PRIMARY KEY (rid, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_number_value ON idx_number (pid, value);
CREATE TABLE IF NOT EXISTS idx_quantity (rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, system INTEGER,
                                         code TEXT, value REAL NOT NULL, PRIMARY KEY (rid, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_quantity_value ON idx_quantity (pid, value);
CREATE TABLE IF NOT EXISTS idx_uri (rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                                    value TEXT NOT NULL, PRIMARY KEY (rid, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_uri_value ON idx_uri (pid, value);
CREATE TABLE IF NOT EXISTS idx_composite (rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                                          s1 INTEGER, c1 TEXT, s2 INTEGER, c2 TEXT, lo REAL, hi REAL,
                                          PRIMARY KEY (rid, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_composite_codes ON idx_composite (pid, c1, c2);
CREATE TABLE IF NOT EXISTS compartment (rid INTEGER NOT NULL, patient TEXT NOT NULL, PRIMARY KEY (rid, patient))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS compartment_patient ON compartment (patient, rid);
"""

LAYOUT = 2  # PRAGMA user_version of this layout; layout 1 kept two copies of each body and an outbox table

INDEX_TABLES = ("idx_token", "idx_string", "idx_ref", "idx_date", "idx_number", "idx_quantity", "idx_uri",
                "idx_composite", "compartment")
