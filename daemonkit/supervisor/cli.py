"""``daemonkit supervise -c FILE ACTION [NAME...]``: the supervisor's command line.

Two kinds of commands:

* the core's (start/stop/restart/status/reload/run/reopen-logs) for the supervisor itself,
  run by :func:`daemonkit.cli.run_cli`; with NAMEs, start/stop/restart/status act on
  programs through the running supervisor instead;
* supervisorctl's verbs (tail, signal, pid, clear, update, reread, avail, shutdown), which
  only talk to the running supervisor, and ``check``, which only reads the file.

The config is read before the core's CLI runs, because the supervisor's pidfile, log file,
user, umask and directory come from its ``[supervisord]`` section: start/run/restart/check
validate the whole file; the other commands read the few keys they need leniently (a file
broken after the start must not keep ``stop`` from working).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import sys
from typing import Any

from ..cli import run_cli
from ..control import control_path_for
from ..errors import ConfigError
from ..exitcodes import Exit
from . import client, protocol
from .client import Client, ControlDenied, NotListening, complain, guarded
from .faults import Fault, NoSuchName
from .service import Supervisor

PROG = client.PROG
CORE_ACTIONS = ("start", "stop", "restart", "status", "reload", "run", "reopen-logs")
NAME_ACTIONS = ("start", "stop", "restart", "status")
CLIENT_VERBS = ("tail", "signal", "pid", "clear", "update", "reread", "avail", "shutdown")
FULL_READ = ("start", "run", "restart", "check")
#: actions that stop a running supervisor: they wait as long as it says it needs
STOPPING_ACTIONS = ("stop", "restart")

USAGE = """\
usage: daemonkit supervise -c FILE [--strict] COMMAND [ARGS...]

The supervisor itself (FILE is a supervisord config; [supervisord] decides pidfile, log file,
user, umask, directory):
  start | stop | restart | status [--json] | reload | run | reopen-logs
  shutdown                      the same as stop
  check [--json]                load FILE, print its warnings, exit 0 (usable) or 6

Programs, through the running supervisor (NAME: a program, an instance name:N, a group,
group:*, group:name as supervisorctl writes it, or all):
  start|stop|restart NAME...    answer once each is RUNNING (or stopped), or has failed
  status [--json] [NAME...]     the table; exit 3 if a named one is not RUNNING
  signal SIG NAME...            send SIG (HUP, USR1, 15, ...) to each process
  pid [NAME...]                 the supervisor's pid, or the programs' (0: not running)
  tail [-f] [-BYTES] NAME [stdout|stderr]   the end of a program's log (-f: follow)
  clear NAME...                 empty a program's log files
  reread                        what the file would change now (nothing applied)
  avail                         every program of the file, in use or not
  update [GROUP...]             apply the file's changes (to these groups only)
  reload                        re-read the file and apply every change (also SIGHUP)

