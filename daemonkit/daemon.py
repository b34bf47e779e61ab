"""The ``Daemon`` base class: the hooks a service fills in, and their order inside the daemon.

A service subclasses :class:`Daemon`, fills in some of ``setup_privileged``, ``setup``,
``run``, ``reload`` and ``shutdown``, and calls ``main()``; the CLI (``daemonkit.cli``) and
the launcher (``daemonkit.launcher``) do the rest. What runs inside the daemon, in order
(:meth:`Daemon.serve`):

1. logging, process title, signal handlers (TERM/INT stop, HUP reload, USR1 reopen logs);
2. the control socket is bound (still privileged, beside the pidfile);
3. ``setup_privileged()``; then the uid/gid drop, if one was asked for;
4. ``setup()``; only now does ``start`` return, or ``READY=1`` go to systemd;
5. ``run()`` in the main thread, until it returns, raises, or a stop request unwinds it;
6. ``shutdown()``, always, with stop requests no longer interrupting anything.

An exception in 3 or 4 is reported to ``start`` (type and message) and the daemon exits 1.
``shutdown()`` is not called then: a half-done setup cleans up after itself, as a context
manager's ``__enter__`` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from .control import ControlServer
from .errors import StopDaemon
from .lifecycle import Critical, SignalGate
from .logsetup import LogTarget
from .notify import Notifier, watchdog_interval_s
from .privileges import Identity, drop_privileges
from .readiness import ReadinessWriter
from .states import ActionTracker, State, StateMachine


@dataclass
class Launch:
    """What the command process prepared for the daemon (resolved paths, opened files)."""

    pidfile_path: str
    control_path: str
    log: LogTarget
    identity: Identity | None


class Daemon:
    """Base class of a daemonkit service. Class attributes are defaults the CLI can override."""

    #: service name in messages and process titles; default: the script's name without .py
    name: ClassVar[str | None] = None
    #: pidfile path; default ``/run/NAME.pid`` as root, else ``$XDG_RUNTIME_DIR`` or /tmp
    pidfile: ClassVar[str | None] = None
    #: user and group to drop to after ``setup_privileged()`` (``--user``/``--group``)
    user: ClassVar[str | None] = None
    group: ClassVar[str | None] = None
    workdir: ClassVar[str] = "/"
    umask: ClassVar[int] = 0o022
    start_timeout: ClassVar[float] = 10.0
    stop_timeout: ClassVar[float] = 10.0
    log_file: ClassVar[str | None] = None
    log_level: ClassVar[str] = "INFO"

    def __init__(self, options: argparse.Namespace | None = None) -> None:
        self.options = options if options is not None else argparse.Namespace()
        #: the options once configure() has resolved them (set by the command that prepares
        #: the launch): ``restart`` compares its own with the running daemon's, which the
        #: control socket's status reports
        self.command_options: dict[str, Any] | None = None
        self.log = logging.getLogger(self.service_name())
        #: set on SIGTERM/SIGINT and when the daemon ends; worker threads watch it
        self.stopping = threading.Event()
        self._gate: SignalGate | None = None
        self._notifier = Notifier(None)
        self._launch: Launch | None = None
        self._states = StateMachine()
        self._actions = ActionTracker()

    # -- hooks for services -------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the service's own command-line options (they land in ``self.options``)."""

    def configure(self) -> None:
        """Validate options in the command process, before anything forks.

        The working directory is still the caller's: resolve relative paths here. Raise
        :class:`daemonkit.ConfigError` for a one-line error and exit 6 from ``start``.
        ``restart`` calls it before stopping the running daemon, so that a bad option leaves
        that daemon running: only check and read here, never take what the running daemon
        holds (its port, its database lock). It may be called twice in one process.
        """

    def setup_privileged(self) -> None:
        """Runs inside the daemon as the invoking user (root), before the privilege drop."""

    def setup(self) -> None:
        """Runs inside the daemon before it counts as ready; raising makes ``start`` fail."""

    def run(self) -> None:
        """The service's main loop, in the main thread; returning ends the daemon (exit 0)."""
        self.stopping.wait()

    def reload(self) -> None:
        """SIGHUP / ``reload``; raising keeps the old state and makes ``reload`` exit 1."""

    def shutdown(self) -> None:
        """Cleanup after ``run()`` ended for whatever reason; stop requests do not cut it."""

    def reopen_logs(self) -> None:
        """SIGUSR1 / ``reopen-logs``, after the core reopened its own log file (main thread):
        reopen any other file the service writes, so logrotate can move it."""

    def status_info(self) -> dict[str, Any]:
        """Extra ``status`` fields, computed in the daemon (control thread: be thread-safe)."""
        return {}

    def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a service-specific control-socket command (control thread)."""
        return {"ok": False, "error": f"unknown command {request.get('cmd')!r}"}

    def handle_command(self, action: str) -> int | None:
        """Take over a CLI action in the command process; None means "do the default"."""
        return None

    def healthy(self) -> bool:
        """Whether systemd's watchdog should be fed now; override to check your loop."""
        return True

    # -- API for services -----------------------------------------------------------------------

    def critical(self) -> Critical:
        """A block of the main thread that SIGTERM does not cut: the stop waits for its end."""
        if self._gate is None:
            raise RuntimeError("critical() is available once the daemon runs")
        return self._gate.critical()

    @classmethod
    def service_name(cls) -> str:
        if cls.name:
            return cls.name
        return os.path.splitext(os.path.basename(sys.argv[0] or cls.__name__))[0] or "daemon"

    @classmethod
    def main(cls, argv: list[str] | None = None) -> NoReturn:
        """Parse ``argv`` (default ``sys.argv[1:]``), run the action, exit with its LSB code."""
        from .cli import run_cli

        sys.exit(run_cli(cls, sys.argv[1:] if argv is None else argv))

    # -- inside the daemon ----------------------------------------------------------------------

    def serve(self, launch: Launch, ready: ReadinessWriter | None) -> int:
        """Run the service's life cycle; returns the process exit status."""
        self._launch = launch
        launch.log.configure_logging()
        _set_process_title(f"{self.service_name()}: main")
        self._notifier = Notifier.from_environment()
        gate = SignalGate(
            {"reload": self._do_reload, "reopen": self._do_reopen},
            on_stop_signal=self._on_stop_signal,
            stopping=self.stopping,
        )
        self._gate = gate
        gate.install()
        # The control socket answers from the start ("starting"), so a concurrent `start` or
        # `status` can wait for readiness instead of guessing from the pidfile alone.
        control = ControlServer(launch.control_path, self._answer_control)
        try:
            control.bind()
            control.start_thread()
            self.setup_privileged()
            if launch.identity is not None:
                control.hand_over(launch.identity.uid, launch.identity.gid)
                launch.log.chown(launch.identity.uid, launch.identity.gid)
                drop_privileges(launch.identity)
            self.setup()
        except BaseException as exc:  # reported to `start`, whatever it was
            gate.begin_shutdown()  # from here on a SIGTERM from `start` cannot cut the cleanup
            if isinstance(exc, StopDaemon):
                message = f"stopped by signal {exc.signum} during setup()"
                self.log.warning(message)
            else:
                message = f"{type(exc).__name__}: {exc}"
                self.log.exception("setup failed")
            self._states.enter(State.FAILED)
            control.close()
            _report(ready, message, 1)
            return 1
        gate.hold()  # a stop from here until run() starts waits for gate.open()
        self._states.enter(State.RUNNING)
        if ready is not None:
            ready.send(ready=True)
            ready.close()
        self._notifier.ready(status=f"{self.service_name()} running")
        self._start_watchdog()
        self.log.info("%s ready (pid %d)", self.service_name(), os.getpid())
        exit_code = self._run_until_stopped(gate)
        control.close()
        self.log.info("%s exiting with status %d", self.service_name(), exit_code)
        return exit_code

    def _run_until_stopped(self, gate: SignalGate) -> int:
        exit_code = 0
        try:
            gate.open()  # serves a HUP that arrived during setup(), or a deferred stop
            self.run()
        except StopDaemon as stop:
            self.log.info("stopping on signal %d", stop.signum)
        except SystemExit as exc:
            exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            self.log.exception("uncaught exception in run()")
            exit_code = 1
        finally:
            gate.begin_shutdown()
            self._states.enter(State.STOPPING)
            self.stopping.set()
            self._notifier.stopping()
        try:
            self.shutdown()
        except BaseException:
            self.log.exception("uncaught exception in shutdown()")
            exit_code = exit_code or 1
        return exit_code

    def _on_stop_signal(self, signum: int) -> None:
        self.log.info("received signal %d, stopping", signum)
        self._notifier.stopping()

    def _do_reload(self) -> None:
        """Main thread, at a safe point (see lifecycle). Never raises."""
        self._actions.begin("reload")
        self._notifier.reloading()
        try:
            self.reload()
            result: dict[str, Any] = {"ok": True}
            self.log.info("reloaded")
        except BaseException as exc:  # noqa: BLE001 - even SystemExit: the daemon lives on
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.log.error("reload failed, keeping the old state: %s", result["error"])
        self._notifier.ready()
        self._actions.finish("reload", result)

    def _do_reopen(self) -> None:
        """Main thread, at a safe point. A failed reopen keeps writing to the old file."""
        assert self._launch is not None
        self._actions.begin("reopen")
        result: dict[str, Any] = {"ok": True}
        try:
            self._launch.log.reopen()
        except OSError as exc:
            result = {"ok": False, "error": f"cannot reopen {self._launch.log.path}: "
                                            f"{exc.strerror}; still writing to the old file"}
            self.log.error("%s", result["error"])
        try:
            self.reopen_logs()
        except Exception as exc:  # noqa: BLE001 - it runs wherever the main thread was
            result = {"ok": False, "error": f"reopen_logs(): {type(exc).__name__}: {exc}"}
            self.log.error("%s", result["error"])
        self._actions.finish("reopen", result)

    def _answer_control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Control thread."""
        command = request["cmd"]
        timeout_s = float(request.get("timeout", 30.0))
        if command == "status":
            return self._status_reply()
        if command == "wait-ready":
            state = self._states.wait_until_settled(timeout_s)
            return {"ok": state is State.RUNNING, "state": state.value, "pid": os.getpid()}
        if self._states.wait_until_settled(timeout_s) is not State.RUNNING:
            return {"ok": False, "error": f"cannot {command}: {self._states.current.value}"}
        if command in ("reload", "reopen-logs"):
            action = "reload" if command == "reload" else "reopen"
            return self._act_and_wait(action, timeout_s)
        return self.handle_control(request)

    def _status_reply(self) -> dict[str, Any]:
        state = self._states.current
        reply: dict[str, Any] = {"ok": True, "pid": os.getpid(), "state": state.value,
                                 "options": self.command_options}
        if state is State.RUNNING:
            try:
                reply["info"] = self.status_info()
            except Exception as exc:  # noqa: BLE001 - a service's bug must not kill status
                reply["info"] = {"status_error": f"{type(exc).__name__}: {exc}"}
        return reply

    def _act_and_wait(self, action: str, timeout_s: float) -> dict[str, Any]:
        assert self._gate is not None
        ticket = self._actions.ticket(action)
        self._gate.request(action)
        result = self._actions.wait(action, ticket, timeout_s)
        if result is None:
            return {"ok": False, "pending": True,
                    "error": f"not done after {timeout_s:g}s (waiting for a critical() block "
                             "to end); it will run when the block ends"}
        return result

    def _start_watchdog(self) -> None:
        interval = watchdog_interval_s()
        if interval is None or not self._notifier.enabled:
            return

        def feed() -> None:
            while not self.stopping.wait(interval):
                if threading.main_thread().is_alive() and self.healthy():
                    self._notifier.watchdog()

        threading.Thread(target=feed, name="daemonkit-watchdog", daemon=True).start()


def _report(ready: ReadinessWriter | None, message: str, exit_code: int) -> None:
    if ready is not None:
        ready.send(error=message, exit=exit_code)
        ready.close()


def _set_process_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


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
