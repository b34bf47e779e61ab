"""The supervisor's configuration: supervisord's files, loaded with supervisord's meaning.

:func:`load` turns a file (and its includes) into a :class:`SupervisorConfig`, checked
completely before anything acts on it: ``start`` and ``reload`` refuse a bad file with one
line naming file, section, key and why, and a running supervisor keeps its old config.
What supervisord ignores (unknown sections and keys) loads with a warning instead, unless
``strict``. The pieces: :mod:`.inifile` reads, :mod:`.expand` expands ``%(...)s``,
:mod:`.keys` says what each key is, :mod:`.datatypes` parses values.

Relative paths are resolved against the directory of the file that holds them (supervisord
resolves them against its working directory: a file started from its own directory means
the same in both), because the daemon runs in ``/`` and a client may run anywhere.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shlex
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from . import datatypes, dependencies, inifile, keys, limits
from .expand import ExpansionError, base_values, expand, with_environment
from .keys import Key, Stage, Support
from .safeopen import is_private

DEFAULT_PIDFILE = "/run/daemonkit-supervisor.pid"
#: a main log file with one of these names is the supervisor's own stdout/stderr (or
#: nothing): no log file for the core, whose stdout/stderr stay what they are (the
#: terminal under `run`, as supervisord's in the foreground), so children logging to
#: /dev/stdout reach the container's log
STDIO_PATHS = frozenset({"/dev/stdout", "/dev/stderr", "/dev/fd/1", "/dev/fd/2",
                         "/proc/self/fd/1", "/proc/self/fd/2", "/dev/null"})
#: the default name of an instance of a program with numprocs > 1 (supervisord has none)
MULTI_PROCESS_NAME = "%(program_name)s:%(process_num)s"
#: an [eventlistener:x] pool's priority unless set (supervisord's: first up, last down)
LISTENER_POOL_PRIORITY = -1
#: events an [eventlistener:x] pool may keep (each holds its payload in memory)
MAX_BUFFER_SIZE = 100_000


@dataclass(frozen=True)
class LogSpec:
    """Where one stream of an instance goes; ``path`` None: no file."""

    path: str | None
    maxbytes: int = 0  # 0: never rotate by size
    backups: int = 10
    syslog: bool = False  # also each line to syslog
    private_dir: bool = False  # an AUTO log's own directory: the supervisor makes it 0700


@dataclass(frozen=True)
class InstanceSpec:
    """Everything needed to spawn one instance, with %(...)s already expanded."""

    name: str  # the name daemonkit's CLI shows: "worker", "worker:2", "celery_00"
    program: str
    group: str  # supervisord's process group (the program's own, or its [group:x])
    process_name: str  # supervisord's name within the group
    process_num: int
    command: str
    argv: tuple[str, ...]  # empty when the command cannot be split (see command_error)
    command_error: str | None  # supervisord loads such a file; the spawn fails
    directory: str | None
    environment: tuple[tuple[str, str], ...]
    stdout: LogSpec
    stderr: LogSpec | None  # None: redirected into stdout

    @property
    def namespec(self) -> str:
        """supervisorctl's name: ``group:name``, or ``name`` when both are the same."""
        return self.group if self.group == self.process_name else (
            f"{self.group}:{self.process_name}")


@dataclass(frozen=True)
class SocketSpec:
    """The listening socket of an ``[fcgi-program:x]``."""

    address: datatypes.SocketAddress
    owner: tuple[int, int] | None = None
    mode: int | None = None
    backlog: int | None = None


