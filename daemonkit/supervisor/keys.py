"""Every key the supervisor reads: its section, default, parser, and what supervisord means by it.

One table per kind of section. The loader walks these tables instead of spelling each key out,
so adding a key is one line here, and ``check`` / the README can say, key by key, whether it
means what it means in supervisord (``SAME``), is accepted without effect (``IGNORED``, warned
at start), belongs to supervisorctl (``CLIENT``, silently accepted) or is daemonkit's own
(``EXTENSION``).

``stage`` says when a value is expanded: ``SECTION`` values once per section (``here``,
``ENV_X``, ``program_name``, ``group_name``, ``host_node_name``), ``PROCESS`` values once per
process (also ``process_num``, ``numprocs`` and the program's own ``ENV_X``), as supervisord
does; a few are never expanded (``RAW``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import datatypes as t


class Support(enum.Enum):
    SAME = "same"
    IGNORED = "ignored"
    CLIENT = "client"
    EXTENSION = "daemonkit"


class Stage(enum.Enum):
    SECTION = "section"
    PROCESS = "process"
    RAW = "raw"


@dataclass(frozen=True)
class Key:
    name: str
    default: str | None  # as text, parsed like a value from the file; None: unset
    parse: Callable[[str], Any]
    meaning: str  # what supervisord does with it (for EXTENSION: what daemonkit does)
    support: Support = Support.SAME
    stage: Stage = Stage.SECTION
    why: str = ""  # IGNORED: why it has no effect here


def _table(*keys: Key) -> dict[str, Key]:
    return {key.name: key for key in keys}


S, P = Stage.SECTION, Stage.PROCESS
IGNORED, CLIENT, EXT = Support.IGNORED, Support.CLIENT, Support.EXTENSION

SUPERVISORD = _table(
    Key("logfile", None, t.path, "the supervisor's own log file (supervisord: "
        "$CWD/supervisord.log; daemonkit: none unless set); syslog logs to syslog"),
    Key("logfile_maxbytes", "50MB", t.byte_size, "rotate the main log at this size",
        IGNORED, why="the main log is rotated by logrotate + reopen-logs"),
    Key("logfile_backups", "10", t.non_negative, "rotated main logs to keep", IGNORED,
        why="the main log is rotated by logrotate + reopen-logs"),
    Key("loglevel", "info", t.log_level, "main log level (critical, error, warn, info, debug, "
        "trace, blather)"),
    Key("pidfile", None, t.path, "the supervisor's pidfile"),
    Key("umask", "022", t.umask, "umask of the supervisor and of children without one"),
    Key("nodaemon", "false", t.boolean, "stay in the foreground", IGNORED,
        why="`run` stays in the foreground, `start` detaches"),
    Key("silent", "false", t.boolean, "no log on stdout in the foreground", IGNORED,
        why="`run` logs to the log file when one is set"),
    Key("minfds", "1024", lambda v: t.integer(v, 0), "raise the open-files limit to at least "
        "this"),
    Key("minprocs", "200", lambda v: t.integer(v, 0), "raise the process limit to at least "
        "this"),
    Key("nocleanup", "false", t.boolean, "keep old AUTO child logs at start", IGNORED,
        why="AUTO child logs have stable names and are never removed"),
    Key("childlogdir", None, t.path, "directory of AUTO child logs (supervisord: the temp dir; "
        "daemonkit: beside logfile, else the temp dir)"),
    Key("user", None, t.user, "drop to this user"),
    Key("directory", None, t.path, "working directory of the supervisor"),
    Key("strip_ansi", "false", t.boolean, "strip ANSI escapes from child logs"),
    Key("environment", "", t.text, "KEY=value pairs for every child (and ENV_X expansions)"),
    Key("identifier", "supervisor", t.text, "the supervisor's identifier (RPC, AUTO log names)"),
    Key("profile_options", None, t.text, "profile supervisord itself", IGNORED,
        why="no profiler in daemonkit"),
    Key("control", None, t.path, "where the control socket of daemonkit's CLI listens",
        EXT),
)

PROGRAM = _table(
    Key("command", None, t.text, "the command line, split like a shell would", stage=P),
    Key("process_name", None, t.text, "name of each process (default %(program_name)s; "
        "daemonkit: %(program_name)s:%(process_num)s when numprocs > 1)", stage=Stage.RAW),
    Key("numprocs", "1", t.non_negative, "how many processes"),
    Key("numprocs_start", "0", t.non_negative, "first process_num"),
    Key("priority", "999", t.priority, "start order (low first), stop order reversed"),
    Key("autostart", "true", t.boolean, "start when the supervisor starts"),
    Key("autorestart", "unexpected", t.autorestart, "restart after an exit: true, false, or "
        "unexpected (an exit code not in exitcodes)"),
    Key("startsecs", "1", t.seconds, "seconds up before RUNNING"),
    Key("startretries", "3", t.non_negative, "failed starts before FATAL"),
    Key("exitcodes", "0", t.exitcodes, "expected exit codes"),
    Key("stopsignal", "TERM", t.signal_number, "signal that asks the process to stop"),
    Key("stopwaitsecs", "10", t.seconds, "seconds between stopsignal and SIGKILL"),
    Key("stopasgroup", "false", t.boolean, "send stopsignal to the process group"),
    Key("killasgroup", None, t.boolean, "send SIGKILL to the process group (default: "
        "stopasgroup; daemonkit always kills what is left of the group)"),
    Key("user", None, t.user, "run as this user (uid, gid, supplementary groups)"),
    Key("redirect_stderr", "false", t.boolean, "stderr into the stdout log"),
    Key("stdout_logfile", "AUTO", t.logfile, "stdout log: a path, AUTO, NONE (syslog: "
        "deprecated spelling of stdout_syslog = true)", stage=P),
    Key("stdout_logfile_maxbytes", "50MB", t.byte_size, "rotate the stdout log at this size "
        "(0: never)"),
    Key("stdout_logfile_backups", "10", t.non_negative, "rotated stdout logs to keep"),
    Key("stdout_capture_maxbytes", "0", t.byte_size, "capture mode for event listeners",
        IGNORED, why="capture mode (PROCESS_COMMUNICATION) is not supported"),
    Key("stdout_events_enabled", "false", t.boolean, "PROCESS_LOG_STDOUT events for event "
        "listeners"),
    Key("stdout_syslog", "false", t.boolean, "also send stdout to syslog"),
    Key("stderr_logfile", "AUTO", t.logfile, "stderr log: a path, AUTO, NONE", stage=P),
    Key("stderr_logfile_maxbytes", "50MB", t.byte_size, "rotate the stderr log at this size"),
    Key("stderr_logfile_backups", "10", t.non_negative, "rotated stderr logs to keep"),
    Key("stderr_capture_maxbytes", "0", t.byte_size, "capture mode for event listeners",
        IGNORED, why="capture mode (PROCESS_COMMUNICATION) is not supported"),
    Key("stderr_events_enabled", "false", t.boolean, "PROCESS_LOG_STDERR events for event "
        "listeners"),
    Key("stderr_syslog", "false", t.boolean, "also send stderr to syslog"),
    Key("environment", "", t.text, "KEY=value pairs added to the process environment",
        stage=P),
    Key("directory", None, t.path, "working directory of the process", stage=P),
    Key("umask", None, t.umask, "umask of the process"),
    Key("serverurl", None, t.text, "SUPERVISOR_SERVER_URL for the process (AUTO: the "
        "supervisor's own)"),
    Key("group", None, t.group, "run with this primary group", EXT),
    Key("notify", "false", t.boolean, "RUNNING on the child's READY=1 (systemd's "
        "sd_notify) instead of after startsecs", EXT),
    Key("ready_timeout", "60", t.seconds, "notify programs: READY=1 must come within this "
        "(0: no limit)", EXT),
    Key("backoff_initial", "1", t.seconds, "first delay after a failed start (doubles each "
        "time, +-10% jitter)", EXT),
    Key("backoff_max", "30", t.seconds, "longest delay between failed starts", EXT),
    Key("depends_on", "", t.list_of_strings, "programs or groups that must be RUNNING "
        "(notify: READY=1) before this one starts; they stop after it", EXT),
)

FCGI_PROGRAM = {
    **PROGRAM,
    **_table(
        Key("socket", None, t.socket_url, "the listening socket the supervisor creates and "
            "children inherit as fd 0: unix:///path or tcp://host:port"),
        Key("socket_owner", None, t.user_group, "owner of a unix socket (user or user:group)"),
        Key("socket_mode", None, t.octal, "mode of a unix socket (default 0700)"),
        Key("socket_backlog", None, t.backlog, "listen() backlog (default SOMAXCONN)"),
    ),
}

#: supervisord's default (and daemonkit's only) result handler: OK accepts, else rebuffer
DEFAULT_RESULT_HANDLER = "supervisor.dispatchers:default_handler"

EVENTLISTENER = {
    **PROGRAM,
    **_table(
        Key("events", None, t.list_of_strings, "event types the pool receives (a type covers "
            "the types below it: PROCESS_STATE, EVENT)"),
        Key("buffer_size", "10", lambda v: t.integer(v, 1), "events the pool keeps while no "
            "listener is ready (the oldest are dropped when full)"),
        Key("result_handler", DEFAULT_RESULT_HANDLER, t.text, "what a listener's RESULT "
            f"means (only {DEFAULT_RESULT_HANDLER})"),
    ),
}

GROUP = _table(
    Key("programs", None, t.list_of_strings, "member programs, comma-separated"),
    Key("priority", "999", t.priority, "start order of the group"),
    Key("depends_on", "", t.list_of_strings, "programs or groups every member depends on",
        EXT),
)

UNIX_HTTP_SERVER = _table(
    Key("file", None, t.path, "the XML-RPC socket's path"),
    Key("chmod", "0700", t.octal, "mode of the socket file"),
    Key("chown", None, t.user_group, "owner of the socket file (user or user:group)"),
    Key("username", None, t.text, "HTTP Basic user name"),
    Key("password", None, t.text, "HTTP Basic password (plain or {SHA}hex)"),
)

INET_HTTP_SERVER = _table(
    Key("port", None, t.inet_address, "host:port of the XML-RPC server (a non-loopback host "
        "needs username and password in daemonkit)"),
    Key("username", None, t.text, "HTTP Basic user name"),
    Key("password", None, t.text, "HTTP Basic password (plain or {SHA}hex)"),
)

SUPERVISORCTL = _table(*(Key(name, None, t.text, "supervisorctl's own setting", CLIENT)
                         for name in ("serverurl", "username", "password", "prompt",
                                      "history_file")))

INCLUDE = _table(Key("files", None, t.text, "globs of more files to read, relative to the "
                     "main file"))

RPCINTERFACE = _table(Key("supervisor.rpcinterface_factory", None, t.text,
                          "the RPC interface served (supervisor.rpcinterface:"
                          "make_main_rpcinterface is built in)"))

STANDARD_RPC_FACTORY = "supervisor.rpcinterface:make_main_rpcinterface"
