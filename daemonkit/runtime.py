"""Inside the daemon: a service's life cycle, run by an object of its own.

The machinery lives here and not in the ``Daemon`` class, so the names a service picks for
its own methods (``serve``, ``state``, ``control``, ...) can never collide with it. What runs,
in order (:meth:`Runtime.serve`):

1. logging, process title, systemd notifier;
2. the control socket is bound (still privileged, beside the pidfile); only then is the pid
   written into the pidfile, so whoever reads a pid finds the socket that answers for it;
   the exit record is opened (``exitrecord``);
3. signal handling: the main-thread gate (``lifecycle``) for a sync ``run()``, the loop's
   (``aiolifecycle``) for an async one;
4. ``setup_privileged()``; then the uid/gid drop, if one was asked for;
5. ``setup()``; only now does ``start`` return, or ``READY=1`` go to systemd;
6. ``run()``, until it returns, raises, or a stop request unwinds (or cancels) it;
7. ``shutdown()``, always, with stop requests no longer interrupting anything;
8. the exit record says how it ended.

An exception in 4 or 5 is reported to ``start`` (type and message) and the daemon exits 1.
``shutdown()`` is not called then: a half-done setup cleans up after itself, as a context
manager's ``__enter__`` does.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from . import listen
from .control import FDS, ControlServer, RequestError, number_field
from .errors import StopDaemon
from .exitrecord import ExitRecordWriter
from .hooks import HookCaller, is_async
from .lifecycle import Critical, SignalGate
from .notify import Notifier, watchdog_interval_s
from .privileges import drop_privileges
from .states import ActionTracker, State, StateMachine

if TYPE_CHECKING:
    from .aiolifecycle import AsyncCritical, AsyncGate
    from .daemon import Daemon
    from .launch import Launch
    from .pidfile import PidFile
    from .readiness import ReadinessWriter

#: the one runtime of this process (a process holds one pidfile and one set of handlers)
_current: Runtime | None = None

#: longest wait a control request may ask for
_MAX_WAIT_S = 3600.0


def current_runtime() -> Runtime | None:
    return _current


class Runtime:
    """Runs one service inside the daemon process; returns its exit status."""

    def __init__(self, daemon: Daemon, launch: Launch, pidfile: PidFile,
                 ready: ReadinessWriter | None) -> None:
        self.daemon = daemon
        self.launch = launch
        self.pidfile = pidfile
        self.ready = ready
        self.log = daemon.log
        self.states = StateMachine()
        self.actions = ActionTracker()
        self.notifier = Notifier(None)
        self.hooks = HookCaller()
        self.gate: SignalGate | AsyncGate | None = None
        self.control = ControlServer(launch.own_control_path, self.answer)
        self.exit_record = ExitRecordWriter(launch.exit_record_path)
        self.asynchronous = is_async(daemon.run)
        self.end_reason = "run() returned"
        self.listeners: list[socket.socket] = []
        self._taken_over = threading.Event()
        self._handover_until = 0.0  # monotonic time until which a handover is under way

    # -- the life cycle ------------------------------------------------------------------------

    def serve(self) -> int:
        global _current
        _current = self
        self.launch.log.configure_logging()
        _set_process_title(f"{self.launch.name}: main")
        self.notifier = Notifier.from_environment()
        try:
            self._bind_control()
            if self.asynchronous:
                exit_code = self.hooks.runner().run(self._live_async())
            else:
                exit_code = self._live()
        finally:
            self.control.close()
            self.hooks.close()
        self.log.info("%s exiting with status %d", self.launch.name, exit_code)
        self.exit_record.close(exit_code, self.end_reason)
        return exit_code

    def _bind_control(self) -> None:
        """Step 2; a failure is a failed start, reported like one from setup(). A successor
        (handover restart) holds no lock yet: it writes its pid once it takes over."""
        try:
            self.control.bind()
        except BaseException as exc:
            self._report_failure(f"{type(exc).__name__}: {exc}")
            raise
        self.control.start_thread()
        if not self.launch.successor:
            self._own_the_pidfile()
        if self.ready is not None:
            self.ready.send(pid=os.getpid())

    def _own_the_pidfile(self) -> None:
        self.pidfile.write_pid(os.getpid())
        try:
            self.exit_record.open(os.getpid(), self.launch.log.path)
        except OSError as exc:
            self.log.warning("no exit record at %s: %s", self.exit_record.path, exc)

    def _open_listeners(self) -> None:
        """Before setup_privileged(): sockets passed in are used, the rest bound (as root)."""
        passed = dict(self.launch.sockets)
        if not self.launch.listen:
            self.listeners = list(passed.values())
        else:
            self.listeners = [passed.pop(address.key) if address.key in passed
                              else listen.bind(address) for address in self.launch.listen]
            for sock in passed.values():
                sock.close()  # the replaced daemon listened there; this one does not
        self.daemon.listeners = list(self.listeners)

    def _live(self) -> int:
        """Steps 3-7 for a sync ``run()``."""
        gate = SignalGate({"reload": self._reload, "reopen": self._reopen},
                          on_stop_signal=self._on_stop_signal, stopping=self.daemon.stopping)
        self.gate = gate
        gate.install()
        try:
            self._open_listeners()
            self.hooks.call(self.daemon.setup_privileged)
            self._drop_privileges()
            self.hooks.call(self.daemon.setup)
        except BaseException as exc:  # noqa: BLE001 - reported to `start`, whatever it was
            gate.begin_shutdown()  # from here on a SIGTERM from `start` cannot cut the cleanup
            return self._setup_failed(exc)
        gate.hold()  # a stop from here until run() starts waits for gate.open()
        self._announce_ready()
        exit_code = 0
        try:
            gate.open()  # serves a HUP that arrived during setup(), or a deferred stop
            self.daemon.run()
            if gate.stop_signal is not None:  # run() saw `stopping` and returned by itself
                self._stopped_by(gate.stop_signal)
        except StopDaemon as stop:
            self._stopped_by(stop.signum)
        except SystemExit as exc:
            exit_code = _exit_status(exc)
            self.end_reason = f"run() called sys.exit({exc.code!r})"
        except BaseException as exc:
            self.log.exception("uncaught exception in run()")
            exit_code = 1
            self.end_reason = f"run() raised {type(exc).__name__}: {exc}"
        finally:
            gate.begin_shutdown()
            self._enter_shutdown()
        try:
            self.hooks.call(self.daemon.shutdown)
        except BaseException as exc:  # noqa: BLE001 - logged, and the exit status says so
            return self._shutdown_failed(exc, exit_code)
        return exit_code

    async def _live_async(self) -> int:
        """Steps 3-7 for an async ``run()``, in the loop the runtime keeps for the daemon."""
        import asyncio

        from .aiolifecycle import AsyncGate

        self.hooks.loop = asyncio.get_running_loop()
        gate = AsyncGate({"reload": self._reload_async, "reopen": self._reopen_async},
                         on_stop_signal=self._on_stop_signal_in_loop)
        self.gate = gate
        life = asyncio.current_task()
        assert life is not None
        gate.install(life)
        try:
            self._open_listeners()
            await self.hooks.call_async(self.daemon.setup_privileged)
            self._drop_privileges()
            await self.hooks.call_async(self.daemon.setup)
        except BaseException as exc:  # noqa: BLE001 - reported to `start`, whatever it was
            gate.begin_shutdown()
            if isinstance(exc, asyncio.CancelledError) and gate.stop_signal is not None:
                life.uncancel()
                exc = StopDaemon(gate.stop_signal)
            return self._setup_failed(exc)
        gate.hold()
        self._announce_ready()
        exit_code = 0
        run_task = asyncio.ensure_future(self.hooks.call_async(self.daemon.run))
        gate.open(run_task)
        try:
            await run_task  # a stop cancels run_task, never this task
            if gate.stop_signal is not None:  # run() saw `stopping` and returned by itself
                self.end_reason = f"stopped by {_signal_name(gate.stop_signal)}"
        except asyncio.CancelledError:
            if gate.stop_signal is None:
                raise  # cancelled by someone else: let asyncio report it
            self.end_reason = f"stopped by {_signal_name(gate.stop_signal)}"
        except SystemExit as exc:
            exit_code = _exit_status(exc)
            self.end_reason = f"run() called sys.exit({exc.code!r})"
        except BaseException as exc:  # logged, and the exit status says so
            self.log.error("uncaught exception in run()", exc_info=exc)
            exit_code = 1
            self.end_reason = f"run() raised {type(exc).__name__}: {exc}"
        finally:
            gate.begin_shutdown()
            self._enter_shutdown()
        if gate.acting is not None:  # a reload or reopen started before the stop ends first
            await asyncio.wait([gate.acting])
        try:
            await self.hooks.call_async(self.daemon.shutdown)
        except BaseException as exc:  # noqa: BLE001 - logged, and the exit status says so
            return self._shutdown_failed(exc, exit_code)
        finally:
            gate.uninstall()
        return exit_code

    def _drop_privileges(self) -> None:
        identity = self.launch.identity
        if identity is None:
            return
        self.control.hand_over(identity.uid, identity.gid)
        self.launch.log.chown(identity.uid, identity.gid)
        drop_privileges(identity)

    def _setup_failed(self, exc: BaseException) -> int:
        if isinstance(exc, StopDaemon):
            message = f"stopped by signal {exc.signum} during setup()"
            self.log.warning(message)
        else:
            message = f"{type(exc).__name__}: {exc}"
            self.log.error("setup failed", exc_info=exc)
        self.end_reason = f"setup() failed: {message}"
        self.states.enter(State.FAILED)
        self._report_failure(message)
        return 1

    def _report_failure(self, message: str) -> None:
        if self.ready is not None:
            self.ready.send(error=message, exit=1)
            self.ready.close()

    def _announce_ready(self) -> None:
        self.states.enter(State.RUNNING)
        if self.ready is not None:
            self.ready.send(ready=True)
            self.ready.close()
        self.notifier.ready(status=f"{self.launch.name} running")
        self._start_watchdog()
        if self.launch.successor:
            self._await_take_over()
        self.log.info("%s ready (pid %d)", self.launch.name, os.getpid())

    def _enter_shutdown(self) -> None:
        self.states.enter(State.STOPPING)
        self.daemon.stopping.set()
        self.notifier.stopping()

    def _shutdown_failed(self, exc: BaseException, exit_code: int) -> int:
        self.log.error("uncaught exception in shutdown()", exc_info=exc)
        self.end_reason += f"; shutdown() raised {type(exc).__name__}: {exc}"
        return exit_code or 1

    def _on_stop_signal(self, signum: int) -> None:
        """The sync gate's watcher thread, once per stop: systemd hears of it at once (the
        main thread logs it, once, when the stop takes effect: this thread may not get to
        run before the process ends)."""
        self.notifier.stopping()

    def _stopped_by(self, signum: int) -> None:
        self.log.info("received %s, stopping", _signal_name(signum))
        self.end_reason = f"stopped by {_signal_name(signum)}"

    def _on_stop_signal_in_loop(self, signum: int) -> None:
        self.daemon.stopping.set()
        self.notifier.stopping()
        self.log.info("received %s, stopping", _signal_name(signum))

    def critical(self) -> Critical | AsyncCritical:
        if self.gate is None:
            raise RuntimeError("critical() is available once the daemon runs")
        return self.gate.critical()

    # -- reload and reopen -------------------------------------------------------------------

    def _reload(self) -> None:
        """Main thread, at a safe point (see lifecycle). Never raises."""
        self.actions.begin("reload")
        self.notifier.reloading()
        try:
            self.hooks.call(self.daemon.reload)
            result = self._reloaded()
        except BaseException as exc:  # noqa: BLE001 - even SystemExit: the daemon lives on
            result = self._reload_failed(exc)
        self.notifier.ready()
        self.actions.finish("reload", result)

    async def _reload_async(self) -> None:
        self.actions.begin("reload")
        self.notifier.reloading()
        try:
            await self.hooks.call_async(self.daemon.reload)
            result = self._reloaded()
        except BaseException as exc:  # noqa: BLE001 - even SystemExit: the daemon lives on
            result = self._reload_failed(exc)
        self.notifier.ready()
        self.actions.finish("reload", result)

    def _reloaded(self) -> dict[str, Any]:
        self.log.info("reloaded")
        return {"ok": True}

    def _reload_failed(self, exc: BaseException) -> dict[str, Any]:
        error = f"{type(exc).__name__}: {exc}"
        self.log.error("reload failed, keeping the old state: %s", error)
        return {"ok": False, "error": error}

    def _reopen(self) -> None:
        """Main thread, at a safe point. A failed reopen keeps writing to the old file."""
        self.actions.begin("reopen")
        result = self._reopen_core_log()
        try:
            self.hooks.call(self.daemon.reopen_logs)
        except Exception as exc:  # noqa: BLE001 - it runs wherever the main thread was
            result = self._reopen_failed(exc)
        self.actions.finish("reopen", result)

    async def _reopen_async(self) -> None:
        self.actions.begin("reopen")
        result = self._reopen_core_log()
        try:
            await self.hooks.call_async(self.daemon.reopen_logs)
        except Exception as exc:  # noqa: BLE001 - reported to reopen-logs
            result = self._reopen_failed(exc)
        self.actions.finish("reopen", result)

    def _reopen_core_log(self) -> dict[str, Any]:
        log = self.launch.log
        try:
            log.reopen()
        except OSError as exc:
            error = f"cannot reopen {log.path}: {exc.strerror}; still writing to the old file"
            self.log.error("%s", error)
            return {"ok": False, "error": error}
        return {"ok": True}

    def _reopen_failed(self, exc: Exception) -> dict[str, Any]:
        error = f"reopen_logs(): {type(exc).__name__}: {exc}"
        self.log.error("%s", error)
        return {"ok": False, "error": error}

    # -- the control socket (its threads) ------------------------------------------------------

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request["cmd"]
        timeout_s = number_field(request, "timeout", 30.0, 0.0, _MAX_WAIT_S)
        if command == "take-over":
            return self._take_over(request[FDS])
        if command == "handover":
            return self._handover()
        if command == "status":
            return self._status_reply(min(timeout_s, 10.0))
        if command == "wait-ready":
            state = self.states.wait_until_settled(timeout_s)
            return {"ok": state is State.RUNNING, "state": state.value, "pid": os.getpid()}
        if self.states.wait_until_settled(timeout_s) is not State.RUNNING:
            return {"ok": False, "error": f"cannot {command}: {self.states.current.value}"}
        if command in ("reload", "reopen-logs"):
            return self._act_and_wait("reload" if command == "reload" else "reopen", timeout_s)
        service_request = {key: value for key, value in request.items() if key != FDS}
        reply = self.hooks.call_from_thread(self.daemon.handle_control, timeout_s,
                                            service_request)
        if not isinstance(reply, dict):
            raise RequestError(f"handle_control() answered {type(reply).__name__}, not a dict")
        return reply

    def _status_reply(self, timeout_s: float) -> dict[str, Any]:
        state = self.states.current
        reply: dict[str, Any] = {"ok": True, "pid": os.getpid(), "state": state.value,
                                 "options": self.launch.options}
        if state is State.RUNNING:
            try:
                reply["info"] = self.hooks.call_from_thread(self.daemon.status_info, timeout_s)
            except Exception as exc:  # noqa: BLE001 - a service's bug must not kill status
                reply["info"] = {"status_error": f"{type(exc).__name__}: {exc}"}
        return reply

    def _act_and_wait(self, action: str, timeout_s: float) -> dict[str, Any]:
        assert self.gate is not None
        ticket = self.actions.ticket(action)
        self.gate.request(action)
        result = self.actions.wait(action, ticket, timeout_s)
        if result is None:
            return {"ok": False, "pending": True,
                    "error": f"not done after {timeout_s:g}s (waiting for a critical() block "
                             "to end); it will run when the block ends"}
        return result

    # -- handover restart ----------------------------------------------------------------------

    def _handover(self) -> dict[str, Any]:
        """The listening sockets, for the daemon that ``restart`` starts in this one's place:
        passed (SCM_RIGHTS), never closed, so no connection is refused meanwhile. One
        restart at a time: another is refused until this one is done or given up."""
        if self.states.current is not State.RUNNING:
            return {"ok": False, "error": f"cannot hand over: {self.states.current.value}"}
        now = time.monotonic()
        if now < self._handover_until:
            return {"ok": False, "error": "another restart is already under way"}
        self._handover_until = now + self._succession_deadline_s()
        return {"ok": True, "addresses": [listen.address_of(s) for s in self.listeners],
                FDS: [sock.fileno() for sock in self.listeners]}

    def _take_over(self, fds: list[int]) -> dict[str, Any]:
        """A successor, once its predecessor is gone: the restart command passes the pidfile's
        lock (it held it in between); from now on this daemon is the one of the pidfile."""
        if not self.launch.successor or self.pidfile.i_am_locking():
            return {"ok": False, "error": "nothing to take over"}
        if len(fds) != 1:
            return {"ok": False, "error": "take-over needs the pidfile's locked descriptor"}
        self.pidfile.adopt(fds.pop())
        self._own_the_pidfile()
        self.control.move_to(self.launch.control_path)
        self._taken_over.set()
        self.log.info("took over %s (pid %d)", self.pidfile.path, os.getpid())
        return {"ok": True, "pid": os.getpid()}

    def _await_take_over(self) -> None:
        """A successor nobody takes over (its restart command died) must not stay beside the
        daemon it was meant to replace: it stops itself after the longest a restart takes."""
        deadline_s = self._succession_deadline_s()

        def watch() -> None:
            if not self._taken_over.wait(deadline_s) and not self.daemon.stopping.is_set():
                self.log.error("not taken over within %gs: stopping", deadline_s)
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="daemonkit-succession", daemon=True).start()

    def _succession_deadline_s(self) -> float:
        """The longest a handover restart takes: its successor's start, this one's stop."""
        options = self.daemon.options
        return float(options.start_timeout + options.stop_timeout + 5.0)

    # -- systemd's watchdog ----------------------------------------------------------------

    def _start_watchdog(self) -> None:
        interval = watchdog_interval_s()
        if interval is None or not self.notifier.enabled:
            return
        stopping = self.daemon.stopping

        def feed() -> None:
            while not stopping.wait(interval):
                if threading.main_thread().is_alive() and self._healthy(interval):
                    self.notifier.watchdog()

        threading.Thread(target=feed, name="daemonkit-watchdog", daemon=True).start()

    def _healthy(self, timeout_s: float) -> bool:
        try:
            return bool(self.hooks.call_from_thread(self.daemon.healthy, timeout_s))
        except Exception as exc:  # noqa: BLE001 - an unanswered or failing check is unhealthy
            self.log.warning("healthy() failed: %s: %s", type(exc).__name__, exc)
            return False


def _exit_status(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _set_process_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)

