"""The per-request revocation check of scale-out: the in-memory lists alone (one instance) against the lists plus
the look-up in the shared auth file (a revocation at another instance honoured at once), side by side.

Both checks run in one process on one auth file holding `--revoked` revoked tokens and families, interleaved in
rounds (ABAB), so a machine whose speed swings sees both alike; the medians per call are reported with the load
average. One command: `python -m bench.scaleout_revocation`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import record
from server.auth.store import AuthStore
from server.auth.tokens import Signer


def _round(check: object, tokens: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    for jti, family in tokens:
        check(jti, family)  # type: ignore[operator]
    return (time.perf_counter() - started) / len(tokens) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revoked", type=int, default=10_000, help="revoked tokens and families in the file")
    parser.add_argument("--calls", type=int, default=20_000, help="checks per round")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = AuthStore(str(Path(folder) / "auth.db")).open()
        for _ in range(args.revoked):
            store.revoke_jti(secrets.token_urlsafe(16), time.time() + 3600)
            store.revoke_family(secrets.token_urlsafe(16))
        signer = Signer(store)
        signer.is_revoked("warm", None)  # fills the in-memory lists

        def lists_only(jti: str, family: str) -> bool:  # what one instance did before: the lists, re-read each second
            return jti in signer._revoked or family in signer._revoked_families

        tokens = [(secrets.token_urlsafe(16), secrets.token_urlsafe(16)) for _ in range(args.calls)]  # live tokens
        before, after = [], []
        for _ in range(args.rounds):
            before.append(_round(lists_only, tokens))
            after.append(_round(signer.is_revoked, tokens))
        store.close()
    load = os.getloadavg()
    figures: dict[str, object] = {
        "revoked": args.revoked, "rounds": args.rounds, "calls": args.calls,
        "load_average": [round(x, 1) for x in load],
        "lists_only_us": round(statistics.median(before), 2),
        "lists_and_file_us": round(statistics.median(after), 2)}
    record("scaleout_revocation", figures)
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")

if __name__ == "__main__":
    main()
