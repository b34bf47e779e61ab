"""Turning the command process into a daemon, and waiting until it is really ready.

``start`` (the command process, P) holds the pidfile lock and a readiness pipe, then forks C.
C enters python-daemon's ``DaemonContext``, which forks again, calls ``setsid`` and forks once
more (the classic double fork: the daemon can never reacquire a controlling terminal), sets
umask and working directory, closes every descriptor except the pidfile lock, the readiness
pipe and the log file, and redirects stdio. The final process D binds its control socket,
writes its pid into the pidfile and runs the service (``runtime``), which writes ``ready`` or
the error into the pipe. P reads the pipe until one of those, until EOF (D died without a
word) or its deadline.

We fork C ourselves because ``DaemonContext.open`` ends its caller with ``os._exit``, and P
must live on to report. We always detach (``detach_process=True``): python-daemon's guess
("parent is init or stdin is a socket, so don't") is wrong under systemd's
``Type=forking``; foreground is the separate ``run`` action. DaemonContext is told nothing about
the pidfile: the pid is written by the runtime, once the control socket answers for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from . import process
from .pidfile import PidFile
from .readiness import Outcome, ReadinessWriter, wait_for_readiness
from .runtime import Runtime

if TYPE_CHECKING:
    from .daemon import Daemon
    from .launch import Launch


def launch_detached(daemon: Daemon, pidfile: PidFile, launch: Launch) -> Outcome:
    """Fork and detach the daemon; returns what it reported. Called with the lock held."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    log_offset = _log_size(launch)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # C, then D: never returns
        os.close(read_end)
        _become_daemon(daemon, pidfile, launch, ReadinessWriter(write_end))
    os.close(write_end)
    pidfile.forget()  # the lock lives on in the child's copy of the descriptor
    outcome = Outcome()
    try:
        with _interruptible():
            wait_for_readiness(read_end, daemon.options.start_timeout, outcome)
    except BaseException:
        # `start` itself was interrupted (Ctrl-C, an init script's timeout): a daemon nobody
        # will hear about must not keep running
        process.make_sure_gone(outcome.pid, daemon.options.stop_timeout, grace_s=0.0)
        raise
    os.close(read_end)
    os.waitpid(child, 0)  # C exits right after its fork (or after reporting a failure)
    if outcome.ready:
        return outcome
    _explain_failure(daemon, outcome, launch, log_offset)
    process.make_sure_gone(outcome.pid, daemon.options.stop_timeout,
                           grace_s=0.0 if outcome.timed_out else 2.0)
    return outcome  # the caller removes what the failed daemon left (pidfile, socket)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """While waiting for readiness, SIGTERM and SIGHUP interrupt like Ctrl-C does."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {signum: signal.signal(signum, interrupt)
                for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _become_daemon(daemon: Daemon, pidfile: PidFile, launch: Launch,
                   ready: ReadinessWriter) -> None:
    exit_code = 1
    try:
        import daemon as python_daemon

        _no_needless_owner_change(python_daemon)
        log_stream = _log_stream(launch)
        keep = [fd for fd in (pidfile.fileno, ready.fd, launch.log.fd) if fd is not None]
        keep += [sock.fileno() for sock in launch.passed_sockets()]
        context = python_daemon.DaemonContext(
            detach_process=True,
            working_directory=daemon.options.workdir,
            umask=daemon.options.umask,
            files_preserve=keep,
            stdout=log_stream,
            stderr=log_stream,
            signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
        )
        context.open()
        exit_code = Runtime(daemon, launch, pidfile, ready).serve()
        if pidfile.i_am_locking():  # a successor nobody took over never held it
            pidfile.release()
    except BaseException as exc:  # report anything, whatever it is, then die quietly
        if _in_forked_child():
            exit_code = _end_of_forked_child(exc)
        else:
            ready.send(error=f"{type(exc).__name__}: {exc}", exit=1)
            logging.getLogger("daemonkit").exception("daemon failed")
    finally:
        _exit(exit_code)


