"""Command line: `python -m server serve`, and the clients and users of the authorization server.

https://www.uvicorn.org/settings/, https://hl7.org/fhir/smart-app-launch/
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn

from consent.retention import RetentionError, export_expired, purge_expired
from resources.errors import FhirError
from resources.models import resource_types
from resources.repository import Repository
from server import backup as server_backup
from server.app import build_services, create_app
from server.auth.purposes import DEFAULT
from server.auth.service import AuthService, auth_path, check_organization
from server.auth.signin import is_locked
from server.auth.store import CLIENT_KINDS, ROLES, ClientRecord
from server.logging_json import configure as configure_logging
from server.portcheck import port_in_use
from server.settings import Settings, settings_help

DEV_CLIENT = "careloop-dev"
PROG = "careloop"  # the console script (pyproject [project.scripts]); `python -m server` runs the same


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)),
                                   ("sqlite_path", getattr(args, "db", None)),
                                   ("tls_cert", getattr(args, "tls_cert", None)),
                                   ("tls_key", getattr(args, "tls_key", None))) if v}
    return Settings(**overrides)  # type: ignore[arg-type]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _credentials_note(client_id: str, secret: str, base: str) -> str:
    return f"""  client_id:     {client_id}
  client_secret: {secret}
Get a token and read /fhir/Patient:
  TOKEN=$(curl -s -u '{client_id}:{secret}' -d grant_type=client_credentials \\
    -d 'scope=system/*.cruds' {base}/auth/token \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -H "Authorization: Bearer $TOKEN" {base}/fhir/Patient
"""


def _dev_client(settings: Settings) -> None:
    """On the first start with authorization on, a development client; on every start, where credentials are."""
    base = f"http://{settings.host}:{settings.port}"
    auth = AuthService.open(settings, frozenset(resource_types()))
    try:
        if auth.store.clients():
            dev = auth.store.client(DEV_CLIENT)
            # the secret is never stored, only its digest: say where it was shown and how to get a new one
            _out(f"Credentials: clients live in {auth_path(settings)} (`{PROG} clients list`). "
                 + (f"The development client {DEV_CLIENT}'s secret was printed on the first start; "
                    f"`{PROG} clients reset-secret {DEV_CLIENT}` prints a new one." if dev else
                    f"There is no development client; `{PROG} clients reset-secret {DEV_CLIENT}` creates it "
                    f"again, `{PROG} clients add` registers others."))
            return
        record, secret = _add_dev_client(auth)
    finally:
        auth.close()
    _out(f"""
A development client was created (its secret is shown only now; `{PROG} clients reset-secret {DEV_CLIENT}` prints
a new one, `{PROG} clients list` lists clients):
{_credentials_note(record.client_id, secret, base)}""")


def _add_dev_client(auth: AuthService) -> tuple[ClientRecord, str]:
    # the clinic's own development client acts as its EHR (--ehr): it may write device readings for any patient
    record, secret = auth.add_client("CareLoop development client", "confidential-symmetric", "system/*.cruds", [],
                                     client_id=DEV_CLIENT, ehr=True)
    assert secret is not None
    return record, secret


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    busy = port_in_use(settings.host, settings.port)
    if busy:  # before the seconds of start-up that would end in uvicorn's "address already in use"
        sys.stderr.write(f"error: {busy}\n")
        return 1
    configure_logging(settings.log_level, settings.log_format)
    # with JSON logs stdout is the log: every line of it must be a JSON object
    say = _out if settings.log_format == "text" else logging.getLogger("careloop").warning
    say(f"CareLoop: FHIR R4B at {'https' if settings.tls_cert else 'http'}://{settings.host}:{settings.port}/fhir "
        f"(store: {settings.store}, file: {settings.sqlite_path})")
    if settings.auth == "off":
        say("WARNING: CARELOOP_AUTH=off -- no access tokens are checked. For local development only.")
    else:
        if settings.sqlite_path != ":memory:":
            Path(settings.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        if settings.log_format == "text":  # a secret shown once on a console, never written to a JSON log
            _dev_client(settings)
    # no `Server: uvicorn` header: what software answers is of use to attackers only (response hygiene)
    # with JSON logs uvicorn keeps its hands off logging (its loggers reach the root's JSON handler)
    try:
        app = create_app(settings)
    except ValueError as exc:  # a setting that cannot serve safely, e.g. a plain-http issuer off loopback
        sys.stderr.write(f"error: {exc}\n")
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=False, server_header=False, ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key,
                **({"log_config": None} if settings.log_format == "json" else {}))
    return 0


def _with_auth(args: argparse.Namespace) -> AuthService:
    return AuthService.open(_settings(args), frozenset(resource_types()))


def _clients_add(args: argparse.Namespace) -> int:
    jwks: dict[str, Any] | None = json.loads(Path(args.jwks).read_text()) if args.jwks else None
    auth = _with_auth(args)
    try:
        record, secret = auth.add_client(args.name, args.type, args.scope, args.redirect_uri or [], jwks,
                                         args.jwks_url, args.id, args.resource_server, args.ehr,
                                         purposes=tuple(args.purpose or DEFAULT), organization=args.organization,
                                         audit_source=args.audit_source, break_glass=args.break_glass)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    finally:
        auth.close()
    result = {**record.summary(), **({"client_secret": secret} if secret else {})}
    _out(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def _clients_list(args: argparse.Namespace) -> int:
    auth = _with_auth(args)
    try:
        found = [c.summary() for c in auth.store.clients()]
    finally:
        auth.close()
    if args.json:
        _out(json.dumps(found))
    else:
        for client in found:
            roles = "".join(f"  {role}" for role, on in (
                ("resource-server", client["resource_server"]), ("ehr", client["ehr"]),
                ("audit-source", client["audit_source"]), ("break-glass", client["break_glass"])) if on)
            organization = f"  organization={client['organization']}" if client["organization"] else ""
            _out(f"{client['client_id']}  {client['type']}{roles}  {client['name']}  scope={client['scope']}  "
                 f"purposes={','.join(client['purposes'])}{organization}")
    return 0


def _clients_reset_secret(args: argparse.Namespace) -> int:
    settings = _settings(args)
    auth = _with_auth(args)
    try:
        if args.client_id == DEV_CLIENT and auth.store.client(DEV_CLIENT) is None:
            record, secret = _add_dev_client(auth)  # removed: the reset brings it back
        else:
            secret = auth.reset_secret(args.client_id)
            record = auth.store.client(args.client_id)  # type: ignore[assignment]
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    finally:
        auth.close()
    if args.json:
        _out(json.dumps({"client_id": record.client_id, "client_secret": secret}))
    else:
        _out(f"A new secret for {record.client_id} (shown once; the old one no longer works):\n"
             + _credentials_note(record.client_id, secret, f"http://{settings.host}:{settings.port}"))
    return 0


def _clients_remove(args: argparse.Namespace) -> int:
    auth = _with_auth(args)
    try:
        removed = auth.store.remove_client(args.client_id)
    finally:
        auth.close()
    if not removed:
        sys.stderr.write(f"error: no client {args.client_id}\n")
        return 1
    _out(f"removed {args.client_id}")
    return 0


def _users_add(args: argparse.Namespace) -> int:
    try:
        check_organization(args.organization)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    auth = _with_auth(args)
    try:
        # no --role: the default of the fhirUser's kind (clinician for a Practitioner, none for a Patient)
        auth.store.add_user(args.username, args.password, args.fhir_user, args.name,
                            roles=tuple(dict.fromkeys(args.role)) if args.role else None,
                            organization=args.organization, break_glass=args.break_glass)
        found = auth.store.user(args.username)
    finally:
        auth.close()
    roles = ",".join(found.roles) if found and found.roles else "no roles"
    _out(f"user {args.username} ({args.fhir_user or 'no fhirUser'}; {roles})")
    return 0


def _users_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    auth = _with_auth(args)
    try:
        locks = auth.store.signin_locks()
        users: list[dict[str, Any]] = [{"username": u.username, "fhir_user": u.fhir_user, "name": u.name,
                  "locked": is_locked(locks.get(u.username), settings), "roles": list(u.roles),
                  "organization": u.organization, "break_glass": u.break_glass} for u in auth.store.users()]
    finally:
        auth.close()
    _out(json.dumps(users) if args.json else "\n".join(_user_line(u) for u in users))
    return 0


def _user_line(user: dict[str, Any]) -> str:
    roles = ",".join(user["roles"]) or "-"
    organization = f"  organization={user['organization']}" if user["organization"] else ""
    flags = f"{'  break-glass' if user['break_glass'] else ''}{'  locked' if user['locked'] else ''}"
    return f"{user['username']}  {user['fhir_user']}  roles={roles}{organization}{flags}"


def _users_unlock(args: argparse.Namespace) -> int:
    auth = _with_auth(args)
    try:
        known = auth.store.user(args.username) is not None
        cleared = auth.store.clear_signin_failures(args.username)
    finally:
        auth.close()
    if not known and not cleared:
        sys.stderr.write(f"error: no user {args.username}\n")
        return 1
    _out(f"unlocked {args.username} (failed sign-ins forgotten)")
    return 0


async def _on_audit_store(settings: Settings, work: Callable[[Repository], Awaitable[str]]) -> str:
    # the repository that holds AuditEvents (the FHIR store; one place to change if they move to a store of their own)
    services = build_services(settings)
    await services.repository.store.open()
    trail = services.audit
    if trail is not None:  # AuditEvents live in the audit store, which its recorder opens and closes
        await trail.recorder.open()
    try:
        return await work(services.repository)
    finally:
        if trail is not None:
            await trail.recorder.close()
        await services.repository.store.close()


def _run_audit(settings: Settings, work: Callable[[Repository], Awaitable[str]]) -> int:
    try:
        _out(asyncio.run(_on_audit_store(settings, work)))
    except RetentionError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except FhirError as exc:  # e.g. the database is unreachable
        sys.stderr.write(f"error: {exc.diagnostics}\n")
        return 1
    return 0


def _audit_export(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def work(repository: Repository) -> str:
        done = await export_expired(repository, Path(args.out), settings.audit_retention_days)
        return (f"exported {done.count} audit events recorded before {done.cutoff} to {done.path} "
                f"(manifest {done.manifest.name}, SHA-256 {done.sha256}); nothing was removed")
    return _run_audit(settings, work)


def _audit_purge(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def work(repository: Repository) -> str:
        done = await purge_expired(repository, Path(args.confirm), settings.audit_retention_days)
        gone = f" ({done.already_gone} were removed before)" if done.already_gone else ""
        return f"removed {done.removed} audit events recorded before {done.cutoff}{gone}, as exported to {args.confirm}"
    return _run_audit(settings, work)


def _backup(args: argparse.Namespace) -> int:
    try:
        manifest = server_backup.backup(_settings(args), Path(args.file))
    except server_backup.BackupError as exc:
        _out(f"backup refused: {exc}")
        return 1
    parts = ", ".join(f"{part} ({facts['bytes']} bytes)" for part, facts in manifest["files"].items())
    _out(f"backup written to {args.file}: {parts}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    try:
        manifest = server_backup.restore(Path(args.file), _settings(args))
    except server_backup.BackupError as exc:
        _out(f"restore refused: {exc}")
        return 1
    _out(f"restored the backup of {manifest['made']} ({', '.join(manifest['files'])}) beside {args.db}")
    return 0


def add_backup_commands(commands: Any) -> None:
    """`backup FILE` and `restore FILE --db NEW` (issue 34, item 3)."""
    backup = commands.add_parser("backup", help="copy the store, audit trail and auth files into one archive, "
                                 "consistent while the server runs")
    backup.add_argument("file", help="the archive to write (a new file)")
    backup.add_argument("--db", help="SQLite file of the FHIR store (the audit and auth files sit beside it)")
    backup.set_defaults(run=_backup)
    restore = commands.add_parser("restore", help="unpack an archive into a new data folder")
    restore.add_argument("file", help="an archive `backup` wrote")
    restore.add_argument("--db", required=True, help="the new FHIR store file (must not exist); the audit and "
                         "auth files are put beside it")
    restore.set_defaults(run=_restore)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run a command."""
    parser = argparse.ArgumentParser(prog=PROG, description="CareLoop FHIR R4B server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the FHIR server (settings from CARELOOP_* variables)",
                                description="Start the FHIR server. Every setting comes from an environment "
                                "variable; --host, --port and --db override three of them.",
                                epilog=settings_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", help="interface to listen on (CARELOOP_HOST)")
    serve.add_argument("--port", type=int, help="port (CARELOOP_PORT)")
    serve.add_argument("--db", help="SQLite file (CARELOOP_SQLITE_PATH)")
    serve.add_argument("--tls-cert", help="PEM certificate: serve HTTPS only (CARELOOP_TLS_CERT)")
    serve.add_argument("--tls-key", help="PEM private key of the certificate (CARELOOP_TLS_KEY)")
    serve.set_defaults(run=_serve)

    clients = commands.add_parser("clients", help="OAuth clients of the authorization server")
    client_commands = clients.add_subparsers(dest="action", required=True)
    add = client_commands.add_parser("add", help="register a client")
    add.add_argument("--name", required=True)
    add.add_argument("--type", required=True, choices=CLIENT_KINDS)
    add.add_argument("--scope", required=True, help="the scopes the client may be granted (space separated)")
    add.add_argument("--redirect-uri", action="append", help="an exact redirect URI (repeatable)")
    add.add_argument("--jwks", help="file with the client's public JWKS (asymmetric clients)")
    add.add_argument("--jwks-url", help="URL of the client's JWKS (asymmetric clients)")
    add.add_argument("--id", help="client id (default: a new UUID)")
    add.add_argument("--resource-server", action="store_true",
                     help="a resource server: may introspect every token, not only its own (confidential clients)")
    add.add_argument("--ehr", action="store_true", help="an EHR: its system/ token may register launch contexts "
                     "(POST /auth/launch)")
    add.add_argument("--purpose", action="append", metavar="CODE",
                     help="a v3-ActReason purpose of use the client may ask for with __pou/CODE and gets when it "
                          "asks for none (repeatable; default: TREAT)")
    add.add_argument("--organization", help="the Organization the client acts for (Organization/<id>)")
    add.add_argument("--audit-source", action="store_true", help="the client may submit AuditEvents of its own")
    add.add_argument("--break-glass", action="store_true",
                     help="the client may ask for break-glass access (__pou/BTG, with a btg_reason)")
    add.add_argument("--json", action="store_true", help="print JSON (client_id, client_secret when there is one)")
    add.set_defaults(run=_clients_add)
    listing = client_commands.add_parser("list", help="list clients")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_clients_list)
    remove = client_commands.add_parser("remove", help="remove a client")
    remove.add_argument("client_id")
    remove.set_defaults(run=_clients_remove)
    reset = client_commands.add_parser("reset-secret", help="give a confidential-symmetric client a new secret and "
                                       f"print it once ({DEV_CLIENT}: created again when it was removed)")
    reset.add_argument("client_id")
    reset.add_argument("--json", action="store_true", help="print JSON (client_id, client_secret)")
    reset.set_defaults(run=_clients_reset_secret)

    users = commands.add_parser("users", help="people who sign in at the authorize page")
    user_commands = users.add_subparsers(dest="action", required=True)
    user_add = user_commands.add_parser("add", help="create or replace a user")
    user_add.add_argument("username")
    user_add.add_argument("--password", required=True)
    user_add.add_argument("--fhir-user", help="Patient/ID, Practitioner/ID, ... (the fhirUser claim)")
    user_add.add_argument("--name")
    user_add.add_argument("--role", action="append", choices=ROLES,
                          help="a role (repeatable; default: clinician for a Practitioner or PractitionerRole, "
                               "none for anyone else)")
    user_add.add_argument("--organization", help="the Organization the user works for (Organization/<id>)")
    user_add.add_argument("--break-glass", action="store_true",
                          help="the user may declare break-glass access (__pou/BTG, with a btg_reason)")
    user_add.set_defaults(run=_users_add)
    user_list = user_commands.add_parser("list", help="list users")
    user_list.add_argument("--json", action="store_true")
    user_list.set_defaults(run=_users_list)
    unlock = user_commands.add_parser("unlock", help="lift a sign-in lockout (too many failed sign-ins)")
    unlock.add_argument("username")
    unlock.set_defaults(run=_users_unlock)
    audit = commands.add_parser("audit", help="the audit trail's retention (CARELOOP_AUDIT_RETENTION_DAYS)")
    audit_commands = audit.add_subparsers(dest="action", required=True)
    export = audit_commands.add_parser("export-expired", help="write the AuditEvents older than the retention "
                                       "period to an NDJSON file (and FILE.manifest.json); removes nothing")
    export.add_argument("--out", required=True, help="a new file (never overwritten)")
    export.set_defaults(run=_audit_export)
    purge = audit_commands.add_parser("purge-expired", help="remove exactly the AuditEvents of an export, after "
                                      "checking it is whole and complete against the store")
    purge.add_argument("--confirm", required=True, metavar="FILE", help="the file export-expired wrote")
    purge.set_defaults(run=_audit_purge)
    add_backup_commands(commands)
    for sub in (add, listing, remove, reset, user_add, user_list, unlock, export, purge):
        sub.add_argument("--db", help="SQLite file of the FHIR store (the auth file sits beside it)")
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
