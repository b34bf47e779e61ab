"""What the command process prepares for a daemon before anything forks.

Everything that can fail for a reason the user must see is checked here, in the command
process, where the failure is still one line on the terminal: the user and group, the working
directory, the syslog socket, the service's ``configure()``, the log file. ``restart`` runs it
before stopping the old daemon, so a typo leaves the old daemon running.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import stat
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DaemonkitError
from .exitcodes import Exit
from .listen import ListenAddress, address_of, from_systemd, parse_address
from .logsetup import LogTarget
from .paths import (
    control_path_for,
    ensure_private_runtime_dir,
    exit_record_path_for,
    successor_control_path_for,
)
from .privileges import Identity, resolve_identity

if TYPE_CHECKING:
    from .daemon import Daemon


@dataclass
class Launch:
    """What the command process prepared for the daemon (resolved paths, opened files)."""

    name: str
    pidfile_path: str
    control_path: str
    exit_record_path: str
    log: LogTarget
    identity: Identity | None
    #: the options as ``configure()`` resolved them: ``status`` reports them, ``restart``
    #: compares its own with the running daemon's
    options: dict[str, Any]
    #: where the service listens, in its declared order
    listen: list[ListenAddress] = field(default_factory=list)
    #: listening sockets already open (systemd's, or the replaced daemon's), by address key;
    #: the rest of ``listen`` the daemon binds
    sockets: dict[str, socket.socket] = field(default_factory=dict)
    #: started by a handover ``restart``: serve beside the running daemon until it is gone
    #: and the pidfile's lock is handed over (``take-over``)
    successor: bool = False

    @property
    def own_control_path(self) -> str:
        """Where this daemon's control socket is bound first."""
        return successor_control_path_for(self.pidfile_path) if self.successor else (
            self.control_path)

    def passed_sockets(self) -> list[socket.socket]:
        return list(self.sockets.values())


def prepare_launch(daemon: Daemon) -> Launch:
    """Check and open what the daemon will need; raises DaemonkitError with its exit code."""
    options = daemon.options
    identity = resolve_identity(options.user, options.group)
    if not os.path.isdir(options.workdir):
        raise ConfigError(f"working directory {options.workdir} does not exist")
    if options.syslog and not is_socket(options.syslog_socket):
        raise ConfigError(f"--syslog: no syslog socket at {options.syslog_socket}")
    resolved = configured_options(daemon)
    listen = [parse_address(text) for text in options.listen]
    keys = [address.key for address in listen]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--listen names the same address twice: {' '.join(keys)}")
    names = [address.name for address in listen if address.name]
    if len(set(names)) != len(names):
        raise ConfigError(f"--listen gives two addresses the same name: {' '.join(names)}")
    ensure_private_runtime_dir(options.pidfile)
    log = LogTarget(options.log_file, options.log_level,
                    options.syslog_socket if options.syslog else None,
                    service_uid=identity.uid if identity is not None else None)
    try:
        log.open_file()
    except OSError as exc:
        why = {errno.ELOOP: "is a symbolic link (refused)",
               errno.EINVAL: "is not a regular file (refused)"}.get(exc.errno or 0, exc.strerror)
        error = DaemonkitError(f"cannot open log file {options.log_file}: {why}")
        if isinstance(exc, PermissionError):
            error.exit_code = Exit.NO_PRIVILEGE
        raise error from exc
    return Launch(
        name=options.name,
        pidfile_path=options.pidfile,
        control_path=control_path_for(options.pidfile),
        exit_record_path=exit_record_path_for(options.pidfile),
        log=log,
        identity=identity,
        options=resolved,
        listen=listen,
        sockets=_socket_activation(options.name, listen),
    )


def _socket_activation(name: str, listen: list[ListenAddress]) -> dict[str, socket.socket]:
    """systemd's sockets, if it started this very process from a ``.socket`` unit (then
    ``LISTEN_PID`` is ours: the command process of a ``Type=forking`` unit, or the process of
    ``run``); the daemon inherits them. Without declared addresses, every passed socket is
    taken, in systemd's order."""
    passed = from_systemd()
    if passed is None:
        return {}
    if not listen:
        return {f"fd:{position}": sock for position, (_name, sock) in enumerate(passed)}
    by_name = {name: sock for name, sock in passed if name}
    matched: dict[str, socket.socket] = {}
    for position, address in enumerate(listen):
        if address.name is not None and address.name in by_name:
            matched[address.key] = by_name[address.name]
        elif position < len(passed):
            matched[address.key] = passed[position][1]
        else:
            raise ConfigError(f"systemd passed {len(passed)} sockets; {address} is number "
                              f"{position + 1} of the declared addresses")
    for _name, sock in passed:
        if all(sock is not chosen for chosen in matched.values()):
            sock.close()  # passed, but declared by nobody: not ours to keep open
    for key, sock in matched.items():
        actual = address_of(sock)
        if actual != key:  # the .socket unit and --listen drifted apart: say so, use systemd's
            print(f"{name}: note: systemd passed a socket on {actual} for --listen {key}; "
                  "serving where systemd listens", file=sys.stderr, flush=True)
    return matched


def configured_options(daemon: Daemon) -> dict[str, Any]:
    """The service's ``configure()``, then the options as it resolved them."""
    daemon.configure()
    return comparable_options(daemon.options)


def comparable_options(options: argparse.Namespace) -> dict[str, Any]:
    """The options as plain values that mean the same in two processes.

    Taken after ``configure()``, which resolves relative paths against the caller's
    directory: ``--config app.json`` run from two directories is two different files. A value
    that is not plain data is kept only through its ``redacted()`` (a database URL without its
    password); anything else (an object's ``str`` may show a memory address) is left out.
    """
    plain: dict[str, Any] = {}
    for key, given in vars(options).items():
        if key in ("action", "json") or key.startswith("_daemonkit"):
            continue
        redacted = getattr(given, "redacted", None)
        if key == "umask" and isinstance(given, int):
            shown: Any = f"{given:03o}"
        elif callable(redacted):
            shown = redacted()
        else:
            shown = given
        try:
            plain[key] = json.loads(json.dumps(shown, allow_nan=False))
        except (TypeError, ValueError):
            continue
    return plain


def is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
