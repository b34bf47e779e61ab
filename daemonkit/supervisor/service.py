"""The supervisor as a :class:`daemonkit.Daemon`: the core gives it start/stop/status/reload,
the pidfile and the privilege drop; this module wires the core's hooks to the :class:`Engine`.

Thread map: ``setup``/``run``/``reload``/``shutdown`` run in the main thread, which owns the
engine. ``handle_control`` and ``status_info`` run in the core's control thread and the web
server has threads of its own: they all reach the engine through ``Engine.call``.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
from typing import TYPE_CHECKING, Any

from ..control import control_path_for
from ..daemon import Daemon
from ..errors import ConfigError

if TYPE_CHECKING:  # config and engine are imported where used: CLI clients start faster
    from .config import SupervisorConfig
    from .engine import Engine

#: control-socket commands of the supervisor (the core handles "status" and "reload")
CMD_STATUS = "supervisor-status"
CMD_ACTION = "supervisor-action"
CMD_SCALE = "supervisor-scale"
CMD_RELOAD = "supervisor-reload"


class EngineAPI:
    """:class:`daemonkit.supervisor.api.SupervisorAPI` for the web server (any thread)."""

    def __init__(self, engine: Engine, timeout_s: float = 60.0) -> None:
        self.engine = engine
        self.timeout_s = timeout_s

    def status(self) -> dict[str, Any]:
        return self.engine.call(self.engine.status, self.timeout_s)

    def action(self, name: str, verb: str) -> dict[str, Any]:
        return self.engine.call(lambda: self.engine.action(name, verb), self.timeout_s)

    def scale(self, program: str, delta: int) -> dict[str, Any]:
        return self.engine.call(lambda: self.engine.scale(program, delta), self.timeout_s)

    def known(self, name: str) -> bool:
        answer = self.engine.call(lambda: {"ok": self.engine.targets(name) is not None},
                                  self.timeout_s)
        return bool(answer.get("ok"))


class Supervisor(Daemon):
    """daemonkit process supervisor: keeps named programs alive."""

    name = "daemonkit-supervisor"
    stop_timeout = 30.0

    def __init__(self, options: argparse.Namespace | None = None) -> None:
        super().__init__(options)
        self.config: SupervisorConfig | None = None
        self.engine: Engine | None = None
        self.web: Any = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-c", "--config", required=True, metavar="FILE",
                            help="supervisor config (supervisord-style INI)")
        parser.add_argument("names", nargs="*", metavar="NAME",
                            help="programs or instances (name:N) to act on")

    def configure(self) -> None:
        from . import config as config_module

        self.options.config = os.path.abspath(self.options.config)
        self.config = config_module.load(self.options.config)

    def handle_command(self, action: str) -> int | None:
        from .cli import client_action

        answer: int | None = client_action(self, action)
        return answer

    # -- inside the daemon --------------------------------------------------------------

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
        if self.config.control and self.config.control != control_path_for(supervisor_id):
            self.log.warning("[supervisor] control = %s is not supported yet; the control "
                             "socket is %s", self.config.control,
                             control_path_for(supervisor_id))
        for warning in self.config.warnings:  # once, at start; a reload logs new ones
            self.log.warning("%s", warning)
        self.engine = Engine(self.log, supervisor_id)
        self.engine.load(self.config)
        self.engine.last_reload = {}
        if self.config.web is not None and not isinstance(self.config.web, dict):
            from ..web.server import WebServer  # type: ignore[import-not-found,unused-ignore]

            self.web = WebServer(EngineAPI(self.engine), self.config.web)
            self.web.start()

    def run(self) -> None:
        assert self.engine is not None
        self.engine.run(self.stopping.is_set, self.critical)

    def reload(self) -> None:
        """SIGHUP: validate the whole file first (ConfigError keeps the old config)."""
        assert self.engine is not None
        self.engine.reload_file()

    def shutdown(self) -> None:
        if self.web is not None:
            self.web.stop()
        if self.engine is None:
            return
        grace = max((p.stopwaitsecs for p in self.engine.config.programs.values()),
                    default=0.0) if self.engine.config else 0.0
        self.engine.shutdown(grace + 1.0)
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
        return {"config": status.get("config"),
                "programs": f"{running} running of {len(programs)}"}

    def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        engine = self.engine
        if engine is None:
            return {"ok": False, "error": "the supervisor is not ready"}
        command = request.get("cmd")
        if command == CMD_STATUS:
            return engine.call(lambda: {"ok": True, **engine.status()}, 10.0)
        if command == CMD_ACTION:
            names = request.get("names")
            verb = str(request.get("verb"))
            if not isinstance(names, list) or not names:
                return {"ok": False, "error": "names: a non-empty list is required"}
            if not all(isinstance(n, str) for n in names):
                return {"ok": False, "error": "names must be strings"}
            unknown = engine.call(lambda: {"ok": True, "unknown": [
                n for n in names if engine.targets(n) is None]}, 10.0).get("unknown")
            if unknown:
                return {"ok": False, "error": f"no such program or instance: {unknown[0]}"}
            results = [engine.call(functools.partial(engine.action, n, verb), 600.0)
                       for n in names]
            errors = [r["error"] for r in results if not r.get("ok")]
            instances = [i for r in results for i in r.get("instances", [])]
            if errors:
                return {"ok": False, "error": "; ".join(errors), "instances": instances}
            return {"ok": True, "instances": instances}
        if command == CMD_SCALE:
            program, delta = request.get("program"), request.get("delta")
            if not isinstance(program, str) or not isinstance(delta, int):
                return {"ok": False, "error": "scale needs program (str) and delta (int)"}
            return engine.call(lambda: engine.scale(program, delta), 60.0)
        if command == CMD_RELOAD:
            def reload_now() -> dict[str, Any]:
                try:
                    return {"ok": True, **engine.reload_file()}
                except ConfigError as exc:
                    return {"ok": False, "error": str(exc)}

            return engine.call(reload_now, 60.0)
        not_ours: dict[str, Any] = super().handle_control(request)
        return not_ours


def _set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)
