"""Which URLs the authorization server accepts as redirect URIs and as its own issuer: TLS unless on loopback.

An authorization code or token sent over plain HTTP to another machine can be read on the way; OAuth 2.0 allows
plain `http` only for loopback redirects of native apps and requires TLS everywhere else.
https://www.rfc-editor.org/rfc/rfc9700#section-4.1.1 and https://www.rfc-editor.org/rfc/rfc8252#section-7.3
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# schemes that run code or read local files in a browser: never a place to send a code
_FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "blob", "about", "ftp", "ws", "wss"})


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (the host part of a URL, brackets removed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_uri_problem(uri: str) -> str | None:
    """Why `uri` cannot be a redirect URI, or None when it can (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §4.1)."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
    except ValueError:
        return f"redirect URI '{uri}' is not a URL"
    scheme = parts.scheme.lower()
    if not scheme:
        return f"redirect URI '{uri}' is not absolute"
    if parts.fragment or uri.endswith("#"):
        return f"redirect URI '{uri}' has a fragment (RFC 6749 §3.1.2)"
    if scheme in _FORBIDDEN_SCHEMES:
        return f"redirect URI '{uri}' uses the scheme {scheme}:, which cannot receive an authorization code"
    if scheme == "https":
        return None if host else f"redirect URI '{uri}' names no host"
    if scheme == "http":
        if not host:
            return f"redirect URI '{uri}' names no host"
        if is_loopback(host):
            return None
        return (f"redirect URI '{uri}' is plain http to a host other than loopback: use https "
                "(http is allowed only for 127.0.0.1, [::1] and localhost, RFC 8252 §7.3)")
    if "." in scheme:  # a native app's private-use scheme in reverse-domain form, e.g. com.example.app:/cb
        return None
    return (f"redirect URI '{uri}' uses the scheme {scheme}:; a native app's own scheme must be a reverse domain "
            "name such as com.example.app (RFC 8252 §7.1)")


def check_redirect_uris(uris: list[str]) -> None:
    """ValueError naming the first redirect URI that cannot be registered."""
    for uri in uris:
        problem = redirect_uri_problem(uri)
        if problem:
            raise ValueError(problem)


def issuer_problem(issuer: str) -> str | None:
    """Why `issuer` cannot be the authorization server's issuer, or None (https, or http on loopback)."""
    parts = urlsplit(issuer)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return None
    return (f"the authorization server's issuer {issuer} is not https: tokens and codes would cross the network "
            "in clear. Serve with --tls-cert/--tls-key, or set CARELOOP_BASE_URL to the https address of the "
            "TLS proxy in front (plain http is allowed only on loopback)")
