"""One supervised instance (``worker:2``): spawn, observe, stop, and the state machine.

The instance never blocks and never polls: it reacts to three events the supervisor's loop
delivers (its process exited, its timer fired, it sent READY=1) and to operator requests
(start, stop, signal). Each reaction is one explicit state change checked against
:data:`states.TRANSITIONS` and reported to the loop (``changed``), which publishes it.

What a child gets is what supervisord gives it: the command resolved on ``$PATH`` (the
program's ``environment`` PATH first) and checked before the fork (so "can't find command"
is a spawn error, not an exit 127), a pipe on stdin (the fcgi socket for
``[fcgi-program:x]``), the ``SUPERVISOR_*`` variables, its own process group. On top: a
death signal when the supervisor dies (from the spawn helper, :mod:`.spawner`, or
``PR_SET_PDEATHSIG``), and a stop that leaves nothing of the group behind.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import random
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from typing import Protocol

from .config import InstanceSpec, LogSpec, ProgramConfig
from .datatypes import signal_name
from .logfile import LogFile, SyslogSink
from .procgroup import GroupWatch
from .spawn import STDOUT, Child, SpawnRequest
from .states import LIVE_STATES, STARTABLE_STATES, State, Want, check_transition

#: children carry the supervisor's pidfile path: a later supervisor of the same pidfile
#: recognises strays of a predecessor that died by SIGKILL (see strays.py)
SUPERVISOR_ID_ENV = "DAEMONKIT_SUPERVISOR"

#: a RUNNING process that exits sooner than this after its spawn counts as a quick exit;
#: this many quick exits in a row are a crash loop, and restarts back off
QUICK_EXIT_S = 1.0
QUICK_EXITS_TOLERATED = 3
#: while a stopped leader's group still has members, how often to look again
_GROUP_RECHECK_S = 0.02
#: where /proc cannot tell zombies from members (another PID namespace's), how long after
#: SIGKILL a group may still be found before it counts as gone
AFTER_SIGKILL_S = 1.0
#: bytes sendProcessStdin may queue for a child that does not read its stdin
MAX_STDIN_BUFFER = 1024 * 1024
DEFAULT_PATH = ("/bin", "/usr/bin", "/usr/local/bin")


class Loop(Protocol):
    """What an instance needs from the supervisor's selector loop."""

    def watch(self, fd: int, callback: Callable[[], None]) -> None: ...
    def watch_write(self, fd: int, callback: Callable[[], None]) -> None: ...
    def unwatch(self, fd: int) -> None: ...
    def changed(self, instance: Instance, old: State, expected: bool) -> None: ...
    def listen_socket(self, instance: Instance) -> socket.socket | None: ...
    def spawn(self, request: SpawnRequest, meanwhile: Callable[[], None] | None = None
              ) -> Child:
        """Start the child (OSError, SubprocessError if it cannot be), running
        ``meanwhile`` once while it is made; a ``Child.helper`` child's exit arrives as
        :meth:`Instance.on_exit`, any other's through its pidfd."""
    def output(self, instance: Instance, channel: str, data: bytes) -> None: ...
    def schedule(self, instance: Instance, when: float) -> None:
        """Call ``instance.on_timer`` once ``when`` (monotonic) has come, if its deadline is
        still ``when`` then (a changed or cleared deadline needs no cancelling)."""
    def pid_changed(self, instance: Instance, old: int | None, new: int | None) -> None:
        """The instance's process is now ``new`` (None: none), no longer ``old``."""


