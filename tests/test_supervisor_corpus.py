"""Every corpus file (tests/corpus) means the same to daemonkit as to supervisord itself.

Each file is parsed by supervisord's own parser (``supervisor.options.ServerOptions``, the
test dependency) and by daemonkit's loader, from a copy of the corpus as the working
directory (supervisord resolves relative paths against it, daemonkit against the file's
directory: the same place here), with the same environment. Then, process by process, what
it would run is compared: name and group, argv, directory, user, environment, restart
policy, signals, timeouts, priorities, logs, sockets; and the supervisor-wide settings.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT

from daemonkit.supervisor import config as dk_config
from daemonkit.supervisor.datatypes import uid_of

CORPUS = ROOT / "tests" / "corpus"
FILES = sorted(p.name for p in CORPUS.glob("*.conf"))
ENVIRONMENT = {"QUEUE_WORKERS": "3", "QUEUE_TIMEOUT": "90", "APP_ROOT": "/srv/app",
               "APP_USER": "nobody", "AUTOSTART": "false", "WORKERS": "2",
               "STOP_WAIT": "25", "LOG_LEVEL": "warn"}


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    copy = tmp_path / "corpus"
    shutil.copytree(CORPUS, copy)
    for directory in ("logs", "run"):  # what here-deploy.conf expects beside itself
        (copy / directory).mkdir()
    for key, value in ENVIRONMENT.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(copy)
    yield copy


def supervisord_view(path: Path) -> Any:
    from supervisor.options import ServerOptions

    options = ServerOptions()
    options.realize(args=["-c", str(path)])
    return options


def their_processes(options: Any) -> dict[str, dict[str, Any]]:
    from supervisor import datatypes

    restart = {datatypes.RestartUnconditionally: "true",
               datatypes.RestartWhenExitUnexpected: "unexpected", False: "false"}

    def log(value: Any) -> Any:
        if value is datatypes.Automatic:
            return "AUTO"
        return None if value is None else os.path.abspath(value)

    found = {}
    for group in _groups(options):
        socket = getattr(group, "socket_config", None)
        for process in group.process_configs:
            namespec = group.name if group.name == process.name else (
                f"{group.name}:{process.name}")
            found[namespec] = {
                "group": group.name, "group_priority": group.priority,
                "argv": tuple(shlex.split(process.command)),
                "directory": os.path.abspath(process.directory) if process.directory else None,
                "uid": process.uid, "umask": process.umask,
                "environment": dict(process.environment),
                "autostart": process.autostart, "autorestart": restart[process.autorestart],
                "exitcodes": frozenset(process.exitcodes), "startsecs": process.startsecs,
                "startretries": process.startretries, "stopsignal": int(process.stopsignal),
                "stopwaitsecs": process.stopwaitsecs, "stopasgroup": process.stopasgroup,
                "killasgroup": process.killasgroup, "priority": process.priority,
                "redirect_stderr": process.redirect_stderr,
                "stdout_logfile": log(process.stdout_logfile),
                "stderr_logfile": log(process.stderr_logfile),
                "stdout_syslog": process.stdout_syslog, "stderr_syslog": process.stderr_syslog,
                "stdout_maxbytes": process.stdout_logfile_maxbytes,
                "stdout_backups": process.stdout_logfile_backups,
                "stderr_maxbytes": process.stderr_logfile_maxbytes,
                "serverurl": process.serverurl or options.serverurl,
                "socket": None if socket is None else (
                    socket.url, socket.get_backlog(),
                    getattr(socket, "owner", None), getattr(socket, "mode", None)),
            }
    return found


def _groups(options: Any) -> list[Any]:
    """Every process group, event listener pools included (their processes are programs)."""
    return list(options.process_group_configs)


def our_processes(loaded: dk_config.SupervisorConfig) -> dict[str, dict[str, Any]]:
    found = {}
    for name in loaded.program_order():
        program = loaded.programs[name]
        for num in program.process_nums():
            spec = program.instance(num)

            def log(spec_log: dk_config.LogSpec | None, channel: str,
                    program: dk_config.ProgramConfig = program) -> Any:
                if spec_log is None:
                    return None
                raw = getattr(program, f"{channel}_logfile").strip().lower()
                if raw in ("auto", ""):
                    return "AUTO"
                return spec_log.path

            socket = program.socket
            found[spec.namespec] = {
                "group": spec.group, "group_priority": program.group_priority,
                "argv": spec.argv, "directory": spec.directory,
                "uid": uid_of(program.user) if program.user else None,
                "umask": program.umask, "environment": dict(spec.environment),
                "autostart": program.autostart, "autorestart": program.autorestart,
                "exitcodes": program.exitcodes, "startsecs": program.startsecs,
                "startretries": program.startretries, "stopsignal": program.stopsignal,
                "stopwaitsecs": program.stopwaitsecs, "stopasgroup": program.stopasgroup,
                "killasgroup": program.killasgroup, "priority": program.priority,
                "redirect_stderr": program.redirect_stderr,
                "stdout_logfile": log(spec.stdout, "stdout"),
                "stderr_logfile": log(spec.stderr, "stderr") if spec.stderr else None,
                "stdout_syslog": spec.stdout.syslog,
                "stderr_syslog": bool(spec.stderr.syslog) if spec.stderr else False,
                "stdout_maxbytes": program.stdout_logfile_maxbytes,
                "stdout_backups": program.stdout_logfile_backups,
                "stderr_maxbytes": program.stderr_logfile_maxbytes,
                "serverurl": program.serverurl,
                "socket": None if socket is None else (
                    socket.address.url, socket.backlog, socket.owner, socket.mode),
            }
    return found


@pytest.mark.parametrize("name", FILES)
def test_each_process_means_what_it_means_to_supervisord(corpus: Path, name: str) -> None:
    theirs = supervisord_view(corpus / name)
    ours = dk_config.load(str(corpus / name))
    their_view, our_view = their_processes(theirs), our_processes(ours)
    assert their_view and set(our_view) == set(their_view)
    for namespec, their_process in their_view.items():
        for key, value in their_process.items():
            if key == "stderr_logfile" and their_process["redirect_stderr"]:
                continue  # supervisord keeps None; daemonkit has no stderr stream at all
            assert our_view[namespec][key] == value, (name, namespec, key)
    assert [g.name for g in _groups(theirs)] == _group_order(ours)


def _group_order(loaded: dk_config.SupervisorConfig) -> list[str]:
    groups: list[str] = []
    for program in loaded.program_order():
        group = loaded.programs[program].group_name
        if group not in groups:
            groups.append(group)
    return groups


@pytest.mark.parametrize("name", FILES)
def test_supervisor_settings_mean_the_same(corpus: Path, name: str) -> None:
    from supervisor.loggers import LevelsByName

    theirs = supervisord_view(corpus / name)
    ours = dk_config.load(str(corpus / name))
    section = theirs.configroot.supervisord
    if section.pidfile != "supervisord.pid":  # daemonkit's default is its own
        assert ours.pidfile == theirs.pidfile
    if theirs.logfile == "syslog":
        assert ours.syslog and ours.logfile is None
    elif theirs.logfile in dk_config.STDIO_PATHS:
        assert ours.logfile is None  # the supervisor's own stdout: no file for the core
    elif os.path.basename(theirs.logfile) != "supervisord.log":
        assert ours.logfile == theirs.logfile
    python_level = {LevelsByName.CRIT: "CRITICAL", LevelsByName.ERRO: "ERROR",
                    LevelsByName.WARN: "WARNING", LevelsByName.INFO: "INFO",
                    LevelsByName.DEBG: "DEBUG", LevelsByName.TRAC: "DEBUG",
                    LevelsByName.BLAT: "DEBUG"}[section.loglevel]
    assert ours.log_level == python_level
    assert (ours.identifier, ours.minfds, ours.minprocs) == (
        section.identifier, section.minfds, section.minprocs)
    assert (ours.umask or 0o22) == section.umask
    assert ours.user == section.user
    assert ours.directory == (os.path.abspath(section.directory) if section.directory
                              else None)
    servers = sorted((s.kind, s.path or None, s.host or None, s.port or None, s.username,
                      s.password, s.chmod if s.kind == "unix" else None,
                      s.chown if s.kind == "unix" else None) for s in ours.servers)
    their_servers = sorted(
        ("unix" if c.get("file") else "inet", c.get("file"), c.get("host") or None,
         c.get("port"), c["username"], c["password"], c.get("chmod"), c.get("chown"))
        for c in theirs.server_configs)
    assert servers == their_servers


def test_corpus_files_load_with_the_expected_warnings(corpus: Path) -> None:
    def warnings(name: str) -> str:
        return "\n".join(dk_config.load(str(corpus / name)).warnings)

    assert "[program:laravel-worker] inherit: unknown key, ignored" in warnings(
        "laravel-workers.conf")
    assert "superwatcher" not in warnings("awx-style.conf")  # a listener now, not skipped
    listener = dk_config.load(str(corpus / "awx-style.conf")).programs["superwatcher"]
    assert (listener.kind, listener.events, listener.group_priority) == (
        "eventlistener", ("PROCESS_STATE_FATAL",), -1)
    assert "events_enabled" not in warnings("awx-style.conf")
    assert "stdout_logfile = syslog is deprecated" in warnings("syslog-legacy.conf")
    assert "[program:hey-0] loglevel: unknown key" in warnings("tornado-group.conf")
    assert warnings("include-main.conf") == ""
    with pytest.raises(dk_config.ConfigError, match=r"inherit: unknown key.*--strict"):
        dk_config.load(str(corpus / "laravel-workers.conf"), strict=True)
