"""SQLite schema of the embedded store: current resources, versions, outbox and typed index tables.

https://www.sqlite.org/wal.html
"""

from __future__ import annotations

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA cache_size=-131072",
    "PRAGMA wal_autocheckpoint=10000",
    "PRAGMA temp_store=MEMORY",
)

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
CREATE TABLE IF NOT EXISTS version (
    seq INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    vid INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    method TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    body BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS version_instance ON version (type, id, vid);
CREATE INDEX IF NOT EXISTS version_type ON version (type, seq);
CREATE INDEX IF NOT EXISTS version_updated ON version (updated);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    version_seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    vid INTEGER NOT NULL,
    action TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sp (
    pid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    code TEXT NOT NULL,
    UNIQUE (type, code)
);
CREATE TABLE IF NOT EXISTS idx_token (pid INTEGER NOT NULL, system TEXT, code TEXT, text TEXT,
                                      rid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_token_code ON idx_token (pid, code, system);
CREATE INDEX IF NOT EXISTS idx_token_text ON idx_token (pid, text) WHERE text IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_token_rid ON idx_token (rid);
CREATE TABLE IF NOT EXISTS idx_string (pid INTEGER NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL,
                                       rid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_string_norm ON idx_string (pid, norm);
CREATE INDEX IF NOT EXISTS idx_string_rid ON idx_string (rid);
CREATE TABLE IF NOT EXISTS idx_ref (pid INTEGER NOT NULL, target_type TEXT, target_id TEXT, url TEXT,
                                    rid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_ref_target ON idx_ref (pid, target_id, target_type);
CREATE INDEX IF NOT EXISTS idx_ref_url ON idx_ref (pid, url) WHERE url IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_ref_rid ON idx_ref (rid);
CREATE TABLE IF NOT EXISTS idx_date (pid INTEGER NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL,
                                     rid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_date_low ON idx_date (pid, low, high);
CREATE INDEX IF NOT EXISTS idx_date_rid ON idx_date (rid);
CREATE TABLE IF NOT EXISTS idx_number (pid INTEGER NOT NULL, value REAL NOT NULL, rid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_number_value ON idx_number (pid, value);
CREATE INDEX IF NOT EXISTS idx_number_rid ON idx_number (rid);
CREATE TABLE IF NOT EXISTS idx_quantity (pid INTEGER NOT NULL, system TEXT, code TEXT, value REAL NOT NULL,
                                         rid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_quantity_value ON idx_quantity (pid, value);
CREATE INDEX IF NOT EXISTS idx_quantity_rid ON idx_quantity (rid);
CREATE TABLE IF NOT EXISTS idx_uri (pid INTEGER NOT NULL, value TEXT NOT NULL, rid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_uri_value ON idx_uri (pid, value);
CREATE INDEX IF NOT EXISTS idx_uri_rid ON idx_uri (rid);
CREATE TABLE IF NOT EXISTS compartment (patient TEXT NOT NULL, rid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS compartment_patient ON compartment (patient, rid);
CREATE INDEX IF NOT EXISTS compartment_rid ON compartment (rid);
"""

INDEX_TABLES = ("idx_token", "idx_string", "idx_ref", "idx_date", "idx_number", "idx_quantity", "idx_uri",
                "compartment")
