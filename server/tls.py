"""TLS in the server itself (`serve --tls-cert --tls-key`, uvicorn's TLS) and HSTS on every answer when it is on.

https://www.uvicorn.org/settings/#https, https://www.rfc-editor.org/rfc/rfc6797
"""

from __future__ import annotations

from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def check_tls(cert: str | None, key: str | None) -> bool:
    """Whether TLS is on; SystemExit when only one of the files is given or one cannot be read."""
    if cert is None and key is None:
        return False
    if cert is None or key is None:
        raise SystemExit("TLS needs both CARELOOP_TLS_CERT (--tls-cert) and CARELOOP_TLS_KEY (--tls-key)")
    for name, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise SystemExit(f"TLS {name} {path} is not a readable file")
    return True


class HstsMiddleware:
    """Adds Strict-Transport-Security to every HTTP answer (only installed when the server speaks TLS)."""

    def __init__(self, app: ASGIApp, seconds: int) -> None:
        self.app = app
        self.header = (b"strict-transport-security", f"max-age={seconds}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, sending)