def _in_forked_child() -> bool:
    from .runtime import current_runtime

    runtime = current_runtime()
    return runtime is not None and runtime.in_forked_child()


def _end_of_forked_child(exc: BaseException) -> int:
    """The exit status of a child the service forked without exec, which ended by raising out
    of the runtime (``sys.exit()`` in ``setup()``): as that of a plain Python process."""
    if isinstance(exc, SystemExit):
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    sys.excepthook(type(exc), exc, exc.__traceback__)
    return 1


def _no_needless_owner_change(python_daemon: Any) -> None:
    """Keep ``DaemonContext.open()`` from calling setgid/setuid when there is nothing to change.

    It always calls them, with the ids the process already has when none are given. Under a
    hardened systemd unit (``SystemCallFilter=~@privileged`` with ``SystemCallErrorNumber=
    EPERM``, as in init/systemd/*-forking.service) setuid fails even then, and ``start`` died
    with "Unable to change process owner". daemonkit asks DaemonContext for no owner change
    (its own drop, with supplementary groups, is ``privileges.drop_privileges``). Patched in
    this process only: C, which never returns to the command's code.
    """
    change_process_owner = python_daemon.daemon.change_process_owner

    def change_owner_if_needed(uid: int, gid: int, initgroups: bool = False) -> None:
        if set(os.getresuid()) == {uid} and set(os.getresgid()) == {gid}:
            return
        change_process_owner(uid, gid, initgroups)

    python_daemon.daemon.change_process_owner = change_owner_if_needed


def _log_stream(launch: Launch) -> BinaryIO | None:
    if launch.log.fd is None:
        return None
    return open(launch.log.fd, "ab", buffering=0, closefd=False)


def _log_size(launch: Launch) -> int:
    return os.fstat(launch.log.fd).st_size if launch.log.fd is not None else 0


def _explain_failure(daemon: Daemon, outcome: Outcome, launch: Launch, log_offset: int) -> None:
    if outcome.error is not None:
        return
    if outcome.timed_out:
        outcome.error = (f"not ready after {daemon.options.start_timeout:g}s "
                         f"(setup() did not finish); stopped it")
    else:
        outcome.error = f"{launch.name} exited during startup without reporting why"
    tail = _log_tail(launch, log_offset)
    if tail:
        outcome.error += f"; last log line: {tail}"


def _log_tail(launch: Launch, offset: int) -> str | None:
    if launch.log.path is None:
        return None
    try:
        with open(launch.log.path, "rb") as log_file:
            log_file.seek(offset)
            lines = log_file.read()[-4096:].decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None


# -- foreground ----------------------------------------------------------------------------------


def serve_foreground(daemon: Daemon, pidfile: PidFile, launch: Launch) -> int:
    """``run``: no fork, no detach (systemd ``Type=notify``/``simple``, containers, debugging).

    As PID 1 (a container's init), a process must reap orphans and forward signals; the
    service is then run in a child and this process becomes a minimal init (see ``init``).
    """
    os.umask(daemon.options.umask)
    os.chdir(daemon.options.workdir)
    launch.log.attach_stdio()
    if os.getpid() == 1:
        from .init import run_as_init

        return run_as_init(lambda: _serve_and_release(daemon, pidfile, launch),
                           title=f"{launch.name}: init")
    return _serve_and_release(daemon, pidfile, launch)


def _serve_and_release(daemon: Daemon, pidfile: PidFile, launch: Launch) -> int:
    """Serve, release, and end the process as the detached daemon does: nothing of the
    service (a thread stuck in a blocking call, an atexit handler) outlives its shutdown."""
    exit_code = 1
    try:
        exit_code = Runtime(daemon, launch, pidfile, None).serve()
    except BaseException as exc:  # logged; the exit status says it failed
        if _in_forked_child():
            exit_code = _end_of_forked_child(exc)
        else:
            logging.getLogger("daemonkit").exception("daemon failed")
    finally:
        if pidfile.i_am_locking():
            pidfile.release()
        _exit(exit_code)


def _exit(exit_code: int) -> NoReturn:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(exit_code)  # never return into the command's code (or its atexit handlers)