Options of the core (--pidfile, --log-file, --user, --json, ...): daemonkit supervise -c FILE
start --help. --strict refuses unknown sections and keys (supervisord ignores them).
"""


class SupervisorCLI(Supervisor):
    """The supervisor with its client side: actions on programs go to the running one."""

    def handle_command(self, action: str) -> int | None:
        return core_action(self, action)


#: the interpreter the supervisor runs with, for files that start Python programs
#: (``command = %(ENV_DAEMONKIT_PYTHON)s app.py``) without an activated virtualenv
PYTHON_ENV = "DAEMONKIT_PYTHON"


def main(argv: list[str]) -> int:
    os.environ.setdefault(PYTHON_ENV, sys.executable)
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("-c", "--config")
    early.add_argument("--strict", action="store_true")
    early.add_argument("-h", "--help", action="store_true")
    early.add_argument("action", nargs="?")
    known, rest = early.parse_known_args(argv)
    if known.help or not known.config:
        if known.help and known.config and known.action in CORE_ACTIONS:
            return run_cli(SupervisorCLI, list(argv))  # the core's options, in full
        print(USAGE, end="", file=sys.stdout if known.help else sys.stderr)
        return int(Exit.OK if known.help else Exit.USAGE)
    if known.action == "check":
        return check(known.config, known.strict, "--json" in rest)
    if known.action in CLIENT_VERBS:
        return client_verb(known.config, known.action, [a for a in rest if a != known.action])
    if known.action not in CORE_ACTIONS:
        complain(f"unknown command {known.action!r}" if known.action else "a command is "
                 "needed")
        print(USAGE, end="", file=sys.stderr)
        return int(Exit.USAGE)
    try:
        options = _core_options(known.config, known.action in FULL_READ, known.strict,
                                with_programs=known.action != "status",
                                ask_running=known.action in STOPPING_ACTIONS)
    except ConfigError as exc:
        complain(str(exc))
        return int(exc.exit_code)
    core_argv = list(argv)
    for option, value in options.items():
        if value is not None and option not in argv:
            core_argv += [option, value] if value != "" else [option]
    return run_cli(SupervisorCLI, core_argv)


def _core_options(path: str, full: bool, strict: bool, with_programs: bool = True,
                  ask_running: bool = False) -> dict[str, str | None]:
    """The core options the config decides: pidfile, log file, user, umask, directory,
    log level, syslog, stop timeout. ``full`` (start, run, restart): the whole file must
    be valid, and its warnings are printed now, on the terminal. ``ask_running`` (stop,
    restart): the stop timeout is at least what the running supervisor says stopping it
    may take (:func:`_running_stop_budget_s`)."""
    from . import config as config_module

    if full:
        loaded = config_module.load(path, strict=strict)
        config_module.hand_over(path, strict, loaded)  # the supervisor's configure() takes it
        for warning in loaded.warnings:
            complain(f"warning: {warning}")
        settings = config_module.Settings(
            loaded.pidfile, loaded.logfile, loaded.user, loaded.control,
            loaded.stop_timeout(), loaded.log_level, loaded.syslog, loaded.umask,
            loaded.directory)
    else:
        settings = config_module.read_settings(path, with_programs)
    stop_timeout = settings.stop_timeout
    budget = _running_stop_budget_s(settings) if ask_running else None
    if budget is not None:
        stop_timeout = max(stop_timeout, min(budget + 5.0, 86399.0))
    return {
        "--pidfile": settings.pidfile,
        "--log-file": settings.logfile,
        "--user": settings.user,
        "--umask": f"{settings.umask:03o}" if settings.umask else None,
        "--workdir": settings.directory,
        "--log-level": settings.log_level if settings.log_level != "INFO" else None,
        "--syslog": "" if settings.syslog else None,
        "--stop-timeout": f"{stop_timeout:g}",
    }


def _running_stop_budget_s(settings: Any) -> float | None:
    """How long the running supervisor says stopping it may take now, or None (not running,
    not answering within a second). The file on disk is not enough: it may have been edited
    since the last reload (a program with a long stopwaitsecs gone from it while it still
    runs), and programs a reload removed may still be stopping."""
    control = settings.control or control_path_for(settings.pidfile)
    try:
        answer = connect(control, settings.pidfile, settings.user).ask({"cmd": "status"},
                                                                       timeout_s=1.0)
    except Exception:  # noqa: BLE001 - best effort: the file's timeout stands
        return None
    info = answer.get("info")
    budget = info.get("stop_budget_s") if isinstance(info, dict) else None
    if isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget >= 0:
        return float(budget)
    return None


class _NotRunning(Client):
    """What a supervisor whose pidfile nobody holds answers: nothing, whatever listens on
    its control path (another user may have put a socket there, in /tmp)."""

    def ask(self, message: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        raise NotListening("is not running")


def connect(control: str, pidfile: str, user: str | None) -> Client:
    """A client of the supervisor whose pidfile is ``pidfile``, believed under the core's
    rules (a pidfile another user could have planted raises PidfileError)."""
    from ..pidfile import PidFile

    trusted = []
    if user is not None:
        with contextlib.suppress(KeyError):
            trusted.append(pwd.getpwnam(user).pw_uid)
    if not PidFile(pidfile, trusted_uids=trusted).observe().locked:
        return _NotRunning(control)
    return Client(control)


# -- check --------------------------------------------------------------------------------------


def check(path: str, strict: bool, as_json: bool) -> int:
    """nginx -t for supervisor files: load, print the warnings, exit 0 or 6."""
    from . import config as config_module

    try:
        loaded = config_module.load(path, strict=strict)
    except ConfigError as exc:
        if as_json:
            print(json.dumps({"ok": False, "error": str(exc), "warnings": [],
                              "instances": []}))
        else:
            complain(str(exc))
        return int(Exit.NOT_CONFIGURED)
    if as_json:
        print(json.dumps({"ok": True, "warnings": list(loaded.warnings),
                          "instances": describe_instances(loaded)}, indent=1))
    else:
        for warning in loaded.warnings:
            complain(f"warning: {warning}")
        count = sum(p.numprocs for p in loaded.programs.values())
        print(f"{path}: ok ({len(loaded.programs)} programs, {count} processes, "
              f"{len(loaded.warnings)} warnings)")
    return int(Exit.OK)


def describe_instances(loaded: Any) -> list[dict[str, Any]]:
    """Per instance, what it runs: the shape of ``check --json``."""
    from .datatypes import signal_name

    rows = []
    for name in loaded.program_order():
        program = loaded.programs[name]
        for num in program.process_nums():
            spec = program.instance(num)
            rows.append({
                "name": spec.name, "namespec": spec.namespec, "program": program.name,
                "group": spec.group, "argv": list(spec.argv),
                "command_error": spec.command_error, "directory": spec.directory,
                "user": program.user, "environment": dict(spec.environment),
                "autostart": program.autostart, "autorestart": program.autorestart,
                "exitcodes": sorted(program.exitcodes), "startsecs": program.startsecs,
                "startretries": program.startretries,
                "stopsignal": signal_name(program.stopsignal),
                "stopwaitsecs": program.stopwaitsecs, "priority": program.priority,
                "stdout_logfile": spec.stdout.path, "stderr_logfile":
                    spec.stderr.path if spec.stderr else None,
                "redirect_stderr": program.redirect_stderr,
                "depends_on": list(program.depends_on),
                "socket": program.socket.address.url if program.socket else None})
    return rows


# -- supervisorctl's verbs ------------------------------------------------------------------------


def client_verb(config_path: str, verb: str, args: list[str]) -> int:
    if verb == "shutdown":
        if args:
            complain("shutdown takes no arguments")
            return int(Exit.USAGE)
        return main(["-c", config_path, "stop"])
    parser = argparse.ArgumentParser(prog=f"daemonkit supervise -c FILE {verb}", add_help=False)
    parsed = _parse_verb(parser, verb, args)
    if parsed is None:
        return int(Exit.USAGE)
    from . import config as config_module

    try:
        settings = config_module.read_settings(config_path)
    except ConfigError as exc:
        complain(str(exc))
        return int(exc.exit_code)
    connection = connect(settings.control or control_path_for(settings.pidfile),
                         settings.pidfile, settings.user)

    def run() -> int:
        if verb == "tail":
            return client.tail(connection, parsed.name, parsed.channel, parsed.follow,
                               parsed.bytes)
        if verb == "signal":
            return client.signal_names(connection, parsed.signal, parsed.names)
        if verb == "pid":
            return client.pid(connection, parsed.names)
        if verb == "clear":
            return client.clear(connection, parsed.names)
        if verb == "update":
            return client.update(connection, [n for n in parsed.names if n != "all"])
        if verb == "reread":
            return client.reread(connection)
        return client.avail(connection)

    return guarded(run)


def _parse_verb(parser: argparse.ArgumentParser, verb: str, args: list[str]
                ) -> argparse.Namespace | None:
    if verb == "tail":
        follow, length = False, 1600
        rest = []
        for arg in args:
            if arg == "-f":
                follow = True
            elif arg.startswith("-") and arg[1:].isdigit():
                length = int(arg[1:])
            else:
                rest.append(arg)
        if not 1 <= len(rest) <= 2 or (len(rest) == 2 and rest[1] not in protocol.LOG_CHANNELS):
            complain("usage: tail [-f] [-BYTES] NAME [stdout|stderr]")
            return None
        return argparse.Namespace(name=rest[0], channel=rest[1] if len(rest) == 2 else "stdout",
                                  follow=follow, bytes=length)
    if verb == "signal":
        if len(args) < 2:
            complain("usage: signal SIG NAME...")
            return None
        return argparse.Namespace(signal=args[0], names=args[1:])
    if verb in ("clear",) and not args:
        complain(f"usage: {verb} NAME...")
        return None
    if verb in ("reread", "avail") and args:
        complain(f"{verb} takes no arguments")
        return None
    return argparse.Namespace(names=args)


# -- the core's actions with NAMEs ----------------------------------------------------------------


def core_action(daemon: Supervisor, action: str) -> int | None:
    """Actions answered by the running supervisor; None: the core's default action."""
    names: list[str] = list(daemon.options.names)
    if names and action not in NAME_ACTIONS:
        complain(f"{action} takes no NAME")
        return int(Exit.USAGE)
    if action not in ("status", "reload") and not names:
        return None
    config = daemon.config
    # the pidfile as resolved by the core: --pidfile if given, else the file's
    path = (config.control if config is not None and config.control else None) or (
        control_path_for(daemon.options.pidfile))
    connection = connect(path, daemon.options.pidfile, config.user if config else None)
    try:
        if action == "status":
            return _status(daemon, connection, names)
        if action == "reload":
            try:
                reply = connection.ask({"cmd": protocol.CMD_RELOAD}, 70.0)
            except NotListening:
                return None
            if not reply.get("ok"):
                complain(f"reload failed: {reply.get('error')}")
                return int(Exit.FAILURE)
            return client.print_reload(reply)
        try:
            reply = connection.ask({"cmd": protocol.CMD_ACTION, "names": names,
                                    "verb": action}, 3700.0)
        except NotListening as exc:
            complain(str(exc))
            return int(Exit.NOT_RUNNING)
        if not reply.get("ok") and reply.get("code") == Fault.BAD_NAME.name:
            complain(f"no such program or instance: {_refused_name(reply)}")
            return int(Exit.FAILURE)
        return client.print_action(reply)
    except ControlDenied as exc:
        complain(str(exc))
        return int(Exit.NO_PRIVILEGE)