@dataclass(frozen=True)
class ProgramConfig:
    """One [program:x] (or [fcgi-program:x], [eventlistener:x]). Equality decides what a
    reload restarts."""

    name: str
    source: str = field(compare=False)  # file that defined it, for messages
    command: str  # the raw template; expanded per instance
    process_name: str  # raw template; "" means the default, see name_template()
    numprocs: int
    numprocs_start: int
    directory: str  # raw template, "" for none
    environment: str  # raw KEY=value template
    user: str | None
    group: str | None  # the unix group to run with (daemonkit's key)
    umask: int | None
    autostart: bool
    autorestart: str  # "true" | "false" | "unexpected"
    exitcodes: frozenset[int]
    startsecs: float
    startretries: int
    stopsignal: int
    stopwaitsecs: float
    stopasgroup: bool
    killasgroup: bool
    stdout_logfile: str  # raw template
    stderr_logfile: str
    redirect_stderr: bool
    stdout_logfile_maxbytes: int
    stdout_logfile_backups: int
    stderr_logfile_maxbytes: int
    stderr_logfile_backups: int
    stdout_syslog: bool
    stderr_syslog: bool
    priority: int
    notify: bool
    ready_timeout: float  # notify programs: READY=1 must come within this (0: no limit)
    backoff_initial: float
    backoff_max: float
    here: str = field(compare=False)
    kind: str = "program"  # or "fcgi-program", "eventlistener"
    group_name: str = ""  # supervisord's process group ("" until the config is built)
    group_priority: int = 999
    serverurl: str | None = None  # SUPERVISOR_SERVER_URL
    socket: SocketSpec | None = None
    #: from [supervisord]: where AUTO log files go, the name in them, every child's environment
    childlogdir: str = "/tmp"
    identifier: str = "supervisor"
    log_uid: int = -1  # who writes AUTO logs: [supervisord] user, else who loaded the file
    base_environment: tuple[tuple[str, str], ...] = ()
    strip_ansi: bool = False
    stdout_events_enabled: bool = False  # PROCESS_LOG_STDOUT events of its output
    stderr_events_enabled: bool = False
    #: [eventlistener:x]: the event types subscribed to (upper case), the pool's buffer
    events: tuple[str, ...] = ()
    buffer_size: int = 10
    #: the programs that must be RUNNING before this one starts ([group:x] depends_on and
    #: groups already resolved to programs); not compared: a new depends_on applies to the
    #: next start, it does not restart a running program
    depends_on: tuple[str, ...] = field(default=(), compare=False)
    #: ENV_X and host_node_name at load time (one dict shared by every program)
    values: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)
    #: (process_num, numprocs) -> InstanceSpec: expanded once, while loading (off the loop),
    #: not again when the loop creates the instances
    expanded: dict[tuple[int, int], InstanceSpec] = field(default_factory=dict, compare=False,
                                                          repr=False)
    equal_values: dict[tuple[Any, ...], tuple[Any, ...]] = field(
        default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # a copy (dataclasses.replace) may differ in what expands: it starts a cache of its own
        object.__setattr__(self, "expanded", {})
        object.__setattr__(self, "equal_values", {})

    def same_config(self, other: ProgramConfig, numprocs: int | None = None) -> bool:
        """Nothing but ``numprocs`` differs: the running instances can stay."""
        if dataclasses.replace(self, numprocs=other.numprocs) != other:
            return False
        count = min(self.numprocs, other.numprocs) if numprocs is None else numprocs
        # %(here)s or ENV_X may expand differently although the text is the same
        return all(self.instance(num, count) == other.instance(num, count)
                   for num in self.process_nums(max(count, 1)))

    same_except_numprocs = same_config

    def process_nums(self, numprocs: int | None = None) -> range:
        count = self.numprocs if numprocs is None else numprocs
        return range(self.numprocs_start, self.numprocs_start + count)

    def name_template(self, numprocs: int | None = None) -> str:
        """``process_name``; its default depends on the instance count (``w`` or ``w:N``)."""
        count = self.numprocs if numprocs is None else numprocs
        if self.process_name:
            return self.process_name
        return MULTI_PROCESS_NAME if count > 1 else "%(program_name)s"

    def instance(self, process_num: int, numprocs: int | None = None) -> InstanceSpec:
        """Expand the per-process keys; ConfigError names the key that failed.

        Only the default name depends on ``numprocs`` (``w`` or ``w:0``); what an instance
        runs does not, so scaling renames but never changes a process."""
        count = self.numprocs if numprocs is None else numprocs
        cached = self.expanded.get((process_num, count))
        if cached is None:
            cached = self._expand(process_num, count)
            if len(self.expanded) < limits.MAX_NUMPROCS:
                self.expanded[process_num, count] = cached
        return cached

    def _expand(self, process_num: int, numprocs: int) -> InstanceSpec:
        section = f"{self.kind}:{self.name}"
        values: dict[str, object] = {
            **self.values, "here": self.here, "program_name": self.name,
            "group_name": self.group_name or self.name, "process_num": process_num,
            "numprocs": self.numprocs if numprocs is None else numprocs}

        def expanded(key: str, raw: str) -> str:
            try:
                return expand(raw, values, f"{section} {key}")
            except ExpansionError as exc:
                raise _error(self.source, section, key, str(exc)) from None

        try:
            own_env = datatypes.key_value_pairs(expanded("environment", self.environment))
        except ValueError as exc:
            raise _error(self.source, section, "environment", str(exc)) from None
        values = with_environment(values, own_env)  # the program's ENV_X, for what follows
        name = expanded("process_name", self.name_template(numprocs))
        command = expanded("command", self.command)
        argv: tuple[str, ...] = ()
        command_error = None
        try:
            argv = tuple(shlex.split(command))
        except ValueError as exc:
            command_error = f"can't parse command {command!r}: {exc}"
        if not argv and command_error is None:
            command_error = "command is empty"
        directory = expanded("directory", self.directory) if self.directory else None
        environment = dict(self.base_environment)  # [supervisord] environment; the program's
        environment.update(own_env)  # own wins
        stdout = self._log("stdout", expanded("stdout_logfile", self.stdout_logfile), name)
        stderr = None
        if not self.redirect_stderr:
            stderr = self._log("stderr", expanded("stderr_logfile", self.stderr_logfile), name)
        group = self.group_name or self.name
        process_name = name[len(group) + 1:] if name.startswith(f"{group}:") else name
        return InstanceSpec(name, self.name, group, process_name, process_num, command,
                            self._shared(argv), command_error,
                            _resolve(self.here, directory) if directory else None,
                            self._shared(tuple(environment.items())), stdout, stderr)

    def _shared(self, value: tuple[Any, ...]) -> tuple[Any, ...]:
        """One object for equal argv and environments of the instances: less memory, and a
        reload's pickled config (see :mod:`.isolated`) ten times smaller and faster."""
        return self.equal_values.setdefault(value, value)

    def _log(self, channel: str, value: str, name: str) -> LogSpec:
        choice = datatypes.logfile(value)
        maxbytes = getattr(self, f"{channel}_logfile_maxbytes")
        backups = getattr(self, f"{channel}_logfile_backups")
        syslog = bool(getattr(self, f"{channel}_syslog")) or choice == "SYSLOG"
        if choice in ("NONE", "SYSLOG"):
            path = None
        elif choice == "AUTO":  # a stable name (supervisord adds a random part): output
            # survives a supervisor restart in the same file; in a directory others can
            # write (/tmp), inside a 0700 directory of the supervisor's, where nobody can
            # plant a symlink or FIFO under the name
            directory = auto_log_dir(self.childlogdir, self.identifier, self.log_uid)
            path = os.path.join(directory, f"{name}-{channel}---{self.identifier}.log")
            return LogSpec(path, maxbytes, backups, syslog,
                           private_dir=directory != self.childlogdir)
        else:
            path = _resolve(self.here, choice)
        return LogSpec(path, maxbytes, backups, syslog)


@dataclass(frozen=True)
class GroupConfig:
    """A supervisord process group: a program's own, or a ``[group:x]`` of programs."""

    name: str
    priority: int
    programs: tuple[str, ...]
    explicit: bool  # a [group:x] section (else the program's homogeneous group)


@dataclass(frozen=True)
class HttpServerConfig:
    """An XML-RPC server: ``[unix_http_server]`` or ``[inet_http_server]``."""

    section: str
    kind: str  # "unix" | "inet"
    path: str = ""
    chmod: int = 0o700
    chown: tuple[int, int] = (-1, -1)
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        if self.kind == "unix":
            return f"unix://{self.path}"
        host = self.host or "localhost"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


@dataclass(frozen=True)
class SupervisorConfig:
    path: str
    pidfile: str
    logfile: str | None
    control: str | None
    user: str | None
    umask: int | None
    programs: dict[str, ProgramConfig]
    web: Any = None  # a daemonkit.web.config.WebConfig
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    #: every process group by name, [group:x] sections and programs' own groups alike
    all_groups: dict[str, GroupConfig] = field(default_factory=dict)
    childlogdir: str = "/tmp"
    log_level: str = "INFO"
    syslog: bool = False  # logfile = syslog
    directory: str | None = None
    identifier: str = "supervisor"
    minfds: int = 1024
    minprocs: int = 200
    servers: tuple[HttpServerConfig, ...] = ()
    serverurl: str | None = None
    strict: bool = False
    top_section: str = "supervisord"  # which of [supervisord] / [supervisor] the file uses

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """``[group:x]`` sections only: group -> member programs."""
        return {name: g.programs for name, g in self.all_groups.items() if g.explicit}

    def instance_names(self) -> list[str]:
        """Names of all instances, in start order."""
        return [self.programs[p].instance(n).name
                for p in self.program_order() for n in self.programs[p].process_nums()]

    def program_order(self) -> list[str]:
        """Start order as supervisord's: by group priority, then the program's own; with
        depends_on, dependencies first whatever their priority (ties by priority)."""
        return dependencies.start_order(self.programs, self.dependency_graph(),
                                        self.order_key)

    def dependency_graph(self) -> dict[str, tuple[str, ...]]:
        """Program -> the programs it depends on (only programs with depends_on)."""
        return {name: p.depends_on for name, p in self.programs.items() if p.depends_on}

    def order_key(self, program: str) -> tuple[int, str, int, str]:
        config = self.programs[program]
        return (config.group_priority, config.group_name, config.priority, program)

    def stop_waves(self) -> dict[str, int]:
        """Program -> its shutdown wave (:func:`dependencies.stop_waves`). Event listeners
        without depends_on have none: they stop after every wave, once drained."""
        staged = [p for p in self.program_order()
                  if self.programs[p].kind != "eventlistener" or self.programs[p].depends_on]
        return dependencies.stop_waves(staged, self.dependency_graph(),
                                       lambda p: self.programs[p].group_priority)

    def stop_chain_s(self) -> float:
        """How long stopping every program may take: one wave after the other, each as long
        as its slowest program's stopwaitsecs; event listeners stop after all of that, once
        drained (``LISTENER_DRAIN_S``)."""
        waves = self.stop_waves()
        chain = _stages_s((wave, self.programs[p].stopwaitsecs) for p, wave in waves.items())
        listeners = [p for name, p in self.programs.items() if name not in waves]
        if listeners:
            chain += LISTENER_DRAIN_S + max(p.stopwaitsecs for p in listeners)
        return chain

    def stop_timeout(self) -> float:
        """How long stopping the whole supervisor may take (the core's --stop-timeout)."""
        return min(self.stop_chain_s() + 5.0, 86399.0)


def _stages_s(stopwaits: Iterable[tuple[int, float]]) -> float:
    """Of (stage, stopwaitsecs) pairs: stages stop one after the other, each as slow as its
    slowest program."""
    slowest: dict[int, float] = {}
    for stage, stopwait in stopwaits:
        slowest[stage] = max(stopwait, slowest.get(stage, 0.0))
    return sum(slowest.values())


#: how long a shutdown lets event listeners work through what is buffered for them once
#: every program has stopped, before they are signalled too
LISTENER_DRAIN_S = 2.0


def _error(source: str, section: str, key: str | None, why: str) -> ConfigError:
    where = f"[{section}] {key}" if key else f"[{section}]"
    return ConfigError(f"{source}: {where}: {why}")


def _resolve(here: str, path: str) -> str:
    return os.path.normpath(os.path.join(here, os.path.expanduser(path)))


# -- loading ----------------------------------------------------------------------------------

#: section names (or prefixes, ending in ':') and the table of keys each one takes
_SECTION_TABLES: dict[str, dict[str, Key]] = {
    "supervisord": keys.SUPERVISORD, "supervisor": keys.SUPERVISORD,
    "program:": keys.PROGRAM, "fcgi-program:": keys.FCGI_PROGRAM, "group:": keys.GROUP,
    "eventlistener:": keys.EVENTLISTENER,
    "unix_http_server": keys.UNIX_HTTP_SERVER, "unix_http_server:": keys.UNIX_HTTP_SERVER,
    "inet_http_server": keys.INET_HTTP_SERVER, "inet_http_server:": keys.INET_HTTP_SERVER,
    "supervisorctl": keys.SUPERVISORCTL, "include": keys.INCLUDE,
    "rpcinterface:": keys.RPCINTERFACE,
}
_ALL_KEYS = {name for table in _SECTION_TABLES.values() for name in table}


def table_for(section: str) -> dict[str, Key] | None:
    if section in _SECTION_TABLES:
        return _SECTION_TABLES[section]
    prefix = section.split(":", 1)[0] + ":"
    return _SECTION_TABLES.get(prefix) if ":" in section else None


def load(path: str, strict: bool = False) -> SupervisorConfig:
    """Read, include and validate ``path``; raise ConfigError (one line) on any problem.

    ``strict``: what supervisord ignores and daemonkit would only warn about (unknown sections
    and keys, a broken section header) is an error too."""
    return _Loader(os.path.abspath(path), strict).load()


#: the config the CLI read and validated, for the supervisor it starts in the same process
_handed_over: dict[tuple[str, bool], SupervisorConfig] = {}


def hand_over(path: str, strict: bool, config: SupervisorConfig) -> None:
    """Keep ``config`` for one :func:`take_over` of the same file: ``start`` validates the
    file, then configures the supervisor from it, and reading 2,000 programs twice cost
    half a second of the start."""
    _handed_over[(os.path.abspath(path), strict)] = config


def take_over(path: str, strict: bool = False) -> SupervisorConfig:
    """What :func:`hand_over` kept for ``path`` (once), else :func:`load`."""
    kept = _handed_over.pop((os.path.abspath(path), strict), None)
    return kept if kept is not None else load(path, strict=strict)


@dataclass
class Settings:
    """What the CLI needs to find and drive a supervisor, read leniently (a file broken after
    the start must not keep ``stop`` or ``status`` from working)."""

    pidfile: str
    logfile: str | None
    user: str | None
    control: str | None
    stop_timeout: float
    log_level: str = "INFO"
    syslog: bool = False
    umask: int | None = None
    directory: str | None = None


def read_settings(path: str, with_programs: bool = True) -> Settings:
    """The ``[supervisord]`` section (and every program's stopwaitsecs) through the same
    reader and keys as :func:`load`, skipping anything that does not parse; ConfigError
    only when the file itself cannot be opened (``stop`` would otherwise look for the
    supervisor at the default pidfile and say it is not running).

    ``with_programs=False`` (``status``): the programs are not read at all, and the stop
    timeout is the default: 2,000 program sections cost a status 0.2 s to parse."""
    try:  # the file itself must be there: a pidfile guessed without it would be a lie
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    loader = _Loader(os.path.abspath(path), strict=False, lenient=True)
    loader.keys_of = _settings_keys if with_programs else _top_keys
    try:
        loader.read()
    except ConfigError:
        try:  # an include that cannot be read (/dev/zero, a FIFO) hides no [supervisord],
            # nor does a byte that is not UTF-8 elsewhere in the file
            loader.read(includes=False, lenient=True)
        except ConfigError:
            return Settings(DEFAULT_PIDFILE, None, None, None, 15.0)
    top = loader.supervisor_section()
    stopwait_of: dict[str, float] = {}
    order_key: dict[str, tuple[int, str, int, str]] = {}  # as SupervisorConfig.order_key
    listeners: set[str] = set()
    group_of = _lenient_groups(loader)
    for name in loader.document.sections:
        if name.startswith(("program:", "fcgi-program:", "eventlistener:")):
            program = name.split(":", 1)[1]
            try:
                stopwait_of[program] = loader.section_value(name, keys.PROGRAM["stopwaitsecs"])
            except ConfigError:
                stopwait_of[program] = 10.0
            try:
                priority = loader.section_value(name, keys.PROGRAM["priority"])
            except ConfigError:
                priority = 999
            own_group = priority
            if name.startswith("eventlistener:"):
                listeners.add(program)
                if loader.document.get(name, "priority") is None:  # as load's pools
                    own_group = LISTENER_POOL_PRIORITY
            group_priority, group_name = group_of.get(program, (own_group, program))
            order_key[program] = (group_priority, group_name, priority, program)
    # as SupervisorConfig.stop_chain_s, from what a file that does not load still says
    graph = loader.lenient_dependency_graph()
    order = [p for p in dependencies.start_order(order_key, graph, order_key.__getitem__)
             if p not in listeners or graph.get(p)]
    waves = dependencies.stop_waves(order, graph, lambda p: order_key[p][0])
    chain = _stages_s((wave, stopwait_of[p]) for p, wave in waves.items())
    unstaged = [stopwait_of[p] for p in stopwait_of if p not in waves]
    if unstaged:
        chain += LISTENER_DRAIN_S + max(unstaged)
    stop_timeout = min(chain + 5.0, 86399.0)
    return Settings(top["pidfile"], top["logfile"], top["user"], top["control"], stop_timeout,
                    top["log_level"], top["syslog"], top["umask"], top["directory"])


def _lenient_groups(loader: _Loader) -> dict[str, tuple[int, str]]:
    """Program -> (priority, name) of the ``[group:]`` it is in, as far as a file that does
    not load says it: shutdown goes by group priority."""
    group_of: dict[str, tuple[int, str]] = {}
    for name in loader.document.sections:
        if not name.startswith("group:"):
            continue
        try:
            members = loader.section_value(name, keys.GROUP["programs"])
            priority = loader.section_value(name, keys.GROUP["priority"])
        except ConfigError:
            continue
        for member in members or ():
            group_of.setdefault(member, (priority, name.split(":", 1)[1]))
    return group_of


#: what read_settings needs of a program: its stop timeout, what that may expand, and what
#: orders a shutdown (a stop that waited for one level of it would give up too soon)
_PROGRAM_SETTING_KEYS = frozenset({"stopwaitsecs", "numprocs", "numprocs_start",
                                   "process_name", "priority", "depends_on"})
_GROUP_SETTING_KEYS = frozenset({"programs", "priority", "depends_on"})


def _settings_keys(section: str) -> frozenset[str] | None:
    if section.startswith(("program:", "fcgi-program:", "eventlistener:")):
        return _PROGRAM_SETTING_KEYS
    if section.startswith("group:"):
        return _GROUP_SETTING_KEYS
    if section.startswith("rpcinterface:"):
        return frozenset()
    return None  # [supervisord], [include], [DEFAULT], the servers...: all of it


def _top_keys(section: str) -> frozenset[str] | None:
    """Not even the programs' headers: no section for them at all."""
    if section.startswith(("program:", "fcgi-program:", "eventlistener:", "group:",
                           "rpcinterface:")):
        return inifile.DROP
    return None


class _Loader:
    def __init__(self, path: str, strict: bool, lenient: bool = False) -> None:
        self.path = path
        self.strict = strict
        self.lenient = lenient  # read_settings: a bad [supervisord] value is skipped
        self.keys_of: inifile.KeysOf | None = None  # read_settings: the few keys it needs
        self.document = inifile.Document(path)
        self.warnings: list[str] = []
        self.values: dict[str, object] = base_values()
        self.top_name = ""  # "supervisord", "supervisor" or "" (none)
        self.top_environment: tuple[tuple[str, str], ...] = ()
        self.group_depends_on: dict[str, tuple[str, ...]] = {}  # [group:x] -> names

    def warn(self, text: str, unknown: bool = False) -> None:
        """``unknown``: something supervisord ignores silently; an error when strict."""
        if unknown and self.strict:
            raise ConfigError(f"{text} (refused: --strict)")
        if text not in self.warnings:
            self.warnings.append(text)

    # -- reading values through the key tables ---------------------------------------------

    def read(self, includes: bool = True, lenient: bool = False) -> None:
        self.document = inifile.read(self.path, self.values, includes, lenient, self.keys_of)
        tops = [n for n in ("supervisord", "supervisor") if n in self.document.sections]
        if len(tops) > 1:
            section = self.document.sections["supervisor"]
            raise _error(section.file, "supervisor", None, "[supervisor] and [supervisord] "
                         "both present: use one of them")
        self.top_name = tops[0] if tops else ""
        if self.top_name:  # [supervisord] environment feeds every ENV_X expansion
            environment = self.raw_value(self.top_name, keys.SUPERVISORD["environment"])
            try:
                pairs = datatypes.key_value_pairs(environment)
            except ValueError as exc:
                raise self.key_error(self.top_name, "environment", str(exc)) from None
            self.values = with_environment(self.values, pairs)
            self.top_environment = pairs

    def source(self, section: str, key: str | None = None) -> str:
        value = self.document.get(section, key) if key else None
        if value is not None:
            return value.file
        found = self.document.sections.get(section)
        return found.file if found else self.path

    def key_error(self, section: str, key: str, why: str) -> ConfigError:
        return _error(self.source(section, key), section, key, why)

    def raw_value(self, section: str, key: Key, extra: Mapping[str, object] | None = None
                  ) -> str:
        """The value as text, expanded for the section (not for a process)."""
        found = self.document.get(section, key.name)
        raw = found.text if found is not None else key.default
        if raw is None:
            return ""
        if key.stage is not Stage.SECTION:
            return raw
        here = os.path.dirname(found.file if found is not None else self.path)
        try:
            return expand(raw, {**self.values, "here": here, **(extra or {})})
        except ExpansionError as exc:
            raise self.key_error(section, key.name, str(exc)) from None

    def section_value(self, section: str, key: Key,
                      extra: Mapping[str, object] | None = None) -> Any:
        """The parsed value, or None when the key is unset and has no default."""
        if self.document.get(section, key.name) is None and key.default is None:
            return None
        text = self.raw_value(section, key, extra)
        try:
            value = key.parse(text)
        except ValueError as exc:
            raise self.key_error(section, key.name, str(exc)) from None
        out_of_bounds = limits.check_key(key.name, value)
        if out_of_bounds:
            raise self.key_error(section, key.name, out_of_bounds)
        return value

    def check_keys(self, section: str, table: Mapping[str, Key]) -> None:
        unknown = sorted(self.document.keys(section) - set(table))
        if unknown:
            self.warn(f"{self.source(section, unknown[0])}: [{section}] "
                      f"{', '.join(unknown)}: unknown key{'s' if len(unknown) > 1 else ''}, "
                      "ignored", unknown=True)
        ignored = sorted(k for k in self.document.keys(section)
                         if k in table and table[k].support is Support.IGNORED)
        if ignored:
            whys = "; ".join(f"{k}: {table[k].why}" for k in ignored)
            self.warn(f"{self.source(section, ignored[0])}: [{section}] {', '.join(ignored)}: "
                      f"accepted and ignored ({whys})")

    # -- the whole file -----------------------------------------------------------------------

    def load(self) -> SupervisorConfig:
        self.read()
        self.warnings = list(self.document.warnings)
        for text in list(self.warnings):
            if "is not a section header" in text and self.strict:
                raise ConfigError(f"{text} (refused: --strict)")
        self.check_sections()
        top = self.supervisor_section()
        servers = self.servers()
        serverurl = next((s.url for s in servers if s.kind == "unix"),
                         next((s.url for s in servers), None))
        groups = self.groups()
        programs = self.programs(groups, top, serverurl)
        all_groups = self.all_groups(groups, programs)
        programs = {name: dataclasses.replace(
            program, group_priority=all_groups[program.group_name].priority)
            for name, program in programs.items()}
        programs = self.resolve_dependencies(programs, groups)
        self.check_instances(programs)
        return SupervisorConfig(
            path=self.path, pidfile=top["pidfile"], logfile=top["logfile"],
            control=top["control"], user=top["user"], umask=top["umask"], programs=programs,
            web=self.web(), files=tuple(self.document.files), warnings=tuple(self.warnings),
            all_groups=all_groups, childlogdir=top["childlogdir"], log_level=top["log_level"],
            syslog=top["syslog"], directory=top["directory"], identifier=top["identifier"],
            minfds=top["minfds"], minprocs=top["minprocs"], servers=servers,
            serverurl=serverurl, strict=self.strict, top_section=self.top_name or "supervisord")

    def check_sections(self) -> None:
        for name in self.document.sections:
            table = table_for(name)
            if name == "web":
                continue
            if name.startswith("ctlplugin:"):
                continue  # supervisorctl's plugins: nothing for the server to do
            if table is None:
                self.warn(f"{self.source(name)}: [{name}]: unknown section, ignored",
                          unknown=True)
                continue
            self.check_keys(name, table)
            if name.startswith("rpcinterface:"):
                factory = self.raw_value(name, keys.RPCINTERFACE["supervisor.rpcinterface_factory"])
                if factory.strip() != keys.STANDARD_RPC_FACTORY:
                    self.warn(f"{self.source(name)}: [{name}] skipped: only supervisord's own "
                              f"interface ({keys.STANDARD_RPC_FACTORY}) is served")
        stray = sorted(set(self.document.defaults) - _ALL_KEYS)
        if stray:
            self.warn(f"{self.path}: [DEFAULT] {', '.join(stray)}: unknown in every section, "
                      "ignored", unknown=True)

    def supervisor_section(self) -> dict[str, Any]:
        name = self.top_name or "supervisord"
        here = os.path.dirname(self.source(name)) if self.top_name else os.path.dirname(
            self.path)
        table = keys.SUPERVISORD

        def get(key: str) -> Any:
            try:
                return self.section_value(name, table[key])
            except ConfigError:
                if self.lenient:
                    return None
                raise

        def resolved(key: str) -> str | None:
            value = get(key)
            return _resolve(here, value) if value else None

        logfile = get("logfile") or None
        syslog = logfile is not None and logfile.strip().lower() == "syslog"
        if syslog or (logfile is not None and os.path.normpath(logfile) in STDIO_PATHS):
            logfile = None  # syslog, or the supervisor's own stdout/stderr
        elif logfile is not None:
            logfile = _resolve(here, logfile)
        umask = get("umask")
        if umask == 0:
            self.warn(f"{self.source(name, 'umask')}: [{name}] umask: 000 is not applied "
                      "(daemonkit never runs with umask 0); 022 is used")
            umask = None
        childlogdir = resolved("childlogdir")
        if childlogdir is None:  # beside the supervisor's own log, if that is a real file
            regular = logfile is not None and not logfile.startswith(("/dev/", "/proc/"))
            childlogdir = os.path.dirname(logfile) if regular and logfile else temp_dir()
        directory = resolved("directory")
        if directory is not None and not os.path.isdir(directory) and not self.lenient:
            raise self.key_error(name, "directory", f"{directory} is not an existing directory")
        identifier = get("identifier") or "supervisor"
        if "/" in identifier or identifier in (".", ".."):
            raise self.key_error(name, "identifier", f"{identifier!r} cannot be part of a "
                                 "file name")
        return {"pidfile": resolved("pidfile") or DEFAULT_PIDFILE, "logfile": logfile,
                "syslog": syslog, "control": resolved("control"), "user": get("user"),
                "umask": umask, "childlogdir": childlogdir,
                "log_level": get("loglevel") or "INFO", "directory": directory,
                "identifier": identifier, "minfds": get("minfds") or 0,
                "minprocs": get("minprocs") or 0, "strip_ansi": bool(get("strip_ansi"))}

    def servers(self) -> tuple[HttpServerConfig, ...]:
        found: list[HttpServerConfig] = []
        for name in self.document.sections:
            if name.split(":", 1)[0] == "inet_http_server":
                found.append(self.inet_server(name))
        for name in self.document.sections:
            if name.split(":", 1)[0] == "unix_http_server":
                found.append(self.unix_server(name))
        return tuple(found)

    def credentials(self, name: str, table: Mapping[str, Key]) -> tuple[str | None, str | None]:
        username = self.section_value(name, table["username"])
        password = self.section_value(name, table["password"])
        if (username is None) != (password is None):
            raise _error(self.source(name), name, None, "incomplete authentication: set both "
                         "username and password, or neither")
        return username, password

    def inet_server(self, name: str) -> HttpServerConfig:
        table = keys.INET_HTTP_SERVER
        address = self.section_value(name, table["port"])
        if address is None:
            raise self.key_error(name, "port", "missing (an inet_http_server needs its port)")
        host, port = address
        username, password = self.credentials(name, table)
        if username is None and not _loopback(host):
            shown = f"{host or '*'}:{port}"
            self.warn(f"{self.source(name, 'port')}: [{name}] port = {shown} without username "
                      f"and password: served on 127.0.0.1:{port} only (an unauthenticated "
                      "control port must not face the network; set username and password to "
                      "serve it there)")
            host = "127.0.0.1"
        return HttpServerConfig(name, "inet", host=host, port=port, username=username,
                                password=password)

    def unix_server(self, name: str) -> HttpServerConfig:
        table = keys.UNIX_HTTP_SERVER
        path = self.section_value(name, table["file"])
        if not path:
            raise self.key_error(name, "file", "missing (a unix_http_server needs its file)")
        username, password = self.credentials(name, table)
        chown = self.section_value(name, table["chown"]) or (-1, -1)
        return HttpServerConfig(name, "unix",
                                path=_resolve(os.path.dirname(self.source(name, "file")), path),
                                chmod=self.section_value(name, table["chmod"]), chown=chown,
                                username=username, password=password)

    def groups(self) -> dict[str, GroupConfig]:
        groups: dict[str, GroupConfig] = {}
        member_of: dict[str, str] = {}
        for name in self.document.sections:
            if not name.startswith("group:"):
                continue
            group = self.name_of(name)
            members = self.section_value(name, keys.GROUP["programs"])
            if not members:
                raise self.key_error(name, "programs", "missing (a group needs its programs)")
            for member in members:
                in_program = f"program:{member}" in self.document.sections
                in_fcgi = f"fcgi-program:{member}" in self.document.sections
                if not (in_program or in_fcgi):
                    raise self.key_error(name, "programs", f"no [program:{member}] section")
                if member in member_of:
                    raise self.key_error(name, "programs",
                                         f"{member} is already in [group:{member_of[member]}]")
                member_of[member] = group
            groups[group] = GroupConfig(group, self.section_value(name, keys.GROUP["priority"]),
                                        tuple(members), explicit=True)
            self.group_depends_on[group] = self.depends_on_names(name, keys.GROUP)
        return groups

    def depends_on_names(self, section: str, table: Mapping[str, Key]) -> tuple[str, ...]:
        names = self.section_value(section, table["depends_on"]) or ()
        return tuple(n for n in names if n)

    def resolve_dependencies(self, programs: dict[str, ProgramConfig],
                             groups: dict[str, GroupConfig]) -> dict[str, ProgramConfig]:
        """Each program's depends_on as programs; an unknown name or a cycle is an error."""
        own = {name: self.depends_on_names(f"{p.kind}:{name}", keys.PROGRAM)
               for name, p in programs.items()}
        try:
            graph = dependencies.resolve(own, self.group_depends_on,
                                         {g: spec.programs for g, spec in groups.items()},
                                         programs, {m: g for g, spec in groups.items()
                                                    for m in spec.programs})
        except dependencies.DependencyError as exc:
            raise self.key_error(self.section_of(exc.section, programs), "depends_on",
                                 str(exc)) from None
        cycle = dependencies.find_cycle(graph)
        if cycle is not None:
            section = self.section_of(f"program:{cycle[0]}", programs)
            if self.document.get(section, "depends_on") is None:  # inherited from its group
                group = next((g for g, spec in groups.items() if cycle[0] in spec.programs), "")
                section = f"group:{group}" if group else section
            raise self.key_error(section, "depends_on",
                                 f"dependency cycle: {' -> '.join(cycle)}")
        return {name: dataclasses.replace(p, depends_on=graph.get(name, ()))
                for name, p in programs.items()}

    @staticmethod
    def section_of(section: str, programs: Mapping[str, ProgramConfig]) -> str:
        """``program:x`` as the file spells it (``fcgi-program:x`` for those)."""
        kind, _, name = section.partition(":")
        if kind == "program" and name in programs:
            return f"{programs[name].kind}:{name}"
        return section

    def lenient_dependency_graph(self) -> dict[str, tuple[str, ...]]:
        """read_settings' depends_on, from a file that may not even load: depending on a
        group is depending on its members, and members inherit a group's depends_on."""
        needs: dict[str, tuple[str, ...]] = {}
        members_of: dict[str, tuple[str, ...]] = {}
        for name in self.document.sections:
            kind, _, short = name.partition(":")
            if kind not in ("program", "fcgi-program", "eventlistener", "group"):
                continue
            table = keys.GROUP if kind == "group" else keys.PROGRAM
            try:
                needs[name] = self.depends_on_names(name, table)
                if kind == "group":
                    members_of[short] = self.section_value(name, keys.GROUP["programs"]) or ()
            except ConfigError:
                continue
        graph: dict[str, tuple[str, ...]] = {}
        for name, needed in needs.items():
            kind, _, short = name.partition(":")
            resolved = tuple(p for n in needed for p in members_of.get(n, (n,)))
            for program in members_of.get(short, ()) if kind == "group" else (short,):
                graph[program] = (*graph.get(program, ()), *resolved)
        return graph

    def name_of(self, section: str) -> str:
        try:
            return datatypes.process_or_group_name(section.split(":", 1)[1])
        except ValueError as exc:
            raise _error(self.source(section), section, None, str(exc)) from None

    def programs(self, groups: dict[str, GroupConfig], top: dict[str, Any],
                 serverurl: str | None) -> dict[str, ProgramConfig]:
        member_of = {m: g.name for g in groups.values() for m in g.programs}
        programs: dict[str, ProgramConfig] = {}
        sections = [s for s in self.document.sections
                    if s.split(":", 1)[0] in ("program", "fcgi-program")]
        if len(sections) > limits.MAX_INSTANCES:
            raise _error(self.source(sections[limits.MAX_INSTANCES]),
                         sections[limits.MAX_INSTANCES], None,
                         f"more than {limits.MAX_INSTANCES} programs (the limit)")
        for section in self.document.sections:
            kind = section.split(":", 1)[0]
            if kind not in ("program", "fcgi-program", "eventlistener"):
                continue
            program = self.program(section, kind, member_of, top, serverurl)
            if program.name in programs:
                raise _error(program.source, section, None,
                             f"{program.name} is also defined as [{programs[program.name].kind}"
                             f":{program.name}]")
            programs[program.name] = program
        return programs

    def program(self, section: str, kind: str, member_of: dict[str, str], top: dict[str, Any],
                serverurl: str | None) -> ProgramConfig:
        name = self.name_of(section)
        table = {"fcgi-program": keys.FCGI_PROGRAM,
                 "eventlistener": keys.EVENTLISTENER}.get(kind, keys.PROGRAM)
        group_name = member_of.get(name, name)
        extra = {"program_name": name, "group_name": group_name}
        command_value = self.document.get(section, "command")
        if command_value is None:
            raise self.key_error(section, "command", "missing (every program needs a command)")
        here = os.path.dirname(command_value.file)
        parsed: dict[str, Any] = {}
        for key in table.values():
            if key.stage is Stage.SECTION:
                parsed[key.name] = self.section_value(section, key, extra)
            else:
                found = self.document.get(section, key.name)
                parsed[key.name] = found.text if found is not None else (key.default or "")
        if parsed["killasgroup"] is None:
            parsed["killasgroup"] = parsed["stopasgroup"]
        if parsed["stopasgroup"] and not parsed["killasgroup"]:
            raise self.key_error(section, "killasgroup",
                                 "cannot be false when stopasgroup is true")
        process_name = parsed["process_name"]
        if process_name:
            try:  # ':' is allowed (name:N, as daemonkit's own default); supervisord refuses it
                datatypes.process_or_group_name(process_name.replace(":", "_"))
            except ValueError as exc:
                raise self.key_error(section, "process_name", str(exc)) from None
            if parsed["numprocs"] > 1 and "%(process_num)" not in process_name:
                raise self.key_error(section, "process_name",
                                     "must contain %(process_num)s when numprocs > 1")
        if parsed["backoff_max"] < parsed["backoff_initial"]:
            raise self.key_error(section, "backoff_max", "must be >= backoff_initial")
        if parsed["redirect_stderr"] and datatypes.logfile(parsed["stderr_logfile"]) not in (
                "AUTO", "NONE") and self.document.get(section, "stderr_logfile") is not None:
            self.warn(f"{self.source(section, 'stderr_logfile')}: [{section}] redirect_stderr = "
                      "true and stderr_logfile is set: stderr goes to the stdout log (as in "
                      "supervisord), stderr_logfile is ignored")
        for channel in ("stdout", "stderr"):
            if datatypes.logfile(parsed[f"{channel}_logfile"]) == "SYSLOG":
                self.warn(f"{self.source(section, f'{channel}_logfile')}: [{section}] "
                          f"{channel}_logfile = syslog is deprecated (as in supervisord 4): "
                          f"read as {channel}_syslog = true, no log file")
        events: tuple[str, ...] = ()
        if kind == "eventlistener":
            events = self.listener_events(section, parsed)
        own_url = parsed["serverurl"]
        if own_url is not None and own_url.strip().upper() == "AUTO":
            own_url = None
        return ProgramConfig(
            name=name, source=command_value.file, command=parsed["command"],
            process_name=process_name or "", numprocs=parsed["numprocs"],
            numprocs_start=parsed["numprocs_start"], directory=parsed["directory"],
            environment=parsed["environment"], user=parsed["user"], group=parsed["group"],
            umask=parsed["umask"], autostart=parsed["autostart"],
            autorestart=parsed["autorestart"], exitcodes=parsed["exitcodes"],
            startsecs=parsed["startsecs"], startretries=parsed["startretries"],
            stopsignal=parsed["stopsignal"], stopwaitsecs=parsed["stopwaitsecs"],
            stopasgroup=parsed["stopasgroup"], killasgroup=parsed["killasgroup"],
            stdout_logfile=parsed["stdout_logfile"], stderr_logfile=parsed["stderr_logfile"],
            redirect_stderr=parsed["redirect_stderr"],
            stdout_logfile_maxbytes=parsed["stdout_logfile_maxbytes"],
            stdout_logfile_backups=parsed["stdout_logfile_backups"],
            stderr_logfile_maxbytes=parsed["stderr_logfile_maxbytes"],
            stderr_logfile_backups=parsed["stderr_logfile_backups"],
            stdout_syslog=parsed["stdout_syslog"], stderr_syslog=parsed["stderr_syslog"],
            priority=parsed["priority"], notify=parsed["notify"],
            ready_timeout=parsed["ready_timeout"], backoff_initial=parsed["backoff_initial"],
            backoff_max=parsed["backoff_max"], here=here, kind=kind, group_name=group_name,
            serverurl=own_url or serverurl,
            socket=self.fcgi_socket(section, parsed) if kind == "fcgi-program" else None,
            childlogdir=top["childlogdir"], identifier=top["identifier"],
            log_uid=datatypes.uid_of(top["user"]) if top["user"] else os.geteuid(),
            base_environment=self.top_environment, strip_ansi=top["strip_ansi"],
            stdout_events_enabled=parsed["stdout_events_enabled"],
            stderr_events_enabled=parsed["stderr_events_enabled"], events=events,
            buffer_size=parsed.get("buffer_size") or 10, values=self.values)

    def listener_events(self, section: str, parsed: dict[str, Any]) -> tuple[str, ...]:
        """supervisord's checks of an [eventlistener:x], with its words."""
        from .eventtypes import NEVER_EMITTED, PARENT

        names = tuple(dict.fromkeys(name.upper() for name in parsed["events"] or () if name))
        if not names:
            raise self.key_error(section, "events", "missing (an event listener needs an "
                                 "\"events\" line)")
        for name in names:
            if name not in PARENT:
                raise self.key_error(section, "events", f"unknown event type {name}")
        never = sorted(set(names) & NEVER_EMITTED)
        if never:
            self.warn(f"{self.source(section, 'events')}: [{section}] events: "
                      f"{', '.join(never)} never sent (no capture mode in daemonkit)")
        if parsed["redirect_stderr"]:
            raise self.key_error(section, "redirect_stderr", "true is not allowed: stderr "
                                 "would interfere with the event listener protocol on stdout")
        if parsed["result_handler"].strip() != keys.DEFAULT_RESULT_HANDLER:
            raise self.key_error(section, "result_handler", f"only "
                                 f"{keys.DEFAULT_RESULT_HANDLER} is supported")
        if parsed["buffer_size"] > MAX_BUFFER_SIZE:
            raise self.key_error(section, "buffer_size", f"at most {MAX_BUFFER_SIZE}")
        return names

    def fcgi_socket(self, section: str, parsed: dict[str, Any]) -> SocketSpec:
        address: datatypes.SocketAddress | None = parsed["socket"]
        if address is None:
            raise self.key_error(section, "socket", "missing (an fcgi-program needs its socket)")
        owner, mode = parsed["socket_owner"], parsed["socket_mode"]
        if address.kind == "tcp":
            if owner is not None or mode is not None:
                raise self.key_error(section, "socket_owner" if owner is not None
                                     else "socket_mode", "only for a unix:// socket")
        else:
            if owner is None and parsed["user"] is not None:
                uid = datatypes.uid_of(parsed["user"])
                if uid != os.getuid():  # supervisord: the socket belongs to the program's user
                    import pwd

                    owner = (uid, pwd.getpwuid(uid).pw_gid)
            mode = 0o700 if mode is None else mode
        return SocketSpec(address, owner, mode, parsed["socket_backlog"])

    def all_groups(self, groups: dict[str, GroupConfig], programs: dict[str, ProgramConfig]
                   ) -> dict[str, GroupConfig]:
        everything = dict(groups)
        for program in programs.values():
            if program.group_name == program.name and program.name not in groups:
                priority = program.priority
                if program.kind == "eventlistener" and self.document.get(
                        f"eventlistener:{program.name}", "priority") is None:
                    priority = LISTENER_POOL_PRIORITY
                everything[program.name] = GroupConfig(program.name, priority,
                                                       (program.name,), explicit=False)
            elif program.name in groups and program.group_name == program.name:
                raise _error(program.source, f"{program.kind}:{program.name}", None,
                             f"a [group:{program.name}] of other programs has the same name")
        return everything

    def check_instances(self, programs: dict[str, ProgramConfig]) -> None:
        names: dict[str, str] = {}
        namespecs: dict[str, str] = {}
        total = text = 0
        for program in programs.values():  # before expanding any: each expansion costs
            total += program.numprocs
            text += program.numprocs * sum(map(len, (
                program.command, program.environment, program.directory,
                program.stdout_logfile, program.stderr_logfile)))
            if total > limits.MAX_INSTANCES:
                raise _error(program.source, f"{program.kind}:{program.name}", "numprocs",
                             f"more than {limits.MAX_INSTANCES} processes in all (the limit)")
            if text > limits.MAX_INSTANCE_TEXT:
                raise _error(program.source, f"{program.kind}:{program.name}", "numprocs",
                             f"the processes' commands and environments exceed "
                             f"{limits.MAX_INSTANCE_TEXT} bytes in all (the limit)")
        for program in programs.values():
            section = f"{program.kind}:{program.name}"
            for num in program.process_nums():
                spec = program.instance(num)  # expands now, so a reload fails before acting
                if spec.name in names:
                    raise _error(program.source, section, "process_name",
                                 f"instance name {spec.name!r} also used by {names[spec.name]}")
                if spec.namespec in namespecs and namespecs[spec.namespec] != program.name:
                    raise _error(program.source, section, "process_name",
                                 f"{spec.namespec!r} is also a process of "
                                 f"{namespecs[spec.namespec]}")
                names[spec.name] = program.name
                namespecs[spec.namespec] = program.name
                if spec.command_error:
                    self.warn(f"{program.source}: [{section}] command: {spec.command_error} "
                              "(loaded: starting it fails, as in supervisord)")

    def web(self) -> Any:
        if "web" not in self.document.sections:
            return None
        section = self.document.sections["web"]
        items = {key: value.text for key, value in section.values.items()}
        from ..web.config import parse_web_section

        return parse_web_section(items, section.file)


def auto_log_dir(childlogdir: str, identifier: str, uid: int) -> str:
    """``childlogdir`` itself when only root or the supervisor's user can create entries in
    it; else (``/tmp``) the supervisor's own ``daemonkit-IDENTIFIER-UID`` inside it."""
    try:
        info = os.stat(childlogdir)
    except OSError:
        return childlogdir  # created at the first spawn, as the supervisor's own
    if is_private(info) and info.st_uid in (0, uid):
        return childlogdir
    return os.path.join(childlogdir, f"daemonkit-{identifier}-{uid}")


def temp_dir() -> str:
    """supervisord's default childlogdir, ``tempfile.gettempdir()``: $TMPDIR, $TEMP, $TMP,
    else /tmp. (Not tempfile itself: it imports shutil, bz2, lzma, random: 2 MB of RSS.)"""
    for name in ("TMPDIR", "TEMP", "TMP"):
        value = os.environ.get(name)
        if value and os.path.isdir(value):
            return os.path.abspath(value)
    for candidate in ("/tmp", "/var/tmp", "/usr/tmp"):
        if os.path.isdir(candidate):
            return candidate
    return os.getcwd()


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback
                                   for a in addresses)
