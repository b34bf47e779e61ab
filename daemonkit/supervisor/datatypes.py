"""Value parsers for supervisord-style keys: text in, typed value out, ``ValueError`` if bad.

Each parser accepts at least what supervisord's ``supervisor.datatypes`` accepts, with the same
meaning, so a file supervisord runs loads here unchanged (a few accept more: fractional
seconds, a ``B`` size suffix). The message of a ``ValueError`` is the *why* only; the loader
adds file, section and key. Nothing here knows about sections or files.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import re
import shlex
import signal
from dataclasses import dataclass
from typing import Literal

TRUTHY = ("yes", "true", "on", "1")
FALSY = ("no", "false", "off", "0")


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in TRUTHY:
        return True
    if value in FALSY:
        return False
    raise ValueError(f"{text!r} is not true or false")


def integer(text: str, minimum: int | None = None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum}, got {value}")
    return value


def non_negative(text: str) -> int:
    return integer(text, 0)


def priority(text: str) -> int:
    return integer(text)


def seconds(text: str) -> float:
    """supervisord takes whole seconds; fractions are accepted too (``startsecs = 0.2``)."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a number >= 0, got {text.strip()}")
    return value


_SIZE_RE = re.compile(r"^(\d+)\s*(KB|MB|GB|B)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def byte_size(text: str) -> int:
    """``50MB``, ``1024``, ``10kb`` (supervisord's suffixes, any case)."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size like 50MB")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()]


def octal(text: str) -> int:
    try:
        value = int(text.strip(), 8)
    except ValueError:
        raise ValueError(f"{text!r} is not an octal number") from None
    if not 0 <= value <= 0o7777:
        raise ValueError(f"{text!r} is out of range")
    return value


def umask(text: str) -> int:
    value = octal(text)
    if value > 0o777:
        raise ValueError(f"{text!r} is not a umask (000-777)")
    return value


def signal_number(text: str) -> int:
    """``TERM``, ``SIGTERM``, ``15``: any signal the platform has."""
    name = text.strip().upper()
    valid = {int(s) for s in signal.Signals}
    if name.isdigit():
        if int(name) in valid:
            return int(name)
    else:
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            pass
    raise ValueError(f"{text!r} is not a signal name")


def signal_name(number: int) -> str:
    """``-9`` or ``9`` -> ``SIGKILL`` (the EXIT column, supervisord's messages)."""
    try:
        return signal.Signals(abs(number)).name
    except ValueError:
        return f"signal {abs(number)}"


def exitcodes(text: str) -> frozenset[int]:
    try:
        codes = [int(part) for part in text.split(",")] if text.strip() else []
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of exit codes") from None
    for code in codes:
        if not 0 <= code <= 255:
            raise ValueError(f"invalid exit code {code} (0-255)")
    return frozenset(codes)


AutoRestart = Literal["true", "false", "unexpected"]


def autorestart(text: str) -> AutoRestart:
    value = text.strip().lower()
    if value in TRUTHY:
        return "true"
    if value in FALSY:
        return "false"
    if value == "unexpected":
        return "unexpected"
    raise ValueError(f"{text!r} is not true, false or unexpected")


def key_value_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """``KEY="a,b",K2=v``, read exactly as supervisord reads it.

    supervisord tokenizes with a non-POSIX ``shlex`` (``/.+-():`` count as word characters),
    takes ``KEY = VALUE`` triples separated by any one token (normally the comma) and strips
    quotes from the value. Reproducing that, quirks included, is what makes an
    ``environment`` mean the same here: ``A=hello world`` is ``A=hello`` in supervisord.
    """
    lexer = shlex.shlex(text)
    lexer.wordchars += "/.+-():"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise ValueError(f"{text.strip()!r}: {exc}") from None
    pairs: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        triple = tokens[index:index + 3]
        if len(triple) != 3 or triple[1] != "=":
            raise ValueError(f"{text.strip()!r} is not KEY=value,KEY2=value2")
        pairs[triple[0]] = triple[2].strip("'\"")
        index += 4
    return tuple(pairs.items())


def list_of_strings(text: str) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(","))


def process_or_group_name(text: str) -> str:
    """supervisord refuses only space, ``:`` and ``/``; so do we (and control characters)."""
    name = text.strip()
    if not name:
        raise ValueError("a name may not be empty")
    for character in " :/":
        if character in name:
            raise ValueError(f"invalid name {name!r} (character {character!r})")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"invalid name {name!r} (control character)")
    return name


