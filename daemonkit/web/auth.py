"""Who may read the page and who may act through it.

Three separate questions, each answered from the request's headers alone:

* **Host** (only without credentials): a page open to anyone on loopback is still reachable
  by a hostile web page through DNS rebinding (the attacker's name resolves to 127.0.0.1, so
  the browser treats our page as the attacker's origin). Checking the Host header against
  the names loopback is known by closes that door.
* **Credentials** (when ``token`` or ``password_file`` is set): ``Authorization: Bearer``,
  HTTP Basic (any user name; the password is the token or the password file's secret), or
  the session cookie set by opening ``/?token=...`` once.
* **CSRF** (every POST): the ``X-CSRF-Token`` header must carry the token the page carries
  (a cross-site form cannot set headers, and a cross-site fetch with one is preflighted and
  refused), and a browser's ``Origin``/``Referer``/``Sec-Fetch-Site`` must say same-origin.
  A client that sends none of those three headers is not a browser, hence not a CSRF victim.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from .config import WebConfig

COOKIE = "daemonkit_web"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def host_name(host_header: str) -> str:
    """``"[::1]:7865"`` -> ``"::1"``, ``"Example:80"`` -> ``"example"``."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """The checks for one server; ``session`` is the cookie value, new at every start."""

    def __init__(self, config: WebConfig, csrf_token: str, session: str) -> None:
        self.config = config
        self.csrf_token = csrf_token
        self.session = session
        self._secrets = [s for s in (config.token, config.password) if s is not None]
        self._hosts = {*_LOOPBACK_NAMES, config.host.lower(), *config.allowed_hosts}

    def host_allowed(self, host_header: str | None) -> bool:
        if self.config.requires_auth or host_header is None:
            return True  # credentials stop rebinding; no Host: not a browser
        return host_name(host_header) in self._hosts

    def secret_ok(self, given: str) -> bool:
        return any(_same(given, secret) for secret in self._secrets)

    def authenticated(self, authorization: str | None, cookie_header: str | None) -> bool:
        if not self.config.requires_auth:
            return True
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and self.secret_ok(value.strip()):
                return True
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    return False
                return self.secret_ok(decoded.partition(":")[2])
        if cookie_header:
            try:
                cookie = SimpleCookie(cookie_header)
            except CookieError:
                return False
            morsel = cookie.get(COOKIE)
            return morsel is not None and _same(morsel.value, self.session)
        return False

    def csrf_refusal(self, headers: Mapping[str, str]) -> str | None:
        """Why a POST is refused (None: allowed). ``headers`` keys are lower-case."""
        given = headers.get("x-csrf-token")
        if not given or not _same(given, self.csrf_token):
            return "missing or wrong X-CSRF-Token"
        expected = (headers.get("host") or "").strip().lower()
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
            return f"cross-site request (Sec-Fetch-Site: {fetch_site})"
        origin = headers.get("origin")
        if origin is not None:
            if urlsplit(origin).netloc.lower() != expected:
                return f"cross-origin request (Origin: {origin})"
            return None
        referer = headers.get("referer")
        if referer is not None and urlsplit(referer).netloc.lower() != expected:
            return "cross-origin request (Referer of another site)"
        return None
