"""Persistent state of the authorization server: signing keys, clients, users, codes, refresh tokens, revocations.

A small SQLite file of its own (authlib calls back synchronously, from worker threads), separate from the
FHIR store: clients and secrets are not FHIR resources. Several instances on one data folder share it (WAL): every
decision that must hold across them (a code redeemed, a refresh token used, an assertion replayed, the first
signing key) is one statement or one transaction, never a read then a write. https://www.rfc-editor.org/rfc/rfc6749
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (kid TEXT PRIMARY KEY, jwk TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS clients (client_id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL,
  secret_hash TEXT, jwks TEXT, jwks_url TEXT, scope TEXT NOT NULL, redirect_uris TEXT NOT NULL, created REAL NOT NULL,
  resource_server INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, fhir_user TEXT,
  name TEXT);
CREATE TABLE IF NOT EXISTS codes (code TEXT PRIMARY KEY, client_id TEXT NOT NULL, data TEXT NOT NULL,
  expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS refresh (token_hash TEXT PRIMARY KEY, family TEXT NOT NULL, client_id TEXT NOT NULL,
  data TEXT NOT NULL, expires REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS refresh_family ON refresh (family);
CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS revoked_families (family TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS assertions (iss TEXT NOT NULL, jti TEXT NOT NULL, expires REAL NOT NULL,
  PRIMARY KEY (iss, jti));
CREATE TABLE IF NOT EXISTS launches (launch TEXT PRIMARY KEY, data TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS redeemed_codes (code TEXT PRIMARY KEY, jti TEXT NOT NULL, family TEXT NOT NULL,
  expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS signin_users (username TEXT PRIMARY KEY, failures INTEGER NOT NULL, locked_at REAL);
CREATE TABLE IF NOT EXISTS signin_addresses (address TEXT PRIMARY KEY, failures INTEGER NOT NULL,
  since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS grants (client_id TEXT NOT NULL, patient TEXT NOT NULL, consent TEXT NOT NULL,
  PRIMARY KEY (client_id, patient));
CREATE TABLE IF NOT EXISTS revoked_grants (consent TEXT PRIMARY KEY, vid INTEGER NOT NULL);
"""
# columns added after the first release: (table, column, definition), added to older files when they open
COLUMNS = (("clients", "resource_server", "INTEGER NOT NULL DEFAULT 0"),
           ("clients", "ehr", "INTEGER NOT NULL DEFAULT 0"),
           ("clients", "purposes", "TEXT"), ("clients", "organization", "TEXT"),
           ("clients", "audit_source", "INTEGER NOT NULL DEFAULT 0"),
           ("clients", "break_glass", "INTEGER NOT NULL DEFAULT 0"),
           ("users", "roles", "TEXT"), ("users", "organization", "TEXT"),
           ("users", "break_glass", "INTEGER NOT NULL DEFAULT 0"))
CLIENT_KINDS = ("public", "confidential-symmetric", "confidential-asymmetric")
ROLES = ("clinician", "trainee", "auditor", "support")
DEFAULT_PURPOSES = ("TREAT",)
_CLIENT_COLUMNS = ("client_id, name, kind, secret_hash, jwks, jwks_url, scope, redirect_uris, resource_server, ehr, "
                   "purposes, organization, audit_source, break_glass")
_USER_COLUMNS = "username, password_hash, fhir_user, name, roles, organization, break_glass"


def digest(secret: str) -> str:
    """SHA-256 of a high-entropy secret (client secrets, refresh tokens)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str, salt: bytes | None = None) -> str:
    """scrypt hash of a user's password, salted."""
    salt = salt or secrets.token_bytes(16)
    derived = hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1)
    return f"{salt.hex()}${derived.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Constant-time comparison of a password with its stored hash."""
    salt, _, expected = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)).partition("$")[2], expected)


