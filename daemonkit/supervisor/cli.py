"""``daemonkit supervise -c FILE ACTION [NAME...]``: the supervisor's command line.

Without NAMEs the action is the core's, for the supervisor itself (start/stop/restart/status/
reload/run). The config must be read before the core's CLI runs, because the supervisor's
pidfile, log file and user come from its ``[supervisor]`` section. With NAMEs, and for
``status`` and ``reload`` of a running supervisor, the command talks to the running
supervisor over its control socket and prints what it answers.
"""

from __future__ import annotations

import argparse
import configparser
import glob
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from ..cli import run_cli
from ..control import ControlError, control_path_for, request
from ..errors import ConfigError
from ..exitcodes import Exit
from ..process import format_duration

if TYPE_CHECKING:
    from .service import Supervisor

PROG = "daemonkit-supervisor"
_DEFAULT_PIDFILE = "/run/daemonkit-supervisor.pid"  # config.DEFAULT_PIDFILE
_NAME_ACTIONS = ("start", "stop", "restart", "status")


def main(argv: list[str]) -> int:
    from .service import Supervisor

    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("-c", "--config")
    early.add_argument("action", nargs="?")
    known, _rest = early.parse_known_args(argv)
    if not known.config:
        print("usage: daemonkit supervise -c FILE {start,stop,restart,status,reload,run} "
              "[NAME...]", file=sys.stderr)
        return int(Exit.USAGE)
    try:
        settings = _settings(known.config, strict=known.action in ("start", "run", "restart"))
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    core_argv = list(argv)
    for option, value in settings.items():
        if value is not None and option not in argv:
            core_argv += [option, value]
    return run_cli(Supervisor, core_argv)


def _settings(path: str, strict: bool) -> dict[str, str | None]:
    """The core options the config decides. ``strict`` (start, run, restart): the whole
    file must be valid. Otherwise (stop, status, reload, NAME actions) a quick read of the
    few keys needed, which also works on a file broken after the start, and keeps the
    client commands from paying for a full validation."""
    if strict:
        from . import config as config_module

        config = config_module.load(path)
        return _core_options(config.pidfile, config.logfile, config.user,
                             [p.stopwaitsecs for p in config.programs.values()])
    return _quick_settings(path)


def _core_options(pidfile: str, logfile: str | None, user: str | None,
                  stopwaits: list[float]) -> dict[str, str | None]:
    return {
        "--pidfile": pidfile,
        "--log-file": logfile,
        "--user": user,
        "--stop-timeout": f"{min(max(stopwaits, default=0.0) + 5.0, 86399):g}",
    }


def _quick_settings(path: str) -> dict[str, str | None]:
    path = os.path.abspath(path)
    here = os.path.dirname(path)
    files = [path]
    main_file = _lenient_read(path)
    if main_file.has_option("include", "files"):
        for pattern in main_file.get("include", "files").split():
            files += sorted(glob.glob(os.path.normpath(os.path.join(here, pattern))))
    values: dict[str, str] = {}
    stopwaits: list[float] = []
    for name in files:
        parser = main_file if name == path else _lenient_read(name)
        for section in parser.sections():
            if section in ("supervisor", "supervisord"):
                here = os.path.dirname(name)
                values.update((key, _expand(parser.get(section, key), here)) for key in
                              ("pidfile", "logfile", "user") if parser.has_option(section, key))
            elif section.startswith("program:"):
                try:
                    stopwaits.append(float(parser.get(section, "stopwaitsecs", fallback="10")))
                except ValueError:
                    stopwaits.append(10.0)

    def resolve(value: str | None) -> str | None:
        return os.path.normpath(os.path.join(here, value)) if value else None

    return _core_options(resolve(values.get("pidfile")) or _DEFAULT_PIDFILE,
                         resolve(values.get("logfile")), values.get("user") or None, stopwaits)


def _expand(value: str, here: str) -> str:
    """%(here)s and %(ENV_X)s as config.load expands them; a bad one is left as written
    (the full parse at start reports it)."""
    values = {"here": here, "host_node_name": os.uname().nodename,
              **{f"ENV_{key}": val for key, val in os.environ.items()}}
    try:
        return value % values
    except (KeyError, ValueError, TypeError):
        return value


