"""The CLI actions, run in the command process (never in the daemon).

Each returns an LSB exit code and prints one line of what happened: the user must never need
the log to learn whether ``start`` worked or why it did not.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lockfile

from . import process
from .control import ControlError, control_path_for, request
from .daemon import comparable_options
from .errors import ConfigError, DaemonkitError, PidfileError
from .exitcodes import Exit
from .logsetup import LogTarget
from .pidfile import PidFile
from .privileges import resolve_identity

if TYPE_CHECKING:
    from .daemon import Daemon, Launch

#: how long a reader waits for a freshly locked pidfile to receive its pid
_PID_APPEAR_S = 5.0


def _say(daemon: Daemon, text: str) -> None:
    print(f"{daemon.options.name} {text}", flush=True)


def _complain(daemon: Daemon, text: str) -> None:
    print(f"{daemon.options.name}: {text}", file=sys.stderr, flush=True)


def _pidfile(daemon: Daemon) -> PidFile:
    return PidFile(daemon.options.pidfile)


def _wait_for_pid(pidfile: PidFile, timeout_s: float = _PID_APPEAR_S) -> int | None:
    """The pid of the lock holder; None if the lock went away or no pid appeared in time.

    Between ``start`` taking the lock and the detached daemon writing its pid there are a few
    milliseconds in which the file is locked and empty. The pid is only believed if that
    process holds the pidfile open (see ``PidFile.holder_pid``).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        pid = pidfile.holder_pid()
        if pid is not None or not pidfile.holder_locked() or time.monotonic() > deadline:
            return pid
        time.sleep(0.005)


def prepare_launch(daemon: Daemon) -> Launch:
    """Everything that can fail for a reason the user must see, checked before any fork."""
    from .daemon import Launch

    options = daemon.options
    identity = resolve_identity(options.user, options.group)
    if not os.path.isdir(options.workdir):
        raise ConfigError(f"working directory {options.workdir} does not exist")
    if options.syslog and not _is_socket(options.syslog_socket):
        raise ConfigError(f"--syslog: no syslog socket at {options.syslog_socket}")
    _configure(daemon)
    log = LogTarget(options.log_file, options.log_level,
                    options.syslog_socket if options.syslog else None)
    try:
        log.open_file()
    except OSError as exc:
        why = "is a symbolic link (refused)" if exc.errno == errno.ELOOP else exc.strerror
        error = DaemonkitError(f"cannot open log file {options.log_file}: {why}")
        if isinstance(exc, PermissionError):
            error.exit_code = Exit.NO_PRIVILEGE
        raise error from exc
    return Launch(
        pidfile_path=options.pidfile,
        control_path=control_path_for(options.pidfile),
        log=log,
        identity=identity,
    )


def _configure(daemon: Daemon) -> dict[str, Any]:
    """The service's ``configure()``, then the options as it resolved them (compared by
    ``restart`` and by ``start`` on a running daemon with the daemon's own)."""
    daemon.configure()
    daemon.command_options = comparable_options(daemon.options)
    return daemon.command_options


def _wait_for_socket(path: str, pidfile: PidFile, timeout_s: float) -> bool:
    """A daemon binds its control socket a moment after writing its pid: give it that moment."""
    deadline = time.monotonic() + timeout_s
    while not _is_socket(path):
        if time.monotonic() > deadline or not pidfile.holder_locked():
            return _is_socket(path)
        time.sleep(0.005)
    return True


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


# -- start -------------------------------------------------------------------------------------


def start(daemon: Daemon, launch: Launch | None = None) -> int:
    """Start the daemon, or report the one that runs.

    "Already running" is only said of a daemon that is ready: a concurrent ``start`` whose
    daemon is still in ``setup()`` is waited for, and if that one fails or is stopping, this
    ``start`` takes over the lock and starts a daemon of its own. ``launch``: already
    prepared (by ``restart``, before it stopped the old daemon).
    """
    from .launcher import launch_detached

    pidfile = _pidfile(daemon)
    deadline = time.monotonic() + daemon.options.start_timeout
    running = _ready_holder(daemon, pidfile, deadline)
    if running is None:
        if launch is None:
            launch = prepare_launch(daemon)
        else:
            launch.log.reopen_if_replaced()  # prepared before a stop that took a while
        running = _take_lock_or_find_holder(daemon, pidfile, deadline)
    if running is not None:
        _say(daemon, f"is already running (pid {running})")
        changes = _changed_options(daemon)
        if changes:
            _complain(daemon, "note: it runs with other options than these ("
                              + "; ".join(changes) + "): restart applies them")
        return Exit.OK
    assert launch is not None  # prepared above whenever nobody ran
    outcome = launch_detached(daemon, pidfile, launch)
    if outcome.ready:
        _say(daemon, f"started (pid {outcome.pid})")
        return Exit.OK
    _complain(daemon, outcome.error or "failed to start")
    # a daemon that failed after dropping privileges cannot unlink its control socket from
    # a directory only the invoking user may write
    _clean_leftovers(daemon, pidfile)
    return outcome.exit_code or Exit.FAILURE


