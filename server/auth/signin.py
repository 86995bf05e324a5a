"""Password sign-in at the authorize page: the hash off the event loop, the same work for unknown users, and
per-user and per-address throttling kept in the auth store (so a restart does not forget it).

https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-authorization-code,
https://www.rfc-editor.org/rfc/rfc6585#section-4, https://pages.nist.gov/800-63-3/sp800-63b.html#throttle
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from server.auth.store import AuthStore, UserRecord, check_password, hash_password
from server.settings import Settings

# scrypt takes ~16 MiB and tens of ms a check: a pool of its own bounds both, and keeps a storm of attempts
# from taking the threads other requests need
_HASHING = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="careloop-password")
PERMANENT_LOCK_HINT = 86400


class Throttled(Exception):
    """Sign-in refused for now: too many failures for the user name or from the address."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed sign-ins")
        self.retry_after = max(1, math.ceil(retry_after))


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _verify(password: str, found: UserRecord | None) -> bool:
    # an unknown user costs one hash too, so the answer's timing does not tell whether the user exists
    if found is None:
        check_password(password, _dummy_hash())
        return False
    return check_password(password, found.password_hash)


def _lock_wait(locked_at: float | None, settings: Settings) -> float | None:
    if locked_at is None:
        return None
    if settings.signin_lock_seconds <= 0:
        return PERMANENT_LOCK_HINT
    left = locked_at + settings.signin_lock_seconds - time.time()
    return left if left > 0 else None


def is_locked(locked_at: float | None, settings: Settings) -> bool:
    """True while a lock taken at `locked_at` holds."""
    return _lock_wait(locked_at, settings) is not None


def _address_wait(failures: int, since: float, settings: Settings) -> float | None:
    if failures < settings.signin_address_failures:
        return None
    return since + settings.signin_address_window_seconds - time.time()


async def check_credentials(store: AuthStore, settings: Settings, username: str, password: str,
                            address: str) -> UserRecord | None:
    """The user when the password is right; None when wrong; Throttled when the name or address is held back."""
    wait = _address_wait(*store.address_failures(address, settings.signin_address_window_seconds), settings)
    wait = wait or _lock_wait(store.signin_lock(username), settings)
    if wait is not None:
        raise Throttled(wait)
    found = store.user(username)
    if await asyncio.get_running_loop().run_in_executor(_HASHING, _verify, password, found):
        store.clear_signin_failures(username)
        return found
    locked_at, failures, since = store.count_signin_failure(
        username, address, settings.signin_address_window_seconds, settings.signin_user_failures,
        settings.signin_lock_seconds)
    wait = _address_wait(failures, since, settings) or _lock_wait(locked_at, settings)
    if wait is not None:
        raise Throttled(wait)
    return None