@dataclass
class ClientRecord:
    """A registered client."""

    client_id: str
    name: str
    kind: str
    scope: str
    redirect_uris: list[str]
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    resource_server: bool = False  # may introspect every token (RFC 7662 §4)
    ehr: bool = False  # an EHR may register launch contexts with its system/ token; one of the clinic's systems
    purposes: tuple[str, ...] = DEFAULT_PURPOSES  # purposes of use it may ask for, and gets when it names none
    organization: str | None = None  # the Organization it acts for ("Organization/x")
    audit_source: bool = False  # may submit AuditEvents of its own
    break_glass: bool = False  # may ask for __pou/BTG

    def summary(self) -> dict[str, Any]:
        """What `clients list` shows."""
        return {"client_id": self.client_id, "name": self.name, "type": self.kind, "scope": self.scope,
                "redirect_uris": self.redirect_uris, "jwks_url": self.jwks_url,
                "jwks": bool(self.jwks), "resource_server": self.resource_server, "ehr": self.ehr,
                "purposes": list(self.purposes), "organization": self.organization,
                "audit_source": self.audit_source, "break_glass": self.break_glass}


@dataclass
class UserRecord:
    """A person who signs in at the authorize page: a practitioner or a patient, with their fhirUser."""

    username: str
    password_hash: str
    fhir_user: str | None
    name: str | None = None
    registered_roles: tuple[str, ...] | None = None  # None: the default of the fhirUser's kind
    organization: str | None = None
    break_glass: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        """The user's roles: as registered, else clinician for a Practitioner(Role) and none for anyone else."""
        if self.registered_roles is not None:
            return self.registered_roles
        return ("clinician",) if (self.fhir_user or "").startswith(("Practitioner/", "PractitionerRole/")) else ()


def _user(row: tuple[Any, ...]) -> UserRecord:
    username, password_hash, fhir_user, name, roles, organization, break_glass = row
    return UserRecord(username, password_hash, fhir_user, name,
                      tuple(orjson.loads(roles)) if roles is not None else None, organization, bool(break_glass))