def _take_lock_or_find_holder(daemon: Daemon, pidfile: PidFile, deadline: float) -> int | None:
    """Lock the pidfile for a new daemon (None), or return the pid of a ready holder."""
    while True:
        try:
            pidfile.lock_for_start()
            return None
        except lockfile.AlreadyLocked:
            running = _ready_holder(daemon, pidfile, deadline)
            if running is not None:
                return running
            if time.monotonic() > deadline:
                raise DaemonkitError("the pidfile stays locked by a process that is neither "
                                     "ready nor going away") from None
            time.sleep(0.005)


def _ready_holder(daemon: Daemon, pidfile: PidFile, deadline: float) -> int | None:
    """The pid of a ready daemon holding the lock; None once nobody holds it.

    A holder that is still starting is waited for (until ``deadline``); one that failed or is
    stopping is waited out until it releases the lock.
    """
    while pidfile.holder_locked():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DaemonkitError(f"pidfile {pidfile.path} is held by a process that did not "
                                 f"become ready within {daemon.options.start_timeout:g}s")
        pid = _wait_for_pid(pidfile, remaining)
        if pid is None:
            continue  # released meanwhile, or no verified pid yet: look again
        control_path = control_path_for(pidfile.path)
        if not _wait_for_socket(control_path, pidfile, min(remaining, 2.0)):
            return pid  # a holder without a control socket: all we can say is "running"
        try:
            reply = request(control_path, {"cmd": "wait-ready", "timeout": remaining},
                            timeout_s=remaining + 5.0)
        except ControlError as exc:
            if "permission denied" in str(exc):
                return pid  # not ours to ask (another user's daemon): it holds the lock
            time.sleep(0.01)  # a stale socket not yet replaced, or one just closed
            continue
        if reply.get("state") == "running":
            return pid
        if reply.get("state") in ("failed", "stopping"):
            _wait_lock_released(pidfile, max(0.0, deadline - time.monotonic()))
    return None


def _running_pid(pidfile: PidFile) -> int | None:
    """The verified pid of the lock holder, or None if nobody holds the lock."""
    if not pidfile.holder_locked():
        return None
    return _wait_for_pid(pidfile)


# -- stop --------------------------------------------------------------------------------------


def stop(daemon: Daemon) -> int:
    pidfile = _pidfile(daemon)
    try:
        locked = pidfile.holder_locked()
    except PidfileError as exc:
        _complain(daemon, str(exc))
        return exc.exit_code
    if not locked:
        _clean_leftovers(daemon, pidfile)
        _say(daemon, "is not running")
        return Exit.OK
    pid = _wait_for_pid(pidfile)
    if pid is None:
        if not pidfile.holder_locked():
            _clean_leftovers(daemon, pidfile)
            _say(daemon, "is not running")
            return Exit.OK
        _complain(daemon, f"pidfile {pidfile.path} is locked, but the pid in it does not "
                          "hold it open: refusing to signal anything")
        return Exit.FAILURE
    try:
        result = terminate(pid, daemon.options.stop_timeout)
    except PermissionError:
        _complain(daemon, f"not allowed to signal pid {pid} (run as root or as its user)")
        return Exit.NO_PRIVILEGE
    if result == "unkillable":
        _complain(daemon, f"pid {pid} did not exit even after SIGKILL")
        return Exit.FAILURE
    _wait_lock_released(pidfile, 2.0)
    _clean_leftovers(daemon, pidfile)
    if result == "killed":
        _say(daemon, f"killed after {daemon.options.stop_timeout:g}s timeout (pid {pid})")
    else:
        _say(daemon, f"stopped (pid {pid})")
    return Exit.OK


