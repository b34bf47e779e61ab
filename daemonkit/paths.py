"""Where a daemon's files live: the pidfile, and the files named after it.

Everything a daemon leaves on disk sits beside its pidfile and is named after it
(``/run/x.pid`` -> ``/run/x.ctl``, ``/run/x.exit``), so one ``--pidfile`` option places all
of it, and two daemons with different pidfiles never share anything.

Defaults are never a bare world-writable directory: there another user could create the
pidfile first (and then write any pid into it, or unlink it to let a second instance start).
Root uses ``/run``; other users a directory of their own, ``/tmp/daemonkit-UID``, created
mode 0700 and checked as tmux checks ``/tmp/tmux-UID``. Not ``$XDG_RUNTIME_DIR``: a login
shell has it and cron or sudo do not, so the one service would get two pidfiles (and two
instances), and logind removes that directory at the user's last logout, pidfile and all.
Nothing of the environment decides the default.
"""

from __future__ import annotations

import os
import stat

from .errors import ConfigError


def _base(pidfile_path: str) -> str:
    return pidfile_path[:-4] if pidfile_path.endswith(".pid") else pidfile_path


def control_path_for(pidfile_path: str) -> str:
    """``/run/x.pid`` -> ``/run/x.ctl``: the control socket."""
    return _base(pidfile_path) + ".ctl"


def successor_control_path_for(pidfile_path: str) -> str:
    """``/run/x.pid`` -> ``/run/x.next.ctl``: the control socket of the daemon a handover
    ``restart`` starts, until it takes over the pidfile and ``x.ctl``."""
    return _base(pidfile_path) + ".next.ctl"


def successor_pidfile_for(pidfile_path: str) -> str:
    """``/run/x.pid`` -> ``/run/x.next.pid``: locked by that successor while it runs beside
    the daemon it replaces, so ``stop`` and ``status`` see it too."""
    return _base(pidfile_path) + ".next.pid"


def exit_record_path_for(pidfile_path: str) -> str:
    """``/run/x.pid`` -> ``/run/x.exit``: how the last daemon ended (see ``exitrecord``)."""
    return _base(pidfile_path) + ".exit"


def private_runtime_dir() -> str:
    """The per-user directory for the pidfiles of a user who is not root."""
    return f"/tmp/daemonkit-{os.geteuid()}"


def default_pidfile(name: str) -> str:
    if os.geteuid() == 0:
        return f"/run/{name}.pid"
    return os.path.join(private_runtime_dir(), f"{name}.pid")


def ensure_private_runtime_dir(pidfile_path: str) -> None:
    """Create the private default directory if the pidfile is to live there.

    Called by the commands that create the pidfile (``start``, ``run``); an existing one must
    be a real directory of ours that nobody else may write, or it is refused.
    """
    directory = os.path.dirname(pidfile_path)
    if directory != private_runtime_dir():
        return
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    if not _is_private_dir(directory):
        raise ConfigError(f"{directory} is not a private directory of uid {os.geteuid()} "
                          "(refused as the default place for the pidfile; pass --pidfile)")


def _is_private_dir(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