class SpawnError(Exception):
    """The command cannot be run; ``kind`` is supervisord's fault name for it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # NO_FILE | NOT_EXECUTABLE | SPAWN_ERROR


def may_enter(directory: str, uid: int, gids: set[int]) -> bool:
    """Whether ``uid`` (with ``gids``) may search every directory down to ``directory``, by
    the mode bits: along the path as written and along the one its symlinks lead to, as the
    kernel walks both. A directory with an access ACL is given the benefit of the doubt:
    the kernel would decide, and reading ACLs is not worth a dependency."""
    for path in {os.path.abspath(directory), os.path.realpath(directory)}:
        parts = path.strip("/").split("/") if path != "/" else []
        for depth in range(len(parts) + 1):
            component = "/" + "/".join(parts[:depth])
            try:
                info = os.stat(component)
            except OSError:
                return True  # missing: the spawn itself says so, with its own error
            if not _searchable(info, uid, gids) and not _has_access_acl(component):
                return False
    return True


def _searchable(info: os.stat_result, uid: int, gids: set[int]) -> bool:
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in gids:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _has_access_acl(path: str) -> bool:
    try:
        os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return False
    return True


def resolve_command(spec: InstanceSpec) -> str:
    """The file ``execve`` will run, checked as supervisord checks it before forking."""
    if spec.command_error:
        raise SpawnError("NOT_EXECUTABLE", spec.command_error)
    program = spec.argv[0]
    if "/" in program:
        filename = program if os.path.isabs(program) or not spec.directory else (
            os.path.join(spec.directory, program))
        info = _stat(filename)
    else:
        path = dict(spec.environment).get("PATH", os.environ.get("PATH") or "")
        info, filename = None, program
        for directory in (path.split(os.pathsep) if path else DEFAULT_PATH):
            candidate = os.path.join(directory, program)
            info = _stat(candidate)
            if info is not None:
                filename = candidate
                break
    if info is None:
        raise SpawnError("NO_FILE", f"can't find command {program!r}")
    if stat.S_ISDIR(info.st_mode):
        raise SpawnError("NOT_EXECUTABLE", f"command at {filename!r} is a directory")
    if not stat.S_IMODE(info.st_mode) & 0o111:
        raise SpawnError("NOT_EXECUTABLE", f"command at {filename!r} is not executable")
    if not os.access(filename, os.X_OK):
        raise SpawnError("NOT_EXECUTABLE", f"no permission to run command {filename!r}")
    return filename


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Instance:
    def __init__(self, program: ProgramConfig, spec: InstanceSpec, loop: Loop,
                 log: logging.Logger, *, notify_address: str | None = None,
                 supervisor_id: str | None = None, syslog: SyslogSink | None = None) -> None:
        self.program = program
        self.spec = spec
        self.loop = loop
        self.log = log
        self.notify_address = notify_address
        self.supervisor_id = supervisor_id
        self.state = State.STOPPED
        self.want = Want.DOWN
        self._pid: int | None = None  # group leader while LIVE (also its pgid)
        self.last_pid: int | None = None  # the leader that exited last (for its events)
        self.pidfd: int | None = None
        self.child: Child | None = None  # how the current process was made
        self.started_at: float | None = None  # monotonic time of the current spawn
        self.laststart = 0.0  # wall clock of the last spawn (0: never), as supervisord's
        self.laststop = 0.0  # wall clock of the last exit
        self._deadline: float | None = None  # monotonic time of the next timer event
        self.lingering: GroupWatch | None = None  # stopped leader's group still has members
        self.kill_sent = False
        self.ready_timed_out = False  # STOPPING because READY=1 never came
        self.kill_at = 0.0  # monotonic time at which a STOPPING group gets SIGKILL
        self.restarts = 0  # spawns after the first one
        self.spawns = 0
        self.times_running = 0  # how often it reached RUNNING (a start waits for this)
        self.failed_starts = 0  # consecutive failed starts (reset on RUNNING)
        self.exit_status: int | None = None  # last exit code (negative: killed by signal)
        self.spawn_error: str | None = None  # why the last spawn failed (daemonkit's status)
        self.spawnerr = ""  # supervisord's spawnerr: spawn failures and unexpected exits
        self.quick_exits = 0  # consecutive RUNNING exits within QUICK_EXIT_S
        self.stdin_fd: int | None = None
        self.stdin_buffer = b""
        self.stdout_log = self._log(spec.stdout)
        self.stderr_log = self._log(spec.stderr) if spec.stderr else None
        self.syslog = syslog

    def _log(self, log_spec: LogSpec) -> LogFile | None:
        if not log_spec.path:
            return None
        return LogFile(log_spec.path, log_spec.maxbytes, log_spec.backups,
                       strip_ansi=self.program.strip_ansi, private_dir=log_spec.private_dir,
                       on_error=lambda why: self.log.error("%s: log file: %s", self.name,
                                                           why))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        """The group leader while LIVE (also its pgid); the loop indexes instances by it."""
        return self._pid

    @pid.setter
    def pid(self, pid: int | None) -> None:
        old, self._pid = self._pid, pid
        if old != pid:
            self.loop.pid_changed(self, old, pid)

    @property
    def deadline(self) -> float | None:
        """Monotonic time of the next timer event: setting it schedules it with the loop, so
        the loop keeps a heap of timers instead of asking every instance every turn."""
        return self._deadline

    @deadline.setter
    def deadline(self, when: float | None) -> None:
        self._deadline = when
        if when is not None:
            self.loop.schedule(self, when)

    def _to(self, new: State, expected: bool = True) -> None:
        check_transition(self.state, new)
        old = self.state
        self.log.info("%s: %s -> %s", self.name, old.value, new.value)
        self.state = new
        if new is State.RUNNING:
            self.times_running += 1
        self.loop.changed(self, old, expected)

    # -- operator requests --------------------------------------------------------------

    def start(self) -> None:
        self.want = Want.UP
        if self.state in STARTABLE_STATES and not self.lingering_pgid:
            if self.state in (State.FATAL, State.EXITED, State.STOPPED):
                self.failed_starts = 0
            self._spawn()

    def stop(self) -> None:
        self.want = Want.DOWN
        if self.state in (State.BACKOFF, State.EXITED, State.FATAL):
            self.deadline = None
            self._to(State.STOPPED)
        elif self.state in (State.STARTING, State.RUNNING):
            self._to(State.STOPPING)
            self.kill_sent = False
            self.kill_at = time.monotonic() + self.program.stopwaitsecs
            self.deadline = self.kill_at
            assert self.pid is not None
            self._close_stdin()
            if self.program.stopasgroup:
                _signal_group(self.pid, self.program.stopsignal)
            else:  # supervisord's default: the process decides what its children do
                _signal_pid(self.pid, self.program.stopsignal)

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the process (not its group), as supervisord's ``signal``."""
        if self.pid is None:
            return False
        _signal_pid(self.pid, signum)
        return True

    def stopped(self) -> bool:
        """Down for good: no leader, no member of its group left behind."""
        return self.state not in LIVE_STATES and self.lingering_pgid is None

    def write_stdin(self, data: bytes) -> None:
        """Queue ``data`` for the child's stdin; OSError(EPIPE) if it has none or closed it."""
        if self.pid is None or self.state is State.STOPPING:
            raise OSError(errno.EPIPE, "process not running")
        if self.stdin_fd is None:
            raise OSError(errno.EPIPE, "process has no stdin channel")
        if len(self.stdin_buffer) + len(data) > MAX_STDIN_BUFFER:
            raise OSError(errno.ENOBUFS, "the process does not read its stdin")
        if not self.stdin_buffer:
            self.loop.watch_write(self.stdin_fd, self._flush_stdin)
        self.stdin_buffer += data
        self._flush_stdin()

    def _flush_stdin(self) -> None:
        if self.stdin_fd is None:
            return
        try:
            sent = os.write(self.stdin_fd, self.stdin_buffer)
        except BlockingIOError:
            return
        except OSError:
            self._close_stdin()  # EPIPE: the child closed its stdin
            return
        self.stdin_buffer = self.stdin_buffer[sent:]
        if not self.stdin_buffer:
            self.loop.unwatch(self.stdin_fd)

    def _close_stdin(self) -> None:
        if self.stdin_fd is not None:
            self.loop.unwatch(self.stdin_fd)
            os.close(self.stdin_fd)
            self.stdin_fd = None
        self.stdin_buffer = b""

    # -- events from the loop -----------------------------------------------------------

    def on_exit(self, status: int) -> None:
        """The leader was reaped with wait status ``status``."""
        code = os.waitstatus_to_exitcode(status)
        self.exit_status = code
        self.laststop = time.time()
        pgid, self.pid = self.pid, None
        self.last_pid = pgid
        self._close_pidfd()
        self._close_stdin()
        if self.child is not None:
            self.child.reaped(code)  # reaped by us: nothing else may wait for it
            self.child = None
        now = time.monotonic()
        uptime = now - (self.started_at or now)
        shown = signal_name(code) if code < 0 else f"exit status {code}"
        self.log.info("%s: exited (%s) after %.3fs", self.name, shown, uptime)
        if self.state == State.STOPPING:
            watch = GroupWatch(pgid) if pgid is not None else None
            if watch is not None and watch.alive():
                self.lingering = watch  # stop is not done until the group is gone
                if not self.program.stopasgroup and not self.kill_sent:
                    _signal_group(watch.pgid, self.program.stopsignal)  # their turn to stop
                self.deadline = now + _GROUP_RECHECK_S
                return
            self.deadline = None
            self._stopped()
            return
        if pgid is not None:
            _signal_group(pgid, signal.SIGKILL)  # a dead leader's helpers die with it
        if self.state == State.STARTING:
            self.spawnerr = "Exited too quickly (process log may have details)"
            self._failed_start(f"exited ({shown}) before startsecs")
            return
        # RUNNING -> exited
        expected = code in self.program.exitcodes
        self.spawnerr = "" if expected else f"Bad exit code {code if code >= 0 else -1}"
        restart = self.want == Want.UP and (
            self.program.autorestart == "true"
            or (self.program.autorestart == "unexpected" and not expected))
        if not restart:
            self._to(State.EXITED, expected)
            return
        # a process that ran a while is respawned at once; one that keeps dying within
        # QUICK_EXIT_S (possible with small startsecs) backs off, growing, never FATAL
        self.quick_exits = self.quick_exits + 1 if uptime < QUICK_EXIT_S else 0
        if self.quick_exits >= QUICK_EXITS_TOLERATED:
            self._to(State.BACKOFF)
            delay = self._backoff_delay(self.quick_exits - QUICK_EXITS_TOLERATED + 1)
            self.log.warning("%s: crash loop (%d quick exits), next start in %.2fs",
                             self.name, self.quick_exits, delay)
            self.deadline = now + delay
            return
        self._to(State.EXITED, expected)
        self._spawn()

    def on_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            return
        self.deadline = None
        if self.lingering_pgid is not None:
            self._on_lingering_timer(now)
        elif self.state == State.STARTING and self.program.notify:
            self.log.warning("%s: no READY=1 within ready_timeout=%gs", self.name,
                             self.program.ready_timeout)
            self.ready_timed_out = True
            want = self.want
            self.stop()  # a failed start, counted once the process group is gone
            self.want = want
        elif self.state == State.STARTING:
            self._up()
        elif self.state == State.BACKOFF:
            if self.want == Want.UP:
                self._spawn()
        elif self.state == State.STOPPING and self.pid is not None and not self.kill_sent:
            self.log.warning("%s: still alive after stopwaitsecs=%gs, sending SIGKILL",
                             self.name, self.program.stopwaitsecs)
            self.kill_sent = True
            _signal_group(self.pid, signal.SIGKILL)

    def _on_lingering_timer(self, now: float) -> None:
        assert self.lingering is not None
        pgid = self.lingering.pgid
        if not self.lingering.alive():
            self.lingering = None
            self._stopped()
            return
        if not self.kill_sent and now >= self.kill_at:
            self.log.warning("%s: group %d outlived stopwaitsecs, sending SIGKILL",
                             self.name, pgid)
            self.kill_sent = True
            _signal_group(pgid, signal.SIGKILL)
        elif (self.kill_sent and not self.lingering.exact
              and now >= self.kill_at + AFTER_SIGKILL_S):
            # without a /proc of our own, killpg cannot tell the zombies their parent does
            # not reap from members: SIGKILL has had time to end every member that can run
            self.log.warning("%s: group %d still found %gs after SIGKILL, and /proc cannot "
                             "tell zombies from members: taken as stopped", self.name, pgid,
                             AFTER_SIGKILL_S)
            self.lingering = None
            self._stopped()
            return
        self.deadline = now + _GROUP_RECHECK_S

    def _stopped(self) -> None:
        """The process group of a STOPPING instance is gone."""
        if self.ready_timed_out:
            self.ready_timed_out = False
            self._failed_start("no READY=1 within ready_timeout")
            return
        self._to(State.STOPPED)
        if self.want == Want.UP:  # restart: stopped, now start again
            self._spawn()

    def on_ready(self) -> None:
        """READY=1 from the instance's process group (notify = true)."""
        if self.state == State.STARTING:
            self.deadline = None
            self._up()

    # -- internals ----------------------------------------------------------------------

    def _up(self) -> None:
        self._to(State.RUNNING)
        self.failed_starts = 0

    def _failed_start(self, why: str) -> None:
        self.failed_starts += 1
        self._to(State.BACKOFF)
        if self.want != Want.UP:
            self._to(State.STOPPED)
            return
        if self.failed_starts > self.program.startretries:
            self.log.error("%s: %s; giving up after %d attempts", self.name, why,
                           self.failed_starts)
            self.deadline = None
            self._to(State.FATAL)
            return
        delay = self._backoff_delay(self.failed_starts)
        self.log.warning("%s: %s; retry %d/%d in %.2fs", self.name, why, self.failed_starts,
                         self.program.startretries, delay)
        self.deadline = time.monotonic() + delay

    def _backoff_delay(self, attempt: int) -> float:
        """Exponential, +-10% jitter (so a fleet does not retry in lockstep), capped."""
        # the exponent is capped: quick exits count without end, and 2.0**1024 overflows
        base = self.program.backoff_initial * (2.0 ** min(max(attempt - 1, 0), 64))
        return float(min(self.program.backoff_max, base) * random.uniform(0.9, 1.1))

    def _spawn(self) -> None:
        """Start the process; a spawn error counts as a failed start."""
        self._to(State.STARTING)
        self.spawn_error = None
        self.spawnerr = ""
        if self.spawns:
            self.restarts += 1
        self.spawns += 1
        self.laststart = time.time()
        try:
            self._create_process()
        except OSError as exc:
            self._spawn_failed(self._spawn_text(exc))
            if exc.filename is not None:  # the child's own set-up: chdir or exec failed
                self._tell_program_log(f"supervisor: {self.spawnerr}\n")
            return
        except (SpawnError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            self._spawn_failed(str(exc))
            return
        self.started_at = time.monotonic()
        if self.program.notify:
            # RUNNING on READY=1 from the process group; the timer is only a give-up limit
            timeout = self.program.ready_timeout
            self.deadline = self.started_at + timeout if timeout else None
        elif self.program.startsecs == 0:
            self._up()
        else:
            self.deadline = self.started_at + self.program.startsecs

    def _spawn_text(self, exc: OSError) -> str:
        """supervisord's words for a failed chdir or exec in the child, which Python reports
        alike (``[Errno 2] No such file or directory: '/srv/app'``: the directory or the
        command?)."""
        if exc.filename is None or not exc.errno:
            return str(exc)
        code = errno.errorcode.get(exc.errno, str(exc.errno))
        if exc.filename == self.spec.directory:
            return f"couldn't chdir to {exc.filename}: {code}"
        return f"couldn't exec {exc.filename}: {code}"

    def _tell_program_log(self, line: str) -> None:
        """Where supervisord's child writes why it could not start (its stderr, so the
        stdout log with ``redirect_stderr``): the program's log, which is where its owner
        looks first, says why it never ran."""
        log_file = self.stderr_log if self.spec.stderr is not None else self.stdout_log
        if log_file is not None:
            log_file.write(line.encode(errors="replace"))

    def _spawn_failed(self, why: str) -> None:
        self.spawn_error = f"spawn error: {why}"
        self.spawnerr = why  # supervisord's text, without our prefix
        self.log.error("%s: %s", self.name, self.spawn_error)
        self.started_at = time.monotonic()
        self._failed_start(why)

    def environment(self) -> dict[str, str]:
        """The child's environment: the supervisor's, supervisord's variables, the config's."""
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env["SUPERVISOR_ENABLED"] = "1"
        if self.program.serverurl:
            env["SUPERVISOR_SERVER_URL"] = self.program.serverurl
        env["SUPERVISOR_PROCESS_NAME"] = self.spec.process_name
        env["SUPERVISOR_GROUP_NAME"] = self.spec.group
        if self.program.user:  # supervisord keeps root's HOME; a program as nobody gets its own
            record = _user_record(self.program.user)
            env.update(HOME=record.pw_dir, USER=record.pw_name, LOGNAME=record.pw_name)
        env.update(self.spec.environment)
        env["DAEMONKIT_PROGRAM"] = self.program.name
        env["DAEMONKIT_PROCESS_NUM"] = str(self.spec.process_num)
        if self.supervisor_id:
            env[SUPERVISOR_ID_ENV] = self.supervisor_id
        if self.program.notify and self.notify_address:
            env["NOTIFY_SOCKET"] = self.notify_address
        return env

    def _create_process(self) -> None:
        executable = resolve_command(self.spec)
        self.log.debug("%s: spawning %s %s", self.name, executable, list(self.spec.argv[1:]))
        uid = gid = None
        groups: list[int] | None = None
        if self.program.user:
            record = _user_record(self.program.user)
            if record.pw_uid != os.geteuid():
                uid, gid = record.pw_uid, record.pw_gid
                groups = os.getgrouplist(record.pw_name, record.pw_gid)
        if self.program.group:
            import grp

            gid = grp.getgrnam(self.program.group).gr_gid
        if uid is not None and self.spec.directory and not may_enter(
                self.spec.directory, uid, {gid, *(groups or ())} - {None}):
            # subprocess changes directory before it changes user; supervisord after, so a
            # directory the user may not enter fails the start there, and must here too
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), self.spec.directory)
        listen = self.loop.listen_socket(self)
        in_r, in_w = (None, None) if listen is not None else os.pipe2(os.O_CLOEXEC)
        out_r, out_w = (os.pipe2(os.O_CLOEXEC) if self._captures("stdout") else (None, None))
        err_r, err_w = (os.pipe2(os.O_CLOEXEC) if self._captures("stderr") else (None, None))
        request = SpawnRequest(
            executable, self.spec.argv, self.environment(),
            stdin=listen.fileno() if listen is not None else in_r, stdout=out_w,
            stderr=STDOUT if self.spec.stderr is None else err_w,
            cwd=self.spec.directory, uid=uid, gid=gid, groups=groups,
            umask=self.program.umask)
        try:
            self.child = self.loop.spawn(request, meanwhile=self._create_logs)
        except BaseException:
            for fd in (out_r, err_r, in_w):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in (out_w, err_w, in_r):
                if fd is not None:
                    os.close(fd)
        self.pid = self.child.pid
        if not self.child.helper:
            self.pidfd = os.pidfd_open(self.pid)
            self.loop.watch(self.pidfd, self._reap)
        if in_w is not None:
            os.set_blocking(in_w, False)
            self.stdin_fd = in_w
        if out_r is not None:
            self._relay(out_r, self.stdout_log, self.spec.stdout, "stdout")
        if err_r is not None and self.spec.stderr is not None:
            self._relay(err_r, self.stderr_log, self.spec.stderr, "stderr")

    def _create_logs(self) -> None:
        """The log files exist from the spawn on, as with supervisord (``tail -f`` finds
        them); created while the child is being made, the two take turns on the cores."""
        for log_file, channel in ((self.stdout_log, "stdout"), (self.stderr_log, "stderr")):
            if log_file is not None and self._captures(channel):
                log_file.touch()

    def _captures(self, channel: str) -> bool:
        log_spec = self.spec.stdout if channel == "stdout" else self.spec.stderr
        return log_spec is not None and (log_spec.path is not None or log_spec.syslog
                                         or self._reports(channel))

    def _reports(self, channel: str) -> bool:
        """Does the loop hear this output: an event listener's stdout (its protocol) or a
        channel with ``*_events_enabled``."""
        if channel == "stdout":
            return self.program.kind == "eventlistener" or self.program.stdout_events_enabled
        return self.program.stderr_events_enabled

    def _relay(self, fd: int, log_file: LogFile | None, log_spec: LogSpec,
               channel: str) -> None:
        os.set_blocking(fd, False)
        to_syslog = self.syslog if log_spec.syslog else None
        reports = self._reports(channel)

        def readable() -> None:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                if log_file is not None:
                    log_file.write(data)
                if to_syslog is not None:
                    to_syslog.send(self.spec.process_name, data)
                if reports:
                    self.loop.output(self, channel, data)
                return
            self.loop.unwatch(fd)  # EOF: the last writer (maybe a grandchild) is gone
            os.close(fd)

        self.loop.watch(fd, readable)

    def _reap(self) -> None:
        if self.pid is None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 255 << 8  # reaped elsewhere: the status is lost
        if pid == 0:
            return  # pidfd readable before the zombie is waitable: next wakeup
        self.on_exit(status)

    def adopt(self) -> None:
        """The spawn helper died before it reaped this process: watch it by pidfd (it is
        init's child now, so its exit status is lost with the helper)."""
        if self.pid is None or self.pidfd is not None:
            return
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self.on_exit(255 << 8)  # gone already
            return
        except OSError as exc:  # out of fds (ulimit -n, minfds): it runs, unwatched
            self.log.error("%s: cannot watch pid %d (%s): its exit will not be seen",
                           self.name, self.pid, exc)
            return
        self.loop.watch(self.pidfd, self._reap)

    def _close_pidfd(self) -> None:
        if self.pidfd is not None:
            self.loop.unwatch(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    def reopen_logs(self) -> None:
        for log_file in (self.stdout_log, self.stderr_log):
            if log_file is not None:
                log_file.reopen()

    def clear_logs(self) -> None:
        """supervisorctl's ``clear``: the logs and their rotated copies go, empty files stay."""
        for log_file in (self.stdout_log, self.stderr_log):
            if log_file is not None:
                log_file.clear()

    @property
    def lingering_pgid(self) -> int | None:
        return self.lingering.pgid if self.lingering is not None else None

    def kill_now(self) -> None:
        """Last resort (the supervisor is exiting and stop timed out): SIGKILL the group."""
        for pgid in (self.pid, self.lingering_pgid):
            if pgid is not None:
                _signal_group(pgid, signal.SIGKILL)

    def uptime_s(self) -> float | None:
        if self.state not in LIVE_STATES or self.started_at is None:
            return None
        return time.monotonic() - self.started_at

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "program": self.program.name,
            "group": self.spec.group,
            "namespec": self.spec.namespec,
            "process_num": self.spec.process_num,
            "state": self.state.value,
            "want": self.want.value,
            "pid": self.pid,
            "uptime_s": None if (u := self.uptime_s()) is None else round(u, 3),
            "restarts": self.restarts,
            "exit_status": self.exit_status,
            "stdout_logfile": self.spec.stdout.path,
            "stderr_logfile": self.spec.stderr.path if self.spec.stderr else None,
            "error": self.spawn_error,
        }


def _user_record(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        return pwd.getpwuid(int(user))
