"""The supervisor as a :class:`daemonkit.Daemon`: the core gives it start/stop/status/reload,
the pidfile and the privilege drop; this module wires the core's hooks to the :class:`Engine`
and to its servers (the control commands, supervisord's XML-RPC, the web page).

Thread map: ``setup``/``run``/``reload``/``shutdown`` run in the main thread, which owns the
engine. ``handle_control`` and ``status_info`` run in the core's control thread; the web and
XML-RPC servers have threads of their own: they all reach the engine through ``Engine.call``.
This module knows nothing of the command line (that is :mod:`.cli`, which subclasses
:class:`Supervisor` to add the client side).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import threading
from typing import TYPE_CHECKING, Any

from ..control import ControlServer
from ..daemon import Daemon
from ..errors import ConfigError, DaemonkitError
from . import protocol
from .faults import SupervisorError

if TYPE_CHECKING:  # config and engine are imported where used: CLI clients start faster
    from .config import SupervisorConfig
    from .engine import Engine
    from .rpc.server import RPCServers


class EngineAPI:
    """:class:`daemonkit.supervisor.api.SupervisorAPI` for the web server (any thread)."""

    def __init__(self, engine: Engine, timeout_s: float = 60.0) -> None:
        self.engine = engine
        self.timeout_s = timeout_s

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.engine.call(self.engine.status, self.timeout_s)
        return status

    def action(self, name: str, verb: str) -> dict[str, Any]:
        from .operations import Operations

        try:
            return Operations(self.engine).action([name], verb)
        except SupervisorError as exc:
            return protocol.refusal(exc)

    def scale(self, program: str, delta: int) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = self.engine.call(
                lambda: self.engine.scale(program, delta), self.timeout_s)
        except SupervisorError as exc:
            return {"ok": False, "error": exc.detail or exc.text}
        return answer

    def select(self, name: str) -> list[str] | None:
        def names() -> list[str] | None:
            if not self.engine.knows(name):
                return None
            return [i.name for i in self.engine.select([name])]

        found: list[str] | None = self.engine.call(names, self.timeout_s)
        return found

    def known(self, name: str) -> bool:
        return self.select(name) is not None


class Supervisor(Daemon):
    """daemonkit process supervisor: keeps named programs alive."""

    name = "daemonkit-supervisor"
    stop_timeout = 30.0

    def __init__(self, options: argparse.Namespace | None = None) -> None:
        super().__init__(options)
        self.config: SupervisorConfig | None = None
        self.engine: Engine | None = None
        self.web: Any = None
        self.rpc: RPCServers | None = None
        self.control_at: ControlServer | None = None  # [supervisord] control = PATH
        self._reload_lock = threading.Lock()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-c", "--config", required=True, metavar="FILE",
                            help="supervisor config (supervisord's INI format)")
        parser.add_argument("--strict", action="store_true",
                            help="refuse unknown sections and keys (supervisord ignores them)")
        parser.add_argument("names", nargs="*", metavar="NAME",
                            help="programs, instances (name:N), group, group:*, group:name, "
                                 "all")

    def configure(self) -> None:
        from . import config as config_module

        self.options.config = os.path.abspath(self.options.config)
        self.config = config_module.take_over(
            self.options.config, strict=bool(getattr(self.options, "strict", False)))

    # -- inside the daemon --------------------------------------------------------------

    def setup_privileged(self) -> None:
        """Still as the invoking user (root): raise limits, bind what needs privilege."""
        if self.config is None:
            self.configure()
        assert self.config is not None
        _raise_limit(resource.RLIMIT_NOFILE, self.config.minfds, "minfds", "file descriptors")
        _raise_limit(resource.RLIMIT_NPROC, self.config.minprocs, "minprocs", "processes")
        if self.config.servers:
            from .rpc.server import RPCServers

            self.rpc = RPCServers(self.config, self.log)
            self.rpc.bind()
        if self.config.control:
            self.control_at = ControlServer(self.config.control, self._answer_at_control_path)
            self.control_at.bind()
            if self.config.user is not None and os.geteuid() == 0:
                import pwd

                record = pwd.getpwnam(self.config.user) if not self.config.user.isdigit() \
                    else pwd.getpwuid(int(self.config.user))
                self.control_at.hand_over(record.pw_uid, record.pw_gid)

    def setup(self) -> None:
        if self.config is None:
            self.configure()
        assert self.config is not None
        _set_title(f"daemonkit-supervisor -c {self.config.path}")
        # ignored signals survive exec: the daemon context ignores the tty job-control
        # signals, and the programs must not inherit that (Popen only restores SIGPIPE/XFSZ)
        for signum in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            if signal.getsignal(signum) == signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
        from .engine import Engine
        from .strays import kill_strays

        supervisor_id = self.options.pidfile
        strays = kill_strays(supervisor_id)
        if strays:
            self.log.warning("killed %d processes left by a previous supervisor: %s",
                             len(strays), strays)
        for warning in self.config.warnings:  # once, at start; a reload logs new ones
            self.log.warning("%s", warning)
        syslog_address = getattr(self.options, "syslog_socket", None) or "/dev/log"
        self.engine = Engine(self.log, supervisor_id, syslog_address)
        self.engine.load(self.config)
        self.engine.last_reload = {}
        self.engine.announce_running()
        if self.rpc is not None:
            self.rpc.serve(self.engine, self._log_file())
        if self.control_at is not None:
            self.control_at.start_thread()
        if self.config.web is not None:
            from ..web.server import WebServer

            self.web = WebServer(EngineAPI(self.engine), self.config.web)
            self.web.start()

    def _log_file(self) -> str | None:
        path = getattr(self.options, "log_file", None)
        return str(path) if path else None

    def run(self) -> None:
        assert self.engine is not None
        self.engine.run(self.stopping.is_set, self.critical)

    def reload(self) -> None:
        """SIGHUP: read and validate the whole file in a thread of its own, then apply the
        difference in the loop (ConfigError keeps the old config). This runs in the loop's
        thread: reading a big file here would hold every respawn until it is done."""
        assert self.engine is not None
        self.log.info("reload: reading %s", self.engine.config.path if self.engine.config
                      else self.options.config)
        threading.Thread(target=self._reload_in_background, name="daemonkit-reload",
                         daemon=True).start()

    def _reload_in_background(self) -> None:
        engine = self.engine
        assert engine is not None
        with self._reload_lock:  # two SIGHUPs: read and applied in turn
            try:
                new = engine.read_file()
                engine.call(lambda: engine.reload_file(new), 60.0)
            except (ConfigError, SupervisorError) as exc:
                self.log.error("reload failed, keeping the old state: %s", exc)
            except Exception:  # logged; the supervisor lives on
                self.log.exception("reload failed, keeping the old state")

    def shutdown(self) -> None:
        """The programs are stopped with the servers still answering, as supervisord does:
        supervisorctl hears SHUTDOWN_STATE (not "no such file"), the web page and ``status``
        show who is still STOPPING; the engine refuses changes meanwhile."""
        try:
            if self.engine is not None:
                self.engine.shutdown(self.engine.stop_budget_s() + 1.0)
                self.engine.stop_taking_calls()
        finally:  # whatever went wrong, no socket file outlives the supervisor
            for server in (self.web, self.rpc):
                if server is not None:
                    server.stop()
            if self.control_at is not None:
                self.control_at.close()
        if self.engine is not None:
            self.engine.close()

    def reopen_logs(self) -> None:
        """SIGUSR1 / ``reopen-logs``: the children's log files move too (logrotate)."""
        if self.engine is not None:
            self.engine.reopen_logs()

    def status_info(self) -> dict[str, Any]:
        if self.engine is None:
            return {}
        status = self.engine.call(self.engine.status, 5.0)
        programs = status.get("programs", [])
        running = sum(1 for p in programs if p["state"] == "RUNNING")
        # stop_budget_s: what `stop` waits for (the CLI reads it: the file on disk may say
        # less than the configuration that runs, or than the programs a reload removed)
        # (asked apart: about 8 ms for 2,000 programs, which every other status reply,
        # the web page's and supervisorctl's, need not pay on the engine's thread)
        return {"config": status.get("config"),
                "programs": f"{running} running of {len(programs)}",
                "stop_budget_s": self.engine.call(self.engine.stop_budget_s, 5.0)}

    def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        engine = self.engine
        if engine is None:
            return {"ok": False, "error": "the supervisor is not ready"}
        from .operations import Operations

        try:
            answer = Operations(engine).handle(request)
        except SupervisorError as exc:
            return protocol.refusal(exc)
        except ConfigError as exc:
            return {"ok": False, "code": "CANT_REREAD", "error": str(exc)}
        if answer is None:
            not_ours: dict[str, Any] = super().handle_control(request)
            return not_ours
        return answer

    def _answer_at_control_path(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control socket at ``[supervisord] control``: the supervisor's own commands."""
        if str(request.get("cmd", "")).startswith("supervisor-"):
            return self.handle_control(request)
        return {"ok": False, "error": f"unknown command {request.get('cmd')!r} here (the "
                                      "core's commands are served beside the pidfile)"}


def _raise_limit(which: int, minimum: int, key: str, what: str) -> None:
    """supervisord's minfds/minprocs: raise the soft limit (and the hard one, as root)."""
    if minimum <= 0:
        return
    soft, hard = resource.getrlimit(which)
    if soft == resource.RLIM_INFINITY or soft >= minimum:
        return
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= minimum else minimum
    try:
        resource.setrlimit(which, (minimum, new_hard))
    except (ValueError, OSError):
        raise DaemonkitError(f"[supervisord] {key} = {minimum}: the environment allows only "
                             f"{hard} {what}; raise the limit or lower {key}") from None


def _set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)