def _status(daemon: Supervisor, connection: Client, names: list[str]) -> int | None:
    try:
        reply = connection.ask({"cmd": protocol.CMD_STATUS, "names": names}, 15.0)
    except NotListening:
        if names:
            complain("is not running")
            return int(Exit.NOT_RUNNING_STATUS)
        if daemon.options.json:
            return _print_stopped_json(daemon)
        return None  # the core explains (not running, stale pidfile, ...)
    if not reply.get("ok"):
        if reply.get("code") == Fault.BAD_NAME.name:
            complain(f"no such program or instance: {_refused_name(reply)}")
            return int(Exit.NOT_RUNNING_STATUS)
        if reply.get("code") == Fault.SHUTDOWN_STATE.name:
            if names:  # its programs are being stopped: not RUNNING
                complain("is stopping")
                return int(Exit.NOT_RUNNING_STATUS)
            return None  # shutting its programs down: the core says so, and exits 0 (LSB)
        complain(str(reply.get("error")))  # no code: the core refused us
        return int(Exit.NO_PRIVILEGE if "code" not in reply else Exit.FAILURE)
    programs: list[dict[str, Any]] = reply.get("programs", [])
    if not names:
        return client.print_status(reply, programs, [], daemon.options.json, header=True)
    wanted = set(reply.get("selected", []))
    selected = [p for p in programs if p["name"] in wanted]
    return client.print_status(reply, selected, names, daemon.options.json, header=False)


def _refused_name(reply: dict[str, Any]) -> str:
    """The name a BAD_NAME refusal is about (its fault's detail)."""
    try:
        protocol.raise_for(reply)
    except NoSuchName as exc:
        return str(exc.detail)
    return "?"


def _print_stopped_json(daemon: Supervisor) -> int:
    """``status --json`` of a stopped supervisor: the running shape (pid null, no
    programs) plus the core's keys, so scripts read one shape either way."""
    import contextlib
    import io

    from ..commands import status as core_status

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = core_status(daemon)
    try:
        report = json.loads(captured.getvalue())
    except ValueError:
        report = {}
    print(json.dumps({"pid": None, "uptime_s": None, "config": daemon.options.config,
                      "programs": [], "removed": [], **{k: v for k, v in report.items()
                                         if k not in ("pid", "uptime_s")}}))
    return code
