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
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DaemonkitError
from .exitcodes import Exit
from .logsetup import LogTarget
from .paths import control_path_for, ensure_private_runtime_dir, exit_record_path_for
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


def prepare_launch(daemon: Daemon) -> Launch:
    """Check and open what the daemon will need; raises DaemonkitError with its exit code."""
    options = daemon.options
    identity = resolve_identity(options.user, options.group)
    if not os.path.isdir(options.workdir):
        raise ConfigError(f"working directory {options.workdir} does not exist")
    if options.syslog and not is_socket(options.syslog_socket):
        raise ConfigError(f"--syslog: no syslog socket at {options.syslog_socket}")
    resolved = configured_options(daemon)
    ensure_private_runtime_dir(options.pidfile)
    log = LogTarget(options.log_file, options.log_level,
                    options.syslog_socket if options.syslog else None)
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
    )


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
        if key in ("action", "json"):
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