def terminate(pid: int, timeout_s: float) -> str:
    """SIGTERM, wait, SIGKILL, wait: ``"stopped"``, ``"killed"``, ``"gone"`` or ``"unkillable"``.

    Signals go through a pidfd, so a pid recycled while we wait is never hit.
    """
    pidfd = process.open_pidfd(pid)
    if pidfd is None:
        return "gone"
    try:
        if not process.send_signal(pidfd, signal.SIGTERM):
            return "gone"
        if process.wait_pidfd(pidfd, timeout_s):
            return "stopped"
        process.send_signal(pidfd, signal.SIGKILL)
        return "killed" if process.wait_pidfd(pidfd, 10.0) else "unkillable"
    finally:
        os.close(pidfd)


def _wait_lock_released(pidfile: PidFile, timeout_s: float) -> bool:
    """The process is gone; its lock goes with its last descriptor (a forked child may hold
    one a little longer)."""
    deadline = time.monotonic() + timeout_s
    while pidfile.holder_locked():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _clean_leftovers(daemon: Daemon, pidfile: PidFile) -> None:
    """Remove a pidfile and control socket nobody holds (a daemon after a privilege drop
    cannot unlink them from a root-owned directory; a SIGKILLed one never tried).

    Failing to is worth a warning, not a failed ``stop``: the daemon is stopped, and a
    leftover file is harmless (the lock, not the file, says whether it runs).
    """
    control_path = control_path_for(pidfile.path)
    try:
        pidfile.remove_if_unlocked(control_path if _is_socket_path(control_path) else None)
    except (PidfileError, OSError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        _complain(daemon, f"warning: left {pidfile.path} or {control_path} in place ({why})")


def _is_socket_path(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


# -- restart -----------------------------------------------------------------------------------


def restart(daemon: Daemon) -> int:
    """Stop, then start with the options of this command line.

    Everything ``start`` can check without the running daemon's resources (options, config
    file, user, log file) is checked before the stop: a typo must not leave the service down.
    What only the new daemon can find out (a port another process took meanwhile) still
    fails after the stop, and ``restart`` says why. Options that differ from the running
    daemon's are named first, since ``restart`` with fewer options than ``start`` had means
    defaults: a different port, a different database.
    """
    launch = prepare_launch(daemon)
    changes = _changed_options(daemon)
    if changes:
        _complain(daemon, "note: restarting with other options than the running daemon's: "
                          + "; ".join(changes))
    stopped = stop(daemon)
    if stopped != Exit.OK:
        return stopped
    return start(daemon, launch)


def _changed_options(daemon: Daemon) -> list[str]:
    """``--name old -> new`` for every option this command gives differently (best effort:
    nothing when the running daemon cannot be asked, or this command's options do not
    configure)."""
    mine = daemon.command_options
    if mine is None:
        try:
            mine = _configure(daemon)
        except DaemonkitError:
            return []
    pidfile = _pidfile(daemon)
    try:
        if not pidfile.holder_locked():
            return []
        # short: a daemon whose control thread is wedged is often why it is being restarted
        reply = request(control_path_for(pidfile.path), {"cmd": "status"}, timeout_s=1.0)
    except (ControlError, PidfileError):
        return []
    running = reply.get("options")
    if not isinstance(running, dict):
        return []
    return [f"--{key.replace('_', '-')} {_shown(running.get(key))} -> {_shown(mine.get(key))}"
            for key in sorted(set(running) | set(mine)) if running.get(key) != mine.get(key)]


def _shown(value: Any) -> str:
    if value is None:
        return "(default)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        value = " ".join(str(item) for item in value)
    # a password in a URL stays out of the terminal and its scrollback (it may hold an "@")
    text = _URL_PASSWORD.sub(r"\1***@", str(value))
    return _QUERY_PASSWORD.sub(r"\1***", text)


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^/\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&;]password=)[^&;\s]*", re.IGNORECASE)


# -- status ------------------------------------------------------------------------------------


