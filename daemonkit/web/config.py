"""The ``[web]`` section of the supervisor config, validated when the config is loaded.

Safety is decided here, before anything listens: a status page that can stop programs must
not be reachable from the network without credentials (supervisord's inet_http_server
allowed exactly that, CVE-2019-12105). So a non-loopback ``listen`` without ``token`` or
``password_file`` is a config error, reported like every other one: file, section, key, why.

Keys::

    [web]
    listen = 127.0.0.1:7865     ; host:port, [v6]:port; port 0 picks a free port
    token = s3cret              ; Bearer token, or the password of HTTP Basic auth
    password_file = web.pass    ; first line is the password of HTTP Basic auth
    allowed_hosts = a.example   ; extra Host header names accepted without credentials
    log_lines = 200             ; lines the log view shows first
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:7865"
SECTION = "web"
_KEYS = {"listen", "token", "password_file", "allowed_hosts", "log_lines"}
_MIN_SECRET_LEN = 8
_MAX_LOG_LINES = 10_000

#: builds the one-line error naming file, section and key
_ErrorFactory = Callable[[str | None, str], ConfigError]


@dataclass(frozen=True)
class WebConfig:
    """Where the web page listens and which credentials it accepts."""

    host: str
    port: int
    token: str | None = field(default=None, repr=False)
    password_file: str | None = None
    #: read at config load (before any privilege drop), never logged
    password: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    log_lines: int = 200
    source: str = ""

    @property
    def requires_auth(self) -> bool:
        return self.token is not None or self.password is not None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name localhost; an empty host means every address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_web_section(items: dict[str, str], source: str) -> WebConfig:
    """Build a :class:`WebConfig` from the raw ``[web]`` items of ``source``."""

    def error(key: str | None, why: str) -> ConfigError:
        where = f"[{SECTION}] {key}" if key else f"[{SECTION}]"
        return ConfigError(f"{source}: {where}: {why}")

    unknown = sorted(set(items) - _KEYS)
    if unknown:
        raise error(unknown[0], f"unknown key (known: {', '.join(sorted(_KEYS))})")
    host, port = _parse_listen(items.get("listen", DEFAULT_LISTEN).strip(), error)

    token = items.get("token", "").strip() or None
    if token is not None and len(token) < _MIN_SECRET_LEN:
        raise error("token", f"too short: use at least {_MIN_SECRET_LEN} characters")

    password_file: str | None = None
    password: str | None = None
    if items.get("password_file", "").strip():
        here = os.path.dirname(os.path.abspath(source)) if source else os.getcwd()
        password_file = os.path.normpath(os.path.join(here, items["password_file"].strip()))
        password = _read_password(password_file, error)

    if not is_loopback(host) and token is None and password is None:
        raise error("listen", f"{host or '*'}:{port} is not a loopback address: set token "
                              "or password_file, or listen on 127.0.0.1")

    allowed = tuple(h.strip().lower() for h in items.get("allowed_hosts", "").split(",")
                    if h.strip())
    log_lines = _parse_log_lines(items.get("log_lines", "200"), error)
    return WebConfig(host, port, token, password_file, password, allowed, log_lines, source)


def _parse_listen(value: str, error: _ErrorFactory) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise error("listen", f"{value!r}: expected host:port, e.g. {DEFAULT_LISTEN}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise error("listen", f"{value!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise error("listen", f"{value!r}: write IPv6 addresses in brackets, e.g. [::1]:7865")
    if not _is_small_number(port_text) or not 0 <= int(port_text) <= 65535:
        raise error("listen", f"{value!r}: port must be a number from 0 to 65535")
    if host and host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise error("listen", f"{value!r}: host must be an IP address or localhost"
                        ) from None
    return host, int(port_text)


def _read_password(path: str, error: _ErrorFactory) -> str:
    """Read the secret now and insist that only its owner can read it (as ssh does)."""
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            first_line = handle.readline().strip()
    except OSError as exc:
        raise error("password_file", f"{path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error("password_file", f"{path}: readable by others (mode "
                                     f"{stat.S_IMODE(info.st_mode):04o}); chmod 600 it")
    if len(first_line) < _MIN_SECRET_LEN:
        raise error("password_file", f"{path}: the first line must hold a password of at "
                                     f"least {_MIN_SECRET_LEN} characters")
    return first_line


def _parse_log_lines(value: str, error: _ErrorFactory) -> int:
    text = value.strip()
    if not _is_small_number(text) or not 1 <= int(text) <= _MAX_LOG_LINES:
        raise error("log_lines", f"{value!r}: a number from 1 to {_MAX_LOG_LINES}")
    return int(text)


def _is_small_number(text: str) -> bool:
    """ASCII digits only: ``"²".isdigit()`` is True, and ``int("²")`` raises."""
    return text.isascii() and text.isdigit() and len(text) <= 9