@dataclass
class AuthStore:
    """Thread-safe access to the authorization server's SQLite file."""

    path: str
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _db: sqlite3.Connection | None = None
    # the revocation check of every request reads on its own connection: it never queues behind a write waiting
    # for another process's lock (WAL readers do not wait for writers)
    _check_lock: threading.Lock = field(default_factory=threading.Lock)
    _check_db: sqlite3.Connection | None = None

    def open(self) -> AuthStore:
        """Open (and create) the file."""
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        for table, column, definition in COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        if self.path != ":memory:":  # a memory database lives on one connection: the checks share it
            self._check_db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        return self

    def close(self) -> None:
        """Close the file."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._check_db is not None:
            self._check_db.close()
            self._check_db = None

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self._db is not None, "AuthStore is not open"
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- keys ----------------------------------------------------------------------------------------
    def signing_keys(self) -> list[dict[str, Any]]:
        """Private JWKs, oldest first."""
        return [orjson.loads(row[0]) for row in self._run("SELECT jwk FROM keys ORDER BY created")]

    def add_signing_key(self, kid: str, jwk: dict[str, Any]) -> None:
        """Keep a new private signing key."""
        self._run("INSERT INTO keys VALUES (?, ?, ?)", (kid, orjson.dumps(jwk).decode(), time.time()))

    def add_first_signing_key(self, kid: str, jwk: dict[str, Any]) -> None:
        """Keep this key only when there is none yet: of instances starting at once on a new folder, one key wins
        and all of them sign with it (the caller reads the keys again)."""
        self._run("INSERT INTO keys SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM keys)",
                  (kid, orjson.dumps(jwk).decode(), time.time()))

    # -- clients -------------------------------------------------------------------------------------
    def add_client(self, record: ClientRecord) -> None:
        """Register a client (its id must be new)."""
        self._run("INSERT INTO clients (client_id, name, kind, secret_hash, jwks, jwks_url, scope, redirect_uris, "
                  "created, resource_server, ehr, purposes, organization, audit_source, break_glass) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                      record.client_id, record.name, record.kind, record.secret_hash,
                      orjson.dumps(record.jwks).decode() if record.jwks else None, record.jwks_url, record.scope,
                      orjson.dumps(record.redirect_uris).decode(), time.time(), int(record.resource_server),
                      int(record.ehr), orjson.dumps(list(record.purposes)).decode(), record.organization,
                      int(record.audit_source), int(record.break_glass)))

    def client(self, client_id: str) -> ClientRecord | None:
        """A client by id."""
        rows = self._run(f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE client_id = ?", (client_id,))
        if not rows:
            return None
        (cid, name, kind, secret_hash, jwks, jwks_url, scope, uris, resource_server, ehr, purposes, organization,
         audit_source, break_glass) = rows[0]
        # a client registered before purposes existed has the default one
        return ClientRecord(cid, name, kind, scope, orjson.loads(uris), secret_hash,
                            orjson.loads(jwks) if jwks else None, jwks_url, bool(resource_server), bool(ehr),
                            tuple(orjson.loads(purposes)) if purposes else DEFAULT_PURPOSES, organization,
                            bool(audit_source), bool(break_glass))

    def clients(self) -> list[ClientRecord]:
        """Every client."""
        ids = [row[0] for row in self._run("SELECT client_id FROM clients ORDER BY created")]
        return [c for c in (self.client(i) for i in ids) if c is not None]

    def set_client_secret(self, client_id: str, secret_hash: str) -> bool:
        """Replace a client's secret digest; False when there is no such client."""
        existed = bool(self._run("SELECT 1 FROM clients WHERE client_id = ?", (client_id,)))
        self._run("UPDATE clients SET secret_hash = ? WHERE client_id = ?", (secret_hash, client_id))
        return existed

    def remove_client(self, client_id: str) -> bool:
        """Remove a client; False when it did not exist."""
        existed = bool(self._run("SELECT 1 FROM clients WHERE client_id = ?", (client_id,)))
        self._run("DELETE FROM clients WHERE client_id = ?", (client_id,))
        return existed

    # -- users ---------------------------------------------------------------------------------------
    def add_user(self, username: str, password: str, fhir_user: str | None, name: str | None = None, *,
                 roles: tuple[str, ...] | None = None, organization: str | None = None,
                 break_glass: bool = False) -> None:
        """Create or replace a user (roles None: the default of the fhirUser's kind)."""
        self._run(f"INSERT OR REPLACE INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (username, hash_password(password), fhir_user, name,
                   orjson.dumps(list(roles)).decode() if roles is not None else None, organization, int(break_glass)))

    def user(self, username: str) -> UserRecord | None:
        """A user by name."""
        rows = self._run(f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username,))
        return _user(rows[0]) if rows else None

    def users(self) -> list[UserRecord]:
        """Every user."""
        return [_user(row) for row in self._run(f"SELECT {_USER_COLUMNS} FROM users")]

    # -- authorization codes, launches -------------------------------------------------------------
    def save_code(self, code: str, client_id: str, data: dict[str, Any], ttl: float) -> None:
        """Keep an authorization code until it is used or expires."""
        self._run("INSERT INTO codes VALUES (?, ?, ?, ?)", (digest(code), client_id, orjson.dumps(data).decode(),
                                                            time.time() + ttl))

    def code(self, code: str, client_id: str) -> dict[str, Any] | None:
        """What a live code issued to this client carries, without redeeming it (an administrator's look)."""
        rows = self._run("SELECT data FROM codes WHERE code = ? AND client_id = ? AND expires > ?",
                         (digest(code), client_id, time.time()))
        return orjson.loads(rows[0][0]) if rows else None

    def redeem_code(self, code: str, client_id: str, jti: str, family: str, keep: float) -> dict[str, Any] | None:
        """Take a live code issued to this client, once, noting the access token and family it is about to issue.

        One transaction deletes the code and records its redemption, so of concurrent requests (threads or
        processes) exactly one gets the code (RFC 6749 §4.1.2). https://www.sqlite.org/lang_returning.html
        """
        hashed, now = digest(code), time.time()
        assert self._db is not None, "AuthStore is not open"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM redeemed_codes WHERE expires < ?", (now,))
                rows = self._db.execute("DELETE FROM codes WHERE code = ? AND client_id = ? RETURNING data, expires",
                                        (hashed, client_id)).fetchall()
                if rows and rows[0][1] > now:  # an expired code is only removed: it issues nothing
                    self._db.execute("INSERT OR REPLACE INTO redeemed_codes VALUES (?, ?, ?, ?)",
                                     (hashed, jti, family, now + keep))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if not rows or rows[0][1] <= now:
            return None
        found: dict[str, Any] = orjson.loads(rows[0][0])
        return found

    def redeemed_code(self, code: str) -> tuple[str, str] | None:
        """(access token jti, refresh family) of a code redeemed recently."""
        rows = self._run("SELECT jti, family FROM redeemed_codes WHERE code = ? AND expires > ?",
                         (digest(code), time.time()))
        return (rows[0][0], rows[0][1]) if rows else None

    def save_launch(self, launch: str, data: dict[str, Any], ttl: float) -> None:
        """An EHR launch context (patient, encounter) for a `launch` parameter."""
        self._run("INSERT INTO launches VALUES (?, ?, ?)", (launch, orjson.dumps(data).decode(), time.time() + ttl))

    def launch(self, launch: str) -> dict[str, Any] | None:
        """A live launch context that was not used yet."""
        rows = self._run("SELECT data FROM launches WHERE launch = ? AND expires > ?", (launch, time.time()))
        return orjson.loads(rows[0][0]) if rows else None

    def use_launch(self, launch: str) -> dict[str, Any] | None:
        """Take a live launch context for good; None when it expired or was taken (one statement: no race)."""
        rows = self._run("DELETE FROM launches WHERE launch = ? AND expires > ? RETURNING data", (launch, time.time()))
        return orjson.loads(rows[0][0]) if rows else None

    # -- failed sign-ins -----------------------------------------------------------------------------
    def signin_lock(self, username: str) -> float | None:
        """When this user name was locked, None when it is not."""
        rows = self._run("SELECT locked_at FROM signin_users WHERE username = ?", (username,))
        return rows[0][0] if rows else None

    def signin_locks(self) -> dict[str, float]:
        """Every locked user name with when it was locked."""
        return dict(self._run("SELECT username, locked_at FROM signin_users WHERE locked_at IS NOT NULL"))

    def address_failures(self, address: str, window: float) -> tuple[int, float]:
        """Failed sign-ins from an address in its current window, and when that window began."""
        rows = self._run("SELECT failures, since FROM signin_addresses WHERE address = ? AND since > ?",
                         (address, time.time() - window))
        return (int(rows[0][0]), float(rows[0][1])) if rows else (0, 0.0)

    def count_signin_failure(self, username: str, address: str, window: float, lock_after: int,
                             lock_seconds: float) -> tuple[float | None, int, float]:
        """Count a failed sign-in; (when the user name is locked or None, the address's failures, its window)."""
        now = time.time()
        if lock_seconds > 0:  # a lock that ran out starts the count again
            self._run("DELETE FROM signin_users WHERE username = ? AND locked_at <= ?", (username, now - lock_seconds))
        # one upsert each: concurrent failures are all counted
        locked_at = self._run(
            "INSERT INTO signin_users VALUES (?, 1, ?) ON CONFLICT (username) DO UPDATE SET failures = failures + 1, "
            "locked_at = CASE WHEN locked_at IS NULL AND failures + 1 >= ? THEN ? ELSE locked_at END "
            "RETURNING locked_at", (username, now if lock_after <= 1 else None, lock_after, now))[0][0]
        failures, since = self._run(
            "INSERT INTO signin_addresses VALUES (?, 1, ?) ON CONFLICT (address) DO UPDATE SET "
            "failures = CASE WHEN since <= ? THEN 1 ELSE failures + 1 END, "
            "since = CASE WHEN since <= ? THEN ? ELSE since END RETURNING failures, since",
            (address, now, now - window, now - window, now))[0]
        return locked_at, int(failures), float(since)

    def clear_signin_failures(self, username: str) -> bool:
        """Forget a user name's failures and lock (a successful sign-in, or an administrator); False when none."""
        return bool(self._run("DELETE FROM signin_users WHERE username = ? RETURNING username", (username,)))

    # -- refresh tokens and revocation ---------------------------------------------------------------
    def save_refresh(self, token: str, family: str, client_id: str, data: dict[str, Any], ttl: float) -> None:
        """Keep a refresh token (hashed) in its family."""
        self._run("INSERT INTO refresh VALUES (?, ?, ?, ?, ?, 0)", (digest(token), family, client_id,
                                                                    orjson.dumps(data).decode(), time.time() + ttl))

    def refresh(self, token: str) -> tuple[str, str, dict[str, Any], bool] | None:
        """(family, client_id, data, used) of a live refresh token of a family that is not revoked."""
        rows = self._run("SELECT family, client_id, data, used FROM refresh WHERE token_hash = ? AND expires > ? "
                         "AND family NOT IN (SELECT family FROM revoked_families)", (digest(token), time.time()))
        if not rows:
            return None
        family, client_id, data, used = rows[0]
        return family, client_id, orjson.loads(data), bool(used)

    def mark_refresh_used(self, token: str) -> None:
        """A refresh token is used once (rotation)."""
        self._run("UPDATE refresh SET used = 1 WHERE token_hash = ?", (digest(token),))

    def use_refresh(self, token: str) -> bool:
        """Take a refresh token for its one use; False when it was used already, here or by another instance (one
        statement, so of concurrent refreshes with the same token exactly one gets it)."""
        return bool(self._run("UPDATE refresh SET used = 1 WHERE token_hash = ? AND used = 0 RETURNING 1",
                              (digest(token),)))

    def revoke_family(self, family: str) -> None:
        """Revoke every refresh token of a family (reuse detected, or revocation)."""
        self._run("INSERT OR IGNORE INTO revoked_families VALUES (?, ?)", (family, time.time() + 90 * 86400))

    def family_revoked(self, family: str) -> bool:
        """True when the family was revoked."""
        return bool(self._run("SELECT 1 FROM revoked_families WHERE family = ?", (family,)))

    def revoked_family_ids(self) -> set[str]:
        """Revoked refresh-token families (their access tokens are refused too)."""
        return {row[0] for row in self._run("SELECT family FROM revoked_families WHERE expires > ?", (time.time(),))}

    def revoke_jti(self, jti: str, expires: float) -> None:
        """Revoke one access token until it would have expired anyway."""
        self._run("INSERT OR IGNORE INTO revoked VALUES (?, ?)", (jti, expires))

    def is_revoked(self, jti: str, family: str | None) -> bool:
        """Whether this access token or its refresh family is revoked now (by any instance): two key look-ups."""
        sql = ("SELECT EXISTS (SELECT 1 FROM revoked WHERE jti = ?) OR EXISTS (SELECT 1 FROM revoked_families "
               "WHERE family = ?)")
        if self._check_db is None:
            return bool(self._run(sql, (jti, family or ""))[0][0])
        with self._check_lock:
            return bool(self._check_db.execute(sql, (jti, family or "")).fetchone()[0])

    def data_version(self) -> int | None:
        """SQLite's `data_version` on the check connection: it changes whenever any other connection, of this
        process or another instance, commits to the file; None for a memory database (one connection).
        https://www.sqlite.org/pragma.html#pragma_data_version
        """
        if self._check_db is None:
            return None
        with self._check_lock:
            return int(self._check_db.execute("PRAGMA data_version").fetchone()[0])

    def revoked_jtis(self) -> set[str]:
        """Revoked access tokens that have not expired."""
        return {row[0] for row in self._run("SELECT jti FROM revoked WHERE expires > ?", (time.time(),))}

    # -- SMART grants recorded as Consents ------------------------------------------------------------
    def grant_consent(self, client_id: str, patient: str) -> str | None:
        """The id of the Consent recording this patient's grant to this client, if one was recorded."""
        rows = self._run("SELECT consent FROM grants WHERE client_id = ? AND patient = ?", (client_id, patient))
        return str(rows[0][0]) if rows else None

    def keep_grant_consent(self, client_id: str, patient: str, consent: str) -> None:
        """Remember which Consent records this patient's grant to this client."""
        self._run("INSERT OR REPLACE INTO grants VALUES (?, ?, ?)", (client_id, patient, consent))

    def revoke_grant_version(self, consent: str, vid: int) -> None:
        """The grant's Consent became inactive or was deleted at version `vid`: tokens of earlier versions stop."""
        self._run("INSERT INTO revoked_grants VALUES (?, ?) ON CONFLICT (consent) DO UPDATE SET "
                  "vid = MAX(vid, excluded.vid)", (consent, vid))

    def revoked_grants(self) -> dict[str, int]:
        """Consent id -> the latest version that revoked it."""
        return {str(consent): int(vid) for consent, vid in self._run("SELECT consent, vid FROM revoked_grants")}

    def use_assertion(self, iss: str, jti: str, expires: float) -> bool:
        """Record a client assertion's jti; False when this issuer used it before (replay)."""
        self._run("DELETE FROM assertions WHERE expires < ?", (time.time() - 600,))
        # one statement: the same assertion at two instances at once is taken by one (not a unique-key error)
        return bool(self._run("INSERT INTO assertions VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                              (iss, jti, expires)))