def status(daemon: Daemon) -> int:
    pidfile = _pidfile(daemon)
    report: dict[str, Any] = {
        "name": daemon.options.name,
        "running": False,
        "pid": None,
        "uptime_s": None,
        "pidfile": pidfile.path,
    }
    try:
        locked = pidfile.holder_locked()
    except PidfileError as exc:
        report.update(running=None, state=None, error=str(exc))
        return _print_status(daemon, report, Exit.NO_PRIVILEGE, f"status unknown: {exc}")
    if not locked:
        report["state"] = "stopped"
        if pidfile.exists():
            return _print_status(daemon, report, Exit.FAILURE,
                                 f"is not running, but pidfile {pidfile.path} exists")
        return _print_status(daemon, report, Exit.NOT_RUNNING_STATUS, "is not running")
    pid = _wait_for_pid(pidfile)
    uptime = process.uptime_s(pid) if pid is not None else None
    report.update(running=True, pid=pid,
                  uptime_s=round(uptime, 3) if uptime is not None else None)
    state = "running"
    try:
        reply = request(control_path_for(pidfile.path), {"cmd": "status"}, timeout_s=5.0)
        state = str(reply.get("state", state))
        info = reply.get("info")
        if isinstance(info, dict):
            # the service adds keys; it cannot change what the core reports
            report.update({k: v for k, v in info.items() if k not in report})
    except ControlError as exc:
        report["control_error"] = str(exc)
    report["state"] = state
    shown_pid = pid if pid is not None else "unknown"
    up = f", up {process.format_duration(uptime)}" if uptime is not None else ""
    line = {"starting": f"is starting (pid {shown_pid}, setup() not finished)",
            "stopping": f"is stopping (pid {shown_pid})"}.get(
        state, f"is running (pid {shown_pid}{up})")
    return _print_status(daemon, report, Exit.OK, line)


_STATUS_CORE_KEYS = {"name", "running", "pid", "uptime_s", "pidfile", "state", "error"}


def _print_status(daemon: Daemon, report: dict[str, Any], code: int, line: str) -> int:
    if daemon.options.json:
        print(json.dumps(report, default=str), flush=True)
    else:
        _say(daemon, line)
        for key, value in report.items():
            if key not in _STATUS_CORE_KEYS:
                print(f"  {key}: {value}")
    return code


# -- reload, reopen-logs -------------------------------------------------------------------------


def reload(daemon: Daemon) -> int:
    """Run the daemon's ``reload()`` and report its outcome (waits up to --start-timeout)."""
    return _ask(daemon, "reload", "reloaded", "reload")


def reopen_logs(daemon: Daemon) -> int:
    """Have the daemon reopen its log file (logrotate's postrotate) and report the outcome."""
    return _ask(daemon, "reopen-logs", "reopened its log files", "reopening the log files")


def _ask(daemon: Daemon, command: str, done: str, doing: str) -> int:
    pidfile = _pidfile(daemon)
    pid = _running_pid(pidfile)
    if pid is None:
        _complain(daemon, f"cannot {command}: not running")
        return Exit.NOT_RUNNING
    wait_s = max(daemon.options.start_timeout, 1.0)
    try:
        reply = request(control_path_for(pidfile.path), {"cmd": command, "timeout": wait_s},
                        timeout_s=wait_s + 5.0)
    except ControlError as exc:
        _complain(daemon, f"cannot confirm {doing}: {exc}")
        return Exit.FAILURE
    if reply.get("ok"):
        _say(daemon, f"{done} (pid {pid})")
        return Exit.OK
    if reply.get("pending"):
        _complain(daemon, f"{doing} not confirmed: {reply.get('error')}")
    else:
        _complain(daemon, f"{doing} failed: {reply.get('error', 'unknown error')}")
    return Exit.FAILURE


# -- run (foreground) ----------------------------------------------------------------------------


def run_foreground(daemon: Daemon) -> int:
    from .launcher import serve_foreground

    pidfile = _pidfile(daemon)
    launch = prepare_launch(daemon)
    try:
        # a short wait rides over a concurrent `status` probing the lock for a microsecond
        pidfile.acquire(timeout=0.2)
    except (lockfile.AlreadyLocked, lockfile.LockTimeout):
        pid = _wait_for_pid(pidfile)
        _complain(daemon, f"is already running (pid {pid})")
        return Exit.FAILURE
    return serve_foreground(daemon, pidfile, launch)


ACTIONS: dict[str, Callable[[Daemon], int]] = {
    "start": start,
    "stop": stop,
    "restart": restart,
    "status": status,
    "reload": reload,
    "run": run_foreground,
    "reopen-logs": reopen_logs,
}
