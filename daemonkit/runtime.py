"""Inside the daemon: a service's life cycle, run by an object of its own.

The machinery lives here and not in the ``Daemon`` class, so the names a service picks for
its own methods (``serve``, ``state``, ``control``, ...) can never collide with it. What runs,
in order (:meth:`Runtime.serve`):

1. logging, process title, systemd notifier; record-only signal handlers (``EarlySignals``),
   so a signal from the moment the pid is visible is acted on, not fatal;
2. signal handling proper: the main-thread gate (``lifecycle``) for a sync ``run()``, the
   loop's (``aiolifecycle``) for an async one;
3. the control socket is bound (still privileged, beside the pidfile); only then is the pid
   written into the pidfile, so whoever reads a pid finds the socket that answers for it;
   the exit record is opened (``exitrecord``); the listening sockets are bound or taken
   (``listen``);
4. ``setup_privileged()``; then the uid/gid drop, if one was asked for;
5. ``setup()``; only now does ``start`` return, or ``READY=1`` go to systemd;
6. ``run()``, until it returns, raises, or a stop request unwinds (or cancels) it;
7. ``shutdown()``, always, with stop requests no longer interrupting anything;
8. the exit record says how it ended; the loop is closed without waiting for its threads.

An exception in 3 to 5 is reported to ``start`` (type and message) and the daemon exits 1.
``shutdown()`` is not called then: a half-done setup cleans up after itself, as a context
manager's ``__enter__`` does.

A successor (the daemon a handover ``restart`` starts beside the running one) binds its
control socket as ``NAME.next.ctl`` and locks ``NAME.next.pid`` instead of the pidfile, until
the restart command hands it the pidfile's lock (``take-over``).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import listen
from .control import FDS, PEER_UID, ControlServer, RequestError, number_field
from .errors import StopDaemon
from .exitrecord import ExitRecordWriter
from .forkwindow import ForkSignalWindow
from .hooks import HookCaller, is_async
from .lifecycle import (
    ACTION_SIGNALS,
    STOP_SIGNALS,
    Critical,
    EarlySignals,
    SignalGate,
    default_signals_in_child,
)
from .notify import Notifier, watchdog_interval_s
from .paths import successor_pidfile_for
from .pidfile import PidFile
from .privileges import drop_privileges
from .states import ActionTracker, State, StateMachine

if TYPE_CHECKING:
    from .aiolifecycle import AsyncCritical, AsyncGate
    from .daemon import Daemon
    from .launch import Launch
    from .readiness import ReadinessWriter

#: the one runtime of this process (a process holds one pidfile and one set of handlers)
_current: Runtime | None = None

#: longest wait a control request may ask for (the CLI's --start-timeout allows as much)
_MAX_WAIT_S = 86400.0


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
        #: who may hand the sockets over or take over: root and whoever started the daemon
        #: (not the service user it dropped to, which may only ask for status and reloads)
        self.owner_uids = {0, os.getuid()}
        self.successor_lock: PidFile | None = None  # NAME.next.pid, held by a successor
        self._fork_window = ForkSignalWindow()
        self.stopped_in_setup = False  # a stop signal ended setup(): see ExitRecordWriter
        self._succession = threading.Lock()  # take-over and giving it up exclude each other
        self._succession_over = False  # taken over, or given up
        self._handover_until = 0.0  # monotonic time until which a handover is under way
        self._stop_seen = threading.Lock()
        self._stop_logged = False
        self._pid = os.getpid()  # the daemon's; another pid here is a child the service forked

    # -- the life cycle ------------------------------------------------------------------------

    def serve(self) -> int:
        global _current
        _current = self
        self._pid = os.getpid()
        early = EarlySignals().install()
        faulthandler.enable()  # a crash in C (SIGSEGV, SIGABRT...) leaves its traceback in the log
        self.launch.log.configure_logging()
        _set_process_title(f"{self.launch.name}: main")
        self.notifier = Notifier.from_environment()
        try:
            if self.asynchronous:
                exit_code = self.hooks.runner().run(self._live_async(early))
            else:
                exit_code = self._live(early)
        finally:
            self.control.close()
        self.log.info("%s exiting with status %d", self.launch.name, exit_code)
        self.exit_record.close(exit_code, self.end_reason,
                               stopped_in_setup=self.stopped_in_setup)
        if self.successor_lock is not None and self.successor_lock.i_am_locking():
            self.successor_lock.release()  # a successor nobody took over
        self.hooks.close()
        for signum in (*STOP_SIGNALS, *ACTION_SIGNALS):
            signal.signal(signum, signal.SIG_IGN)  # the process is done: nothing may kill it
        return exit_code

    def _prepare(self) -> None:
        """Step 3, still privileged."""
        if self.launch.successor:
            # locked before NAME.next.ctl is bound, as `start` locks the pidfile before the
            # daemon binds NAME.ctl: a socket is a leftover only where no lock covers it
            self.successor_lock = PidFile(successor_pidfile_for(self.pidfile.path),
                                          trusted_uids=self.pidfile.trusted_uids)
            self.successor_lock.lock_for_start()
        self.control.bind()
        self.control.start_thread()
        try:
            self.exit_record.prepare()
        except OSError as exc:
            self.log.warning("no exit record at %s: %s", self.exit_record.path, exc)
        if self.successor_lock is not None:
            self.successor_lock.write_pid(os.getpid())
        else:
            self._own_the_pidfile()
        self._fork_window.register(self._forked_child_lets_go)
        if self.ready is not None:
            self.ready.send(pid=os.getpid())
        self._open_listeners()

    def _own_the_pidfile(self) -> None:
        self.pidfile.write_pid(os.getpid())
        self.exit_record.start(os.getpid(), self.launch.log.path)

    def _forked_child_lets_go(self) -> None:
        """In a child the service forks without exec (multiprocessing, a pre-fork server):
        the daemon's pidfile lock, control socket and records are not the child's. Were it
        to keep them, the lock would outlive a daemon killed with -9 (held by its orphaned
        workers) and its socket would answer for nobody."""
        # the daemon's signals stay blocked until after this hook (ForkSignalWindow): one
        # sent to the child meanwhile reaches the child's own, default handlers
        default_signals_in_child()
        self.pidfile.forget()
        if self.successor_lock is not None:
            self.successor_lock.forget()
        self.control.forget()
        self.exit_record.forget()
        if self.ready is not None:
            self.ready.close()  # `start` must hear the daemon's outcome, not a child's
        if isinstance(self.gate, SignalGate):
            self.gate.forget()

    def in_forked_child(self) -> bool:
        """True in a process the service forked without exec, unwinding through the
        runtime's frames (``sys.exit()`` in a child forked in ``setup()`` or ``run()``): it
        must end as that child, not report a failed setup, call ``shutdown()`` or write the
        exit record as if it were the daemon."""
        return os.getpid() != self._pid

    def _open_listeners(self) -> None:
        """Sockets passed in are used, the rest bound (as root). All of them are handed to the
        service non-blocking at the descriptor, which a restart's two daemons share, with a
        Python timeout that makes a sync service's ``accept()`` wait as usual."""
        passed = dict(self.launch.sockets)
        if not self.launch.listen:
            self.listeners = list(passed.values())
        else:
            self.listeners = [passed.pop(address.key) if address.key in passed
                              else listen.bind(address) for address in self.launch.listen]
            for sock in passed.values():
                sock.close()  # the replaced daemon listened there; this one does not
        for sock in self.listeners:
            sock.settimeout(listen.ACCEPT_TIMEOUT_S)
        self.daemon.listeners = list(self.listeners)

    def _live(self, early: EarlySignals) -> int:
        """Steps 2-7 for a sync ``run()``."""
        gate = SignalGate({"reload": self._reload, "reopen": self._reopen},
                          on_stop_signal=self._on_stop_signal, stopping=self.daemon.stopping)
        self.gate = gate
        try:
            gate.install(early)
            self._prepare()
            self.hooks.call(self.daemon.setup_privileged)
            self._drop_privileges()
            self.hooks.call(self.daemon.setup)
        except BaseException as exc:  # reported to `start`, whatever it was
            if self.in_forked_child():
                raise
            gate.begin_shutdown()  # from here on a SIGTERM from `start` cannot cut the cleanup
            return self._setup_failed(exc)
        gate.hold()  # a stop from here until run() starts waits for gate.open()
        self._announce_ready()
        exit_code = 0
        try:
            try:
                gate.open()  # serves a HUP that arrived during setup(), or a deferred stop
                # (a setup() that swallowed the stop never gets to run())
                returned = self.daemon.run() if gate.stop_signal is None else None
            finally:
                # run() is over, however: from here a stop (one delivered again, say) is
                # only recorded, never raised into the runtime's own steps
                gate.begin_shutdown()
            if returned is not None:
                self.log.error("run() returned a value: a coroutine? declare it async def")
                exit_code, self.end_reason = 1, "run() is not a plain function"
            if gate.stop_signal is not None:
                self._stopped_by(gate.stop_signal)
        except StopDaemon as stop:
            self._stopped_by(stop.signum)
        except BaseException as exc:  # logged, and the exit status says so
            if self.in_forked_child():
                raise
            exit_code = self._run_ended_by(exc)
        self._enter_shutdown()
        try:
            self.hooks.call(self.daemon.shutdown)
        except BaseException as exc:  # logged, and the exit status says so
            if self.in_forked_child():
                raise
            return self._shutdown_failed(exc, exit_code)
        return exit_code

    async def _live_async(self, early: EarlySignals) -> int:
        """Steps 2-7 for an async ``run()``, in the loop the runtime keeps for the daemon."""
        import asyncio

        from .aiolifecycle import AsyncGate

        self.hooks.loop = asyncio.get_running_loop()
        gate = AsyncGate({"reload": self._reload_async, "reopen": self._reopen_async},
                         on_stop_signal=self._on_stop_signal_in_loop)
        self.gate = gate
        life = asyncio.current_task()
        assert life is not None
        try:
            gate.install(life, early)
            self._prepare()
            await self.hooks.call_async(self.daemon.setup_privileged)
            self._drop_privileges()
            await self.hooks.call_async(self.daemon.setup)
        except BaseException as exc:  # reported to `start`, whatever it was
            if self.in_forked_child():
                raise
            gate.begin_shutdown()
            if isinstance(exc, asyncio.CancelledError) and gate.stop_signal is not None:
                life.uncancel()
                exc = StopDaemon(gate.stop_signal)
            return self._setup_failed(exc)
        if gate.stop_signal is not None and life.cancelling():
            # a stop before setup() (recorded early, replayed by install()) whose cancel no
            # await has taken since: setup() never suspended. Taken here, it ends the start
            # as a stop during setup() does; left pending, it would cancel shutdown() later
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                life.uncancel()
                gate.begin_shutdown()
                return self._setup_failed(StopDaemon(gate.stop_signal))
        gate.hold()
        self._announce_ready()
        exit_code = 0
        if gate.stop_signal is None:  # (a setup() that swallowed the stop: honour it)
            run_task = gate.start_run(self._run_async)
            try:
                ended = await run_task  # a stop cancels run_task, never this task
                if isinstance(ended, BaseException):
                    if self.in_forked_child():
                        raise ended
                    exit_code = self._run_ended_by(ended)
            except asyncio.CancelledError:
                if gate.stop_signal is None:
                    raise  # cancelled by someone else: let asyncio report it
            except BaseException as exc:  # logged, and the exit status says so
                if self.in_forked_child():
                    raise
                exit_code = self._run_ended_by(exc)
        if gate.stop_signal is not None and exit_code == 0:
            self.end_reason = f"stopped by {_signal_name(gate.stop_signal)}"
        gate.begin_shutdown()
        self._enter_shutdown()
        if gate.acting is not None:  # a reload or reopen started before the stop ends first
            await asyncio.wait([gate.acting])
        # no unit of work of any task is cut: not by shutdown() closing what it uses, not by
        # the loop's end
        await gate.blocks_closed()
        try:
            await self.hooks.call_async(self.daemon.shutdown)
        except BaseException as exc:  # logged, and the exit status says so
            if self.in_forked_child():
                raise
            exit_code = self._shutdown_failed(exc, exit_code)
        await gate.blocks_closed()
        return exit_code

    async def _run_async(self) -> BaseException | None:
        """The service's run(), with what asyncio would not let end a task quietly:
        SystemExit and KeyboardInterrupt escaping a task are re-raised out of the loop."""
        try:
            await self.hooks.call_async(self.daemon.run)
        except (SystemExit, KeyboardInterrupt) as exc:
            return exc
        return None

    def _drop_privileges(self) -> None:
        identity = self.launch.identity
        if identity is None:
            return
        self.control.hand_over(identity.uid, identity.gid)
        self.launch.log.chown(identity.uid, identity.gid)
        drop_privileges(identity)

    def _setup_failed(self, exc: BaseException) -> int:
        if isinstance(exc, StopDaemon):
            message = f"stopped by {_signal_name(exc.signum)} during setup()"
            self.log.warning(message)
            self.stopped_in_setup = True
        else:
            message = describe(exc)
            self.log.error("setup failed", exc_info=exc)
        self.end_reason = f"setup() failed: {message}"
        self.states.enter(State.FAILED)
        if self.ready is not None:
            self.ready.send(error=message, exit=1)
            self.ready.close()
        return 1

    def _run_ended_by(self, exc: BaseException) -> int:
        """The exit status and reason for a run() that ended with ``exc``."""
        if isinstance(exc, SystemExit):
            self.end_reason = f"run() called sys.exit({exc.code!r})"
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        self.log.error("uncaught exception in run()", exc_info=exc)
        self.end_reason = f"run() raised {describe(exc)}"
        return 1

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
        self.states.enter_once(State.STOPPING)
        self.daemon.stopping.set()
        self.notifier.stopping()

    def _shutdown_failed(self, exc: BaseException, exit_code: int) -> int:
        self.log.error("uncaught exception in shutdown()", exc_info=exc)
        self.end_reason += f"; shutdown() raised {describe(exc)}"
        return exit_code or 1

    def _stop_received(self, signum: int) -> None:
        """A stop was asked (whichever sees it first: the sync gate's watcher thread, the
        main thread unwinding, the loop): from now on the daemon says it is stopping, so a
        concurrent `start` waits it out instead of calling it running; logged once."""
        with self._stop_seen:
            if self._stop_logged:
                return
            self._stop_logged = True
        self.states.enter_once(State.STOPPING)  # (during setup() it fails the start instead)
        self.notifier.stopping()
        self.log.info("received %s, stopping", _signal_name(signum))

    def _on_stop_signal(self, signum: int) -> None:
        """The sync gate's watcher thread, once per stop (a critical() block may defer the
        stop itself for a while)."""
        self._stop_received(signum)

    def _stopped_by(self, signum: int) -> None:
        self._stop_received(signum)  # the watcher thread may not have run before this
        self.end_reason = f"stopped by {_signal_name(signum)}"

    def _on_stop_signal_in_loop(self, signum: int) -> None:
        self.daemon.stopping.set()
        self._stop_received(signum)

    def critical(self) -> Critical | AsyncCritical:
        if self.gate is None:
            raise RuntimeError("critical() is available once the daemon runs")
        return self.gate.critical()

    # -- reload and reopen -------------------------------------------------------------------
    # The sync variants run in the main thread at a safe point (see lifecycle), the async ones
    # as a task of the loop; both never raise, and report through the action tracker.

    def _reload(self) -> None:
        self._begin_reload()
        self._end_reload(_failure_of(lambda: self.hooks.call(self.daemon.reload)))

    async def _reload_async(self) -> None:
        self._begin_reload()
        try:
            await self.hooks.call_async(self.daemon.reload)
            failure: BaseException | None = None
        except BaseException as exc:  # noqa: BLE001 - even SystemExit: the daemon lives on
            failure = exc
        self._end_reload(failure)

    def _begin_reload(self) -> None:
        self.actions.begin("reload")
        self.notifier.reloading()

    def _end_reload(self, failure: BaseException | None) -> None:
        if failure is None:
            self.log.info("reloaded")
            result: dict[str, Any] = {"ok": True}
        else:
            error = describe(failure)
            self.log.error("reload failed, keeping the old state: %s", error)
            result = {"ok": False, "error": error}
        self.notifier.ready()
        self.actions.finish("reload", result)

    def _reopen(self) -> None:
        self.actions.begin("reopen")
        result = self._reopen_core_log()
        self._end_reopen(result, _failure_of(lambda: self.hooks.call(self.daemon.reopen_logs)))

    async def _reopen_async(self) -> None:
        self.actions.begin("reopen")
        result = self._reopen_core_log()
        try:
            await self.hooks.call_async(self.daemon.reopen_logs)
            failure: BaseException | None = None
        except BaseException as exc:  # noqa: BLE001 - reported to reopen-logs
            failure = exc
        self._end_reopen(result, failure)

    def _reopen_core_log(self) -> dict[str, Any]:
        """A failed reopen keeps writing to the old file."""
        log = self.launch.log
        try:
            log.reopen()
        except OSError as exc:
            error = f"cannot reopen {log.path}: {exc.strerror}; still writing to the old file"
            self.log.error("%s", error)
            return {"ok": False, "error": error}
        return {"ok": True}

    def _end_reopen(self, result: dict[str, Any], failure: BaseException | None) -> None:
        if failure is not None:
            result = {"ok": False, "error": f"reopen_logs(): {describe(failure)}"}
            self.log.error("%s", result["error"])
        self.actions.finish("reopen", result)

    # -- the control socket (its threads) ------------------------------------------------------

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request["cmd"]
        timeout_s = number_field(request, "timeout", 30.0, 0.0, _MAX_WAIT_S)
        if command in ("take-over", "handover", "handover-abort"):
            if request[PEER_UID] not in self.owner_uids:
                return {"ok": False, "error": f"uid {request[PEER_UID]} may not {command}"}
            if command == "take-over":
                return self._take_over(request[FDS])
            if command == "handover-abort":
                self._handover_until = 0.0
                return {"ok": True}
            return self._handover()
        if command == "status":
            return self._status_reply(min(timeout_s, 10.0))
        if command == "wait-ready":
            state = self.states.wait_until_settled(timeout_s)
            return {"ok": state is State.RUNNING, "state": state.value, "pid": os.getpid()}
        if self.states.wait_until_settled(timeout_s) is not State.RUNNING:
            # the state, so that a command can fall back on what the core knows (status)
            now = self.states.current.value
            return {"ok": False, "error": f"cannot {command}: {now}", "state": now}
        if command in ("reload", "reopen-logs"):
            return self._act_and_wait("reload" if command == "reload" else "reopen", timeout_s)
        service_request = {key: value for key, value in request.items()
                           if key not in (FDS, PEER_UID)}
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
        if result is not None:
            return result
        if self.states.current is not State.RUNNING:
            return {"ok": False, "error": f"not done: the daemon is {self.states.current.value}"}
        return {"ok": False, "pending": True,
                "error": f"not done after {timeout_s:g}s (waiting for a critical() block to "
                         "end); it will run when the block ends"}

    # -- handover restart ----------------------------------------------------------------------

    def _handover(self) -> dict[str, Any]:
        """The listening sockets, for the daemon that ``restart`` starts in this one's place:
        passed (SCM_RIGHTS), never closed, so no connection is refused meanwhile. One
        restart at a time: another is refused until this one is done, aborted, or given up."""
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
        lock (it held it in between) and moves the control socket into place (it may write
        the directory; this daemon may have dropped privileges). From now on this daemon is
        the one of the pidfile."""
        with self._succession:
            if not self.launch.successor or self._succession_over:
                return {"ok": False, "error": "nothing to take over"}
            if self.states.current is not State.RUNNING:  # a stop came first: it wins
                return {"ok": False, "error": f"cannot take over: {self.states.current.value}"}
            if len(fds) != 1:
                return {"ok": False, "error": "take-over needs the pidfile's locked descriptor"}
            self.pidfile.adopt(fds[0])
            fds.clear()  # ours now
            self._succession_over = True
        self._own_the_pidfile()
        self.control.path = self.launch.control_path  # the restart command renames the file
        if self.successor_lock is not None:
            self.successor_lock.forget()  # its file is the restart command's to remove
        self.log.info("took over %s (pid %d)", self.pidfile.path, os.getpid())
        return {"ok": True, "pid": os.getpid()}

    def _await_take_over(self) -> None:
        """A successor nobody takes over (its restart command died) must not stay beside the
        daemon it was meant to replace: it stops itself after the longest a restart takes."""
        deadline_s = self._succession_deadline_s()

        def watch() -> None:
            time.sleep(deadline_s)  # a thread of its own, whose only job is this deadline
            with self._succession:
                if self._succession_over or self.daemon.stopping.is_set():
                    return
                self._succession_over = True
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


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line (a multi-line message would break the terminal's line,
    an empty one would leave a dangling colon)."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _failure_of(call: Callable[[], object]) -> BaseException | None:
    """Run a hook that must not take the daemon down: what it raised, or None."""
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - even SystemExit: the daemon lives on
        return exc
    return None


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
