"""Command line: `python -m server serve` starts the server on the configured store.

https://www.uvicorn.org/settings/
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from server.app import create_app
from server.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("sqlite_path", args.db)) if v}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.stdout.write(f"CareLoop: FHIR R4B at http://{settings.host}:{settings.port}/fhir "
          f"(store: {settings.store}, file: {settings.sqlite_path})\n")
    sys.stdout.flush()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run a command."""
    parser = argparse.ArgumentParser(prog="python -m server", description="CareLoop FHIR R4B server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the FHIR server (settings from CARELOOP_* variables)")
    serve.add_argument("--host", help="interface to listen on (CARELOOP_HOST)")
    serve.add_argument("--port", type=int, help="port (CARELOOP_PORT)")
    serve.add_argument("--db", help="SQLite file (CARELOOP_SQLITE_PATH)")
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
