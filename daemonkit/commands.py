"""The CLI actions, run in the command process (never in the daemon).

Each returns an LSB exit code and prints one line of what happened: the user must never need
the log to learn whether ``start`` worked or why it did not.

Who runs is learnt from one observation of the pidfile (``PidFile.observe``): a write lock,
and the pid of the process that holds it. The only waits are for states that pass by
themselves: a daemon that has the lock but has not written its pid yet (it is detaching), a
daemon still in ``setup()``, one whose lock outlives it for a moment.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lockfile

from . import filelock, process
from .control import ControlDenied, ControlError, exchange, request
from .errors import DaemonkitError, PidfileError
from .exitcodes import Exit
from .exitrecord import describe_end, read_exit_record, record_kill
from .launch import Launch, configured_options, prepare_launch
from .paths import (
    control_path_for,
    exit_record_path_for,
    successor_control_path_for,
    successor_pidfile_for,
)
from .pidfile import Holder, HolderState, PidFile
from .printable import printable
from .privileges import resolve_identity

if TYPE_CHECKING:
    from .daemon import Daemon

#: how long an observer waits for a locked pidfile to receive its pid (the daemon detaching)
_PID_APPEAR_S = 5.0


def _say(daemon: Daemon, text: str) -> None:
    print(printable(f"{daemon.options.name} {text}"), flush=True)


def _complain(daemon: Daemon, text: str) -> None:
    print(printable(f"{daemon.options.name}: {text}"), file=sys.stderr, flush=True)


def _pidfile(daemon: Daemon, launch: Launch | None = None) -> PidFile:
    """The pidfile; it may belong to the user the daemon drops to (``--user``), and to no
    other user but root and the one running the command (see :meth:`PidFile.observe`)."""
    identity = launch.identity if launch is not None else None
    if launch is None and daemon.options.user is not None:
        try:
            identity = resolve_identity(daemon.options.user, None)
        except DaemonkitError:
            pass  # an unknown user is reported by the commands that need one
    return PidFile(daemon.options.pidfile, trusted_uids=[identity.uid] if identity else [])


def _observe(pidfile: PidFile, timeout_s: float = _PID_APPEAR_S, *,
             for_start: bool = False) -> Holder:
    """Who holds the pidfile, waiting out the few milliseconds between a daemon's lock and
    its pid (STARTING is returned only if that lasts ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        holder = pidfile.observe(for_start=for_start)
        if holder.state is not HolderState.STARTING or time.monotonic() > deadline:
            return holder
        time.sleep(0.005)


def _wait_released(pidfile: PidFile, timeout_s: float) -> bool:
    """The daemon is gone or going: its lock goes with its last descriptor (a process it
    forked without exec may hold one a little longer)."""
    deadline = time.monotonic() + timeout_s
    while pidfile.observe().locked:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _impostor(pidfile: PidFile, holder: Holder) -> str:
    held_by = ""
    try:
        info = os.stat(pidfile.path)
        holders = filelock.write_lock_holders((info.st_dev, info.st_ino))
        if holders:
            held_by = f" (it is held by pid {', '.join(map(str, holders))}: {_names(holders)})"
    except OSError:
        pass
    return (f"pidfile {pidfile.path} is locked, but pid {holder.pid} in it does not hold the "
            f"lock{held_by}: refusing to signal anything")


def _names(pids: list[int]) -> str:
    """What each process is, from its command line: which program holds a lock."""
    names = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                names.append(cmdline.read().replace(b"\0", b" ").decode(errors="replace")
                             .strip()[:60] or "?")
        except OSError:
            names.append("?")
    return "; ".join(names)


# -- start -------------------------------------------------------------------------------------


def start(daemon: Daemon, launch: Launch | None = None) -> int:
    """Start the daemon, or report the one that runs.

    "Already running" is only said of a daemon that is ready: a concurrent ``start`` whose
    daemon is still in ``setup()`` is waited for, and if that one fails or is stopping, this
    ``start`` takes over the lock and starts a daemon of its own. ``launch``: already
    prepared (by ``restart``, before it stopped the old daemon).
    """
    from .launcher import launch_detached  # only start and run need the daemon's side

    deadline = time.monotonic() + daemon.options.start_timeout
    running = _ready_holder(daemon, _pidfile(daemon), deadline)
    if running is None:
        if launch is None:
            launch = prepare_launch(daemon)
        else:
            launch.log.reopen_if_replaced()  # prepared before a stop that took a while
        pidfile = _pidfile(daemon, launch)
        running = _take_lock_or_find_holder(daemon, pidfile, deadline)
    if running is not None:
        _say(daemon, f"is already running (pid {running})")
        mine = _my_options(daemon, launch)
        if isinstance(mine, str):
            _complain(daemon, f"note: these options would not start it ({mine}): a "
                              "restart with them would fail")
            return Exit.OK
        changes = _differences(daemon, mine)
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


def _ready_holder(daemon: Daemon, pidfile: PidFile, deadline: float) -> int | None:
    """The pid of a ready daemon holding the lock; None once nobody holds it.

    A holder that is still starting is waited for (until ``deadline``); one that failed or is
    stopping is waited out until it releases the lock.
    """
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DaemonkitError(f"pidfile {pidfile.path} is held by a process that did not "
                                 f"become ready within {daemon.options.start_timeout:g}s")
        holder = _observe(pidfile, remaining, for_start=True)
        if not holder.locked:
            return None
        if holder.state is HolderState.STARTING:
            continue  # the deadline above ends this
        if holder.state is HolderState.IMPOSTOR:
            raise DaemonkitError(_impostor(pidfile, holder))
        assert holder.pid is not None
        try:
            reply = request(control_path_for(pidfile.path),
                            {"cmd": "wait-ready", "timeout": remaining}, timeout_s=remaining + 5)
        except ControlDenied:
            return holder.pid  # not ours to ask (another user's daemon): it holds the lock
        except ControlError:
            # the socket is bound before the pid is written, and closed just before the
            # lock goes: this daemon is on its way out
            _wait_released(pidfile, max(0.0, deadline - time.monotonic()))
            continue
        if reply.get("state") == "running":
            return holder.pid
        if reply.get("state") in ("failed", "stopping"):
            _wait_released(pidfile, max(0.0, deadline - time.monotonic()))
        elif reply.get("busy"):
            time.sleep(0.05)  # its answering threads are all taken: ask again, bounded above
        elif "state" not in reply:
            raise DaemonkitError(f"the running daemon (pid {holder.pid}) answered: "
                                 f"{reply.get('error')}")


# -- stop --------------------------------------------------------------------------------------


def stop(daemon: Daemon) -> int:
    pidfile = _pidfile(daemon)
    try:
        successor = _stop_successor(daemon, pidfile)
        holder = _observe(pidfile)
    except PidfileError as exc:
        _complain(daemon, str(exc))
        return exc.exit_code
    if not holder.locked:
        _clean_leftovers(daemon, pidfile)
        _say(daemon, "is not running" if successor is None else f"stopped (pid {successor}, "
                                                                "the daemon of a restart)")
        return Exit.OK
    if holder.state is HolderState.STARTING:
        _complain(daemon, f"pidfile {pidfile.path} is locked, but no pid was written into it "
                          f"within {_PID_APPEAR_S:g}s: refusing to guess what to signal")
        return Exit.FAILURE
    if holder.state is HolderState.IMPOSTOR:
        _complain(daemon, _impostor(pidfile, holder))
        return Exit.FAILURE
    assert holder.pid is not None
    record_owners = _record_owners(pidfile)  # before the pidfile goes
    try:
        result = process.terminate(holder.pid, daemon.options.stop_timeout)
    except PermissionError:
        _complain(daemon, f"not allowed to signal pid {holder.pid} (run as root or as its user)")
        return Exit.NO_PRIVILEGE
    if result == "unkillable":
        _complain(daemon, f"pid {holder.pid} did not exit even after SIGKILL")
        return Exit.FAILURE
    _wait_released(pidfile, 2.0)
    _clean_leftovers(daemon, pidfile)
    if result == "killed":
        record_kill(exit_record_path_for(pidfile.path), holder.pid,
                    f"killed with SIGKILL by stop after the {daemon.options.stop_timeout:g}s "
                    "stop timeout")
        _say(daemon, f"killed after {daemon.options.stop_timeout:g}s timeout (pid {holder.pid})")
    else:
        _say(daemon, f"stopped (pid {holder.pid})")
        _tell_unclean_end(daemon, pidfile, holder.pid, record_owners)
    return Exit.OK


def _tell_unclean_end(daemon: Daemon, pidfile: PidFile, pid: int, owners: set[int]) -> None:
    """A daemon that stopped but failed on its way out (``shutdown()`` raised, a drain left
    work undone) is stopped, so the stop succeeded (LSB: 0); but "stopped" alone would hide
    the failure until someone thinks of running ``status``."""
    record = read_exit_record(exit_record_path_for(pidfile.path), owners)
    if record is None or record.get("pid") != pid or record.get("stopped_in_setup"):
        return  # (stopped in setup(): by this stop, which is no failure of the daemon's)
    note = describe_end(record)
    if note is not None:
        _complain(daemon, f"warning: {note}")


def _observe_successor(daemon: Daemon, pidfile: PidFile) -> Holder:
    """The daemon a restart under way started (``NAME.next.pid``), under the pidfile's own
    rules; one another user planted there is no successor, said once, and never blocks."""
    successor = PidFile(successor_pidfile_for(pidfile.path), trusted_uids=pidfile.trusted_uids)
    try:
        return _observe(successor, 1.0)
    except PidfileError as exc:
        _complain(daemon, f"warning: ignoring {successor.path}: {exc}")
        return Holder(HolderState.NOBODY)


def _stop_successor(daemon: Daemon, pidfile: PidFile) -> int | None:
    """A restart under way has a second daemon, not yet holding the pidfile (it locks
    ``NAME.next.pid``): stop it first, so the restart cannot hand it the service after the
    stop. Its pid if there was one."""
    successor = _observe_successor(daemon, pidfile)
    if successor.state not in (HolderState.VERIFIED, HolderState.UNVERIFIED):
        return None
    assert successor.pid is not None
    try:
        process.terminate(successor.pid, daemon.options.stop_timeout)
    except PermissionError:
        _complain(daemon, f"not allowed to signal pid {successor.pid}, the daemon of a restart")
    return successor.pid


def _clean_leftovers(daemon: Daemon, pidfile: PidFile) -> None:
    """Remove a pidfile and control socket nobody holds (a daemon after a privilege drop
    cannot unlink them from a root-owned directory; a SIGKILLed one never tried).

    Failing to is worth a warning, not a failed ``stop``: the daemon is stopped, and a
    leftover file is harmless (the lock, not the file, says whether it runs). The exit record
    stays: it is how ``status`` tells later how the daemon ended.
    """
    control_path = control_path_for(pidfile.path)
    companions = [control_path] if _is_socket_path(control_path) else []
    successor = PidFile(successor_pidfile_for(pidfile.path))
    successor_socket = successor_control_path_for(pidfile.path)
    successor_companions = [successor_socket] if _is_socket_path(successor_socket) else []

    def clean_successor() -> None:
        # NAME.next.ctl answers for a restart's successor while it holds NAME.next.pid, and
        # for the pidfile's daemon from its take-over until the restart renames the socket:
        # a leftover only where neither lock is held
        successor.remove_if_unlocked(successor_companions)

    leftover_successor = successor_companions or successor.exists()
    try:
        pidfile.remove_if_unlocked(companions,
                                   while_locked=clean_successor if leftover_successor else None)
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
    changes = _changed_options(daemon, launch)
    if changes:
        _complain(daemon, "note: restarting with other options than the running daemon's: "
                          + "; ".join(changes))
    if launch.listen and not launch.sockets:  # under socket activation systemd keeps them
        handed_over = _restart_with_handover(daemon, launch)
        if handed_over is not None:
            return handed_over
    stopped = stop(daemon)
    if stopped != Exit.OK:
        return stopped
    started = start(daemon, launch)
    if started != Exit.OK:
        _complain(daemon, "the old daemon was stopped: none runs now")
    return started


def _restart_with_handover(daemon: Daemon, launch: Launch) -> int | None:
    """Restart without refusing a connection; None when there is nothing to hand over.

    1. the running daemon passes its listening sockets (over its control socket);
    2. the new daemon starts beside it on those sockets, as a successor: it holds no lock yet,
       its control socket is ``NAME.next.ctl``; if it fails, the old one keeps running;
    3. the old daemon is stopped as ``stop`` would (it stops accepting, finishes what it
       holds); connections arriving meanwhile wait in the kernel's backlog, which the two
       share, and the successor accepts them;
    4. this command takes the pidfile's lock as soon as the old daemon let go of it, and
       passes the locked descriptor to the successor, which writes its pid and moves its
       control socket to ``NAME.ctl``: at no moment do two daemons hold the pidfile.
    """
    from .launcher import launch_detached

    pidfile = _pidfile(daemon, launch)
    holder = _observe(pidfile)
    if holder.state not in (HolderState.VERIFIED, HolderState.UNVERIFIED):
        if _restart_under_way(daemon, pidfile):
            # the old daemon of a restart under way is gone, and its restart is about to
            # pass the pidfile to the successor: a plain restart now would stop it
            return _another_restart(daemon)
        return None
    reply, fds = _ask_for_handover(launch)
    if not reply.get("ok"):
        # refused while a restart's successor waits for the pidfile: the daemon is stopping
        # for that restart, and a plain restart now would stop the successor (as `stop` does)
        if (reply.get("error") == "another restart is already under way"
                or _restart_under_way(daemon, pidfile)):
            return _another_restart(daemon)
        return None  # restart it the plain way
    addresses = reply.get("addresses")
    handed = [socket.socket(fileno=fd) for fd in fds]
    if not isinstance(addresses, list) or len(addresses) != len(handed):
        for sock in handed:
            sock.close()
        return None
    wanted = {address.key for address in launch.listen}
    launch.sockets = {}
    for address, sock in zip(addresses, handed, strict=True):
        if address in wanted:
            launch.sockets[str(address)] = sock
        else:
            sock.close()  # no longer declared: it goes with the old daemon
    launch.successor = True
    try:
        outcome = launch_detached(daemon, pidfile, launch)
    finally:
        for sock in launch.sockets.values():
            sock.close()  # the successor has its own copies
    assert holder.pid is not None
    if not outcome.ready or not _serving(pidfile, outcome.pid):
        if outcome.ready:
            process.terminate(outcome.pid or 0, daemon.options.stop_timeout)
            outcome.error = f"the new daemon (pid {outcome.pid}) went away before it took over"
        _abort_handover(launch)
        _complain(daemon, outcome.error or "failed to start")
        _complain(daemon, f"the running daemon (pid {holder.pid}) keeps running")
        return outcome.exit_code or Exit.FAILURE
    assert outcome.pid is not None
    return _hand_over_the_pidfile(daemon, pidfile, launch, holder.pid, outcome.pid)


def _ask_for_handover(launch: Launch) -> tuple[dict[str, Any], list[int]]:
    """The running daemon's answer to "handover"; ``{"ok": False}`` if it cannot answer (too
    old to hand over, wedged, or gone meanwhile).

    A daemon that has just taken over from a restart holds the pidfile a moment before that
    restart has moved its socket to NAME.ctl: no socket there yet is waited out (briefly),
    not taken for a daemon that cannot hand over, whose plain restart would refuse
    connections."""
    for _ in range(200):  # bounded: about 1 s
        try:
            return exchange(launch.control_path, {"cmd": "handover"}, timeout_s=10.0)
        except ControlError:
            if _is_socket_path(launch.control_path):
                break
            time.sleep(0.005)
    return {"ok": False}, []


def _another_restart(daemon: Daemon) -> int:
    _complain(daemon, "cannot restart: another restart is already under way")
    return Exit.FAILURE


def _restart_under_way(daemon: Daemon, pidfile: PidFile) -> bool:
    """A restart's successor holds ``NAME.next.pid`` (its own lock, not a planted pid)."""
    return _observe_successor(daemon, pidfile).state in (
        HolderState.VERIFIED, HolderState.UNVERIFIED, HolderState.STARTING)


def _serving(pidfile: PidFile, pid: int | None) -> bool:
    """The successor still runs and answers, right before its predecessor is stopped."""
    try:
        reply = request(successor_control_path_for(pidfile.path),
                        {"cmd": "wait-ready", "timeout": 1.0}, timeout_s=5.0)
    except ControlError:
        return False
    return reply.get("state") == "running" and reply.get("pid") == pid


def _abort_handover(launch: Launch) -> None:
    """Let the running daemon hand its sockets over again (to the next restart) at once."""
    try:
        request(launch.control_path, {"cmd": "handover-abort"}, timeout_s=5.0)
    except ControlError:
        pass


def _hand_over_the_pidfile(daemon: Daemon, pidfile: PidFile, launch: Launch, old_pid: int,
                           new_pid: int) -> int:
    """Steps 3 and 4 of a handover restart."""
    try:
        result = process.terminate(old_pid, daemon.options.stop_timeout)
    except PermissionError:
        result = "not ours"
    if result in ("not ours", "unkillable"):
        process.terminate(new_pid, daemon.options.stop_timeout)
        _complain(daemon, f"could not stop pid {old_pid} ({result}); stopped the new daemon")
        return Exit.FAILURE
    deadline = time.monotonic() + daemon.options.start_timeout
    while True:
        try:
            pidfile.lock_for_start()
            break
        except lockfile.AlreadyLocked:
            # the old daemon's lock goes with its last descriptor, or a concurrent start
            # grabbed it, whose daemon cannot bind the successor's sockets and gives up
            if time.monotonic() > deadline:
                process.terminate(new_pid, daemon.options.stop_timeout)
                _complain(daemon, f"pidfile {pidfile.path} stayed locked after pid {old_pid} "
                                  "ended; stopped the new daemon")
                return Exit.FAILURE
            time.sleep(0.005)
    assert pidfile.fileno is not None
    try:
        reply, _ = exchange(successor_control_path_for(pidfile.path), {"cmd": "take-over"},
                            timeout_s=10.0, send=[pidfile.fileno])
    except ControlError as exc:
        reply = {"ok": False, "error": str(exc)}
    if not reply.get("ok"):
        process.terminate(new_pid, daemon.options.stop_timeout)
        pidfile.release()
        _complain(daemon, f"the new daemon did not take over: {reply.get('error')}")
        return Exit.FAILURE
    # the successor may have dropped privileges: this command moves its socket into place
    # (over the old daemon's, which may not have been able to remove it), still holding the
    # lock, which the successor shares now: should it die meanwhile, no new daemon can
    # have bound NAME.ctl, which the rename would replace
    moved = successor_control_path_for(pidfile.path)
    try:
        if _is_socket_path(moved):
            os.rename(moved, launch.control_path)
    except FileNotFoundError:
        pass  # a stop that came meanwhile stopped the successor and removed its socket
    pidfile.forget()  # the successor holds the lock now
    PidFile(successor_pidfile_for(pidfile.path)).remove_if_unlocked()
    what = "killed after timeout" if result == "killed" else "stopped"
    kept = [address.key for address in launch.listen if address.key in launch.sockets]
    handed = (f"took over its listening sockets ({', '.join(kept)})" if kept else
              "bound its own listening sockets (none of the old daemon's addresses)")
    _say(daemon, f"restarted (pid {old_pid} {what}, pid {new_pid} {handed})")
    return Exit.OK


def _my_options(daemon: Daemon, launch: Launch | None) -> dict[str, Any] | str:
    """This command's options as the service's ``configure()`` resolves them, or why it
    refuses them (said beside "already running", where nothing else would show it)."""
    if launch is not None:
        return launch.options
    try:
        return configured_options(daemon)
    except Exception as exc:  # noqa: BLE001 - reported, and the command goes on
        return str(exc) or type(exc).__name__


def _changed_options(daemon: Daemon, launch: Launch | None) -> list[str]:
    """``--name old -> new`` for every option this command gives differently (best effort:
    nothing when the running daemon cannot be asked, or this command's options do not
    configure)."""
    mine = _my_options(daemon, launch)
    return [] if isinstance(mine, str) else _differences(daemon, mine)


def _differences(daemon: Daemon, mine: dict[str, Any]) -> list[str]:
    """What of ``mine`` the running daemon runs with otherwise; [] if it cannot be asked."""
    pidfile = _pidfile(daemon)
    try:
        if not pidfile.observe().locked:
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
        holder = _observe(pidfile, 2.0)
    except PidfileError as exc:
        report.update(running=None, state=None, error=str(exc))
        return _print_status(daemon, report, Exit.NO_PRIVILEGE, f"status unknown: {exc}")
    if not holder.locked:
        successor = _observe_successor(daemon, pidfile)
        if successor.pid is not None and successor.state is not HolderState.IMPOSTOR:
            report.update(running=True, pid=successor.pid, state="restarting")
            return _print_status(daemon, report, Exit.OK,
                                 f"is restarting (pid {successor.pid} takes over)")
        return _status_stopped(daemon, pidfile, report)
    if holder.state is HolderState.IMPOSTOR:
        error = _impostor(pidfile, holder).replace(": refusing to signal anything", "")
        report.update(running=None, state=None, error=error)
        return _print_status(daemon, report, Exit.NO_PRIVILEGE, f"status unknown: {error}")
    pid = holder.pid
    uptime = process.uptime_s(pid) if pid is not None else None
    report.update(running=True, pid=pid,
                  uptime_s=round(uptime, 3) if uptime is not None else None)
    state = "starting"
    if pid is not None:
        try:
            reply = request(control_path_for(pidfile.path), {"cmd": "status"}, timeout_s=12.0)
            state = str(reply.get("state", "running"))
            info = reply.get("info")
            if isinstance(info, dict):
                # the service adds keys; it cannot change what the core reports
                report.update({k: v for k, v in info.items() if k not in report})
        except ControlError as exc:
            state = "running"
            report["control_error"] = str(exc)
    report["state"] = state
    shown_pid = pid if pid is not None else "not yet known"
    up = f", up {process.format_duration(uptime)}" if uptime is not None else ""
    line = {"starting": f"is starting (pid {shown_pid}, setup() not finished)",
            "stopping": f"is stopping (pid {shown_pid})"}.get(
        state, f"is running (pid {shown_pid}{up})")
    return _print_status(daemon, report, Exit.OK, line)


def _record_owners(pidfile: PidFile) -> set[int]:
    """Who may have written the exit record: root, us, and the owner of the daemon's directory
    and pidfile (the service user's, say); anyone else's is a fabrication."""
    owners = {0, os.geteuid()}
    for path in (os.path.dirname(pidfile.path), pidfile.path):
        try:
            owners.add(os.lstat(path).st_uid)
        except OSError:
            pass
    return owners


def _status_stopped(daemon: Daemon, pidfile: PidFile, report: dict[str, Any]) -> int:
    """Not running: say so, and how the last daemon ended if that is worth knowing."""
    report["state"] = "stopped"
    record = read_exit_record(exit_record_path_for(pidfile.path), _record_owners(pidfile))
    note = describe_end(record) if record is not None else None
    if record is not None:
        report["last_exit"] = record
    ended = f" (last run: {note})" if note else ""
    if pidfile.exists():
        return _print_status(daemon, report, Exit.FAILURE,
                             f"is not running, but pidfile {pidfile.path} exists{ended}")
    return _print_status(daemon, report, Exit.NOT_RUNNING_STATUS, f"is not running{ended}")


_STATUS_CORE_KEYS = {"name", "running", "pid", "uptime_s", "pidfile", "state", "error",
                     "last_exit"}


def _print_status(daemon: Daemon, report: dict[str, Any], code: int, line: str) -> int:
    if daemon.options.json:
        print(json.dumps(report, default=str), flush=True)
    else:
        _say(daemon, line)
        for key, value in report.items():
            if key not in _STATUS_CORE_KEYS:
                # JSON's spelling (null, true, 1.5), as --json gives them; text as it is
                shown = value if isinstance(value, str) else json.dumps(value, default=str)
                print(printable(f"  {key}: {shown}"))
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
    holder = _observe(pidfile)
    if not holder.locked:
        _complain(daemon, f"cannot {command}: not running")
        return Exit.NOT_RUNNING
    if holder.state is HolderState.IMPOSTOR:
        _complain(daemon, _impostor(pidfile, holder).replace("signal", "ask"))
        return Exit.FAILURE
    wait_s = max(daemon.options.start_timeout, 1.0)
    given = {f"--{key.replace('_', '-')} " for key in getattr(daemon.options,
                                                             "_daemonkit_given", [])}
    mine = _my_options(daemon, None) if given else {}
    if isinstance(mine, str):
        # (a --config that is missing or broken: the daemon re-reads its own, say so)
        _complain(daemon, f"note: {command} keeps the running daemon's options; this "
                          f"command's are refused: {mine}")
    elif mine:  # (nothing given: no need to ask the daemon for its options)
        changes = [change for change in _differences(daemon, mine)
                   if any(change.startswith(option) for option in given)]
        if changes:
            _complain(daemon, f"note: {command} keeps the running daemon's options ("
                              + "; ".join(changes) + "): restart applies them")
    try:
        reply = request(control_path_for(pidfile.path), {"cmd": command, "timeout": wait_s},
                        timeout_s=wait_s + 5.0)
    except ControlDenied as exc:
        _complain(daemon, f"cannot {command}: {exc}")
        return Exit.NO_PRIVILEGE
    except ControlError as exc:
        _complain(daemon, f"cannot confirm {doing}: {exc}")
        return Exit.FAILURE
    if reply.get("ok"):
        _say(daemon, f"{done} (pid {holder.pid})")
        return Exit.OK
    if reply.get("pending"):
        _complain(daemon, f"{doing} not confirmed: {reply.get('error')}")
    else:
        _complain(daemon, f"{doing} failed: {reply.get('error', 'unknown error')}")
    return Exit.FAILURE


# -- run (foreground) ----------------------------------------------------------------------------


def run_foreground(daemon: Daemon) -> int:
    from .launcher import serve_foreground

    launch = prepare_launch(daemon)
    pidfile = _pidfile(daemon, launch)
    try:
        pidfile.lock_for_start()
    except lockfile.AlreadyLocked:
        holder = _observe(pidfile)
        shown = holder.pid if holder.pid is not None else "not yet known"
        _complain(daemon, f"is already running (pid {shown})")
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