def _lenient_read(path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None,
                                          inline_comment_prefixes=(";",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        pass
    return parser


# -- the client side of the control socket ------------------------------------------------


def client_action(daemon: Supervisor, action: str) -> int | None:
    """Actions answered by the running supervisor; None: the core's default action."""

    names: list[str] = list(daemon.options.names)
    if names and action not in _NAME_ACTIONS:
        print(f"{PROG}: {action} takes no NAME", file=sys.stderr)
        return int(Exit.USAGE)
    path = control_path_for(daemon.options.pidfile)
    try:
        return _client_action(daemon, action, names, path)
    except ControlError as exc:
        if "permission denied" in str(exc) or "may not control" in str(exc):
            print(f"{PROG}: {exc}", file=sys.stderr)
            return int(Exit.NO_PRIVILEGE)
        raise


def _client_action(daemon: Supervisor, action: str, names: list[str], path: str) -> int | None:
    from .service import CMD_ACTION, CMD_RELOAD, CMD_STATUS

    if action == "status":
        try:
            reply = request(path, {"cmd": CMD_STATUS}, timeout_s=15.0)
        except ControlError as exc:
            if "permission denied" in str(exc):
                raise
            if names:
                print(f"{PROG}: is not running", file=sys.stderr)
                return int(Exit.NOT_RUNNING_STATUS)
            if daemon.options.json:
                return _print_stopped_json(daemon)
            return None  # the core explains (not running, stale pidfile, ...)
        return _print_status(reply, names, daemon.options.json)
    if action == "reload" and not names:
        try:
            reply = request(path, {"cmd": CMD_RELOAD}, timeout_s=70.0)
        except ControlError as exc:
            if "permission denied" in str(exc):
                raise
            return None
        return _print_reload(reply)
    if names:
        try:
            reply = request(path, {"cmd": CMD_ACTION, "names": names, "verb": action},
                            timeout_s=600.0)
        except ControlError as exc:
            if "permission denied" in str(exc):
                raise
            print(f"{PROG}: is not running ({exc})", file=sys.stderr)
            return int(Exit.NOT_RUNNING)
        for instance in reply.get("instances", []):
            print(_instance_line(instance))
        if not reply.get("ok"):
            print(f"{PROG}: {reply.get('error')}", file=sys.stderr)
            return int(Exit.FAILURE)
        return int(Exit.OK)
    return None


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
                      "programs": [], **{k: v for k, v in report.items()
                                         if k not in ("pid", "uptime_s")}}))
    return code


def _selected(reply: dict[str, Any], names: list[str]) -> list[dict[str, Any]] | str:
    """Rows for NAMEs: instance, program (maybe scaled to none), group, group:*,
    group:program, group:instance; a str is the first unknown name."""
    programs: list[dict[str, Any]] = reply.get("programs", [])
    if not names:
        return programs
    configured = set(reply.get("program_names", []))
    groups: dict[str, list[str]] = reply.get("groups", {})
    chosen: list[dict[str, Any]] = []
    for name in names:
        match = [p for p in programs if name in ("*", "all", p["name"], p["program"])]
        group, sep, member = name.partition(":")
        if not match and name not in configured and group in groups:
            members = groups[group]
            if not sep or member == "*":
                match = [p for p in programs if p["program"] in members]
            elif member in members:
                match = [p for p in programs if p["program"] == member]
            else:
                match = [p for p in programs if p["program"] in members and p["name"] == member]
            if not match and (not sep or member == "*" or member in members):
                continue  # a group whose programs are scaled to none
        if not match and name not in configured:
            return name
        chosen += [p for p in match if p not in chosen]
    return chosen


def _print_status(reply: dict[str, Any], names: list[str], as_json: bool) -> int:
    if not reply.get("ok") and "may not control" in str(reply.get("error")):
        raise ControlError(str(reply.get("error")))
    if not reply.get("ok"):
        print(f"{PROG}: {reply.get('error')}", file=sys.stderr)
        return int(Exit.FAILURE)
    selected = _selected(reply, names)
    if isinstance(selected, str):
        print(f"{PROG}: no such program or instance: {selected}", file=sys.stderr)
        return int(Exit.NOT_RUNNING_STATUS)
    if as_json:
        print(json.dumps({"pid": reply.get("pid"), "uptime_s": reply.get("uptime_s"),
                          "config": reply.get("config"), "programs": selected}))
    else:
        if not names:
            uptime = reply.get("uptime_s")
            up = f", up {format_duration(uptime)}" if isinstance(uptime, (int, float)) else ""
            print(f"{PROG} is running (pid {reply.get('pid')}{up}), config {reply.get('config')}")
        rows = [("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "EXIT")]
        for p in selected:
            rows.append((p["name"], p["state"], str(p["pid"] or "-"),
                         format_duration(p["uptime_s"]) if p["uptime_s"] is not None else "-",
                         str(p["restarts"]),
                         "-" if p["exit_status"] is None else str(p["exit_status"])))
        widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                  .rstrip())
        for p in selected:  # below the table: its columns stay what scripts expect
            if p.get("error"):
                print(f"{p['name']}: {p['error']}")
        for name in names:
            if not any(name in (p["name"], p["program"]) for p in selected) and (
                    name in reply.get("program_names", [])):
                print(f"{name}: no instances (scaled to 0)")
    if names and (not selected or any(p["state"] != "RUNNING" for p in selected)):
        return int(Exit.NOT_RUNNING_STATUS)
    return int(Exit.OK)


def _print_reload(reply: dict[str, Any]) -> int:
    if not reply.get("ok"):
        print(f"{PROG}: reload failed: {reply.get('error')}", file=sys.stderr)
        return int(Exit.FAILURE)
    for key in ("added", "changed", "removed"):
        print(f"{key}: {', '.join(reply.get(key, [])) or '-'}")
    scaled = reply.get("scaled", {})
    print("scaled: " + (", ".join(f"{name} {old}->{new}" for name, (old, new)
                                  in sorted(scaled.items())) or "-"))
    for note in reply.get("notes", []):
        print(f"note: {note}")
    return int(Exit.OK)


def _instance_line(instance: dict[str, Any]) -> str:
    pid = f" (pid {instance['pid']})" if instance.get("pid") else ""
    return f"{instance['name']}: {instance['state']}{pid}"