def user(text: str) -> str:
    """A user name or uid that exists (supervisord's ``name_to_uid``)."""
    name = text.strip()
    try:
        if name.isdigit():
            pwd.getpwuid(int(name))
        else:
            pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"no such user {name!r}") from None
    return name


def group(text: str) -> str:
    name = text.strip()
    try:
        if name.isdigit():
            grp.getgrgid(int(name))
        else:
            grp.getgrnam(name)
    except KeyError:
        raise ValueError(f"no such group {name!r}") from None
    return name


def uid_of(name: str) -> int:
    return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid


def gid_of(name: str) -> int:
    return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid


def user_group(text: str) -> tuple[int, int]:
    """``user`` or ``user:group`` -> (uid, gid); gid -1 (unchanged) without a group."""
    user_part, sep, group_part = text.strip().partition(":")
    uid = uid_of(user(user_part))
    gid = gid_of(group(group_part)) if sep else -1
    return uid, gid


def inet_address(text: str) -> tuple[str, int]:
    """``9001``, ``:9001``, ``*:9001``, ``127.0.0.1:9001`` -> (host, port); host '' = all."""
    value = text.strip()
    host = ""
    if ":" in value:
        host, value = value.rsplit(":", 1)
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{text.strip()!r} has no valid port number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (1-65535)")
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return ("" if host == "*" else host), port


@dataclass(frozen=True)
class SocketAddress:
    """An ``[fcgi-program:x] socket``: ``unix:///path`` or ``tcp://host:port``."""

    kind: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def url(self) -> str:
        return f"unix://{self.path}" if self.kind == "unix" else f"tcp://{self.host}:{self.port}"


_TCP_RE = re.compile(r"^tcp://([^\s:]+):(\d+)$")


def socket_url(text: str) -> SocketAddress:
    value = text.strip()
    if value.startswith("unix://"):
        path = value[len("unix://"):]
        if not os.path.isabs(path):
            raise ValueError(f"unix socket path {path!r} is not an absolute path")
        return SocketAddress("unix", path=os.path.normpath(path))
    match = _TCP_RE.match(value)
    if match:
        port = int(match.group(2))
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is out of range (1-65535)")
        return SocketAddress("tcp", host=match.group(1).lower(), port=port)
    raise ValueError(f"{value!r} is not unix:///path or tcp://host:port")


def backlog(text: str) -> int:
    value = integer(text)
    if not 1 <= value <= 65535:
        raise ValueError(f"backlog {value} is out of range (1-65535)")
    return value


#: supervisord's log levels and the Python level each one means
LOG_LEVELS = {"critical": "CRITICAL", "error": "ERROR", "warn": "WARNING", "warning": "WARNING",
              "info": "INFO", "debug": "DEBUG", "trace": "DEBUG", "blather": "DEBUG"}


def log_level(text: str) -> str:
    try:
        return LOG_LEVELS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a log level (critical, error, warn, info, "
                         "debug, trace, blather)") from None


#: where a program stream goes: a file, nowhere, supervisord's AUTO file, or syslog
LogChoice = Literal["AUTO", "NONE", "SYSLOG"]


def logfile(text: str) -> LogChoice | str:
    value = text.strip()
    lowered = value.lower()
    if lowered in ("none", "off"):
        return "NONE"
    if lowered in ("auto", ""):
        return "AUTO"
    if lowered == "syslog":  # deprecated in supervisord 4: *_syslog = true, no file
        return "SYSLOG"
    return value


def url(text: str) -> str:
    value = text.strip()
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme or not rest:
        raise ValueError(f"{value!r} is not a URL")
    return value


def text(value: str) -> str:
    return value


def path(value: str) -> str:
    return value.strip()
