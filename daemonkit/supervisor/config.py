"""The supervisor's configuration: a supervisord-compatible INI subset, validated up front.

A config is parsed and checked completely before anything acts on it, so ``start`` and
``reload`` can refuse a bad file with one line naming the file, section, key and reason, and
a running supervisor keeps its old config. Relative paths are resolved against the directory
of the file that holds them (supervisord's ``%(here)s``): the daemon's cwd is ``/``.
"""

from __future__ import annotations

import configparser
import dataclasses
import glob
import grp
import os
import pwd
import re
import shlex
import signal
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

DEFAULT_PIDFILE = "/run/daemonkit-supervisor.pid"

#: sections of supervisord files that configure its XML-RPC server and client: meaningless
#: here (daemonkit has its own control socket), skipped so supervisord users can bring files
_IGNORED_SECTIONS = ("unix_http_server", "inet_http_server", "supervisorctl")
_IGNORED_PREFIXES = ("rpcinterface:",)

_SUPERVISOR_KEYS = {"pidfile", "logfile", "control", "user", "umask", "identifier",
                    "childlogdir", "environment"}
#: keys of supervisord's [supervisord] section that are accepted and have no effect here:
#: a supervisord file loads, and the start logs one warning naming the ones it holds
_SUPERVISORD_IGNORED_KEYS = {
    "logfile_maxbytes", "logfile_backups", "loglevel", "nodaemon", "minfds", "minprocs",
    "directory", "nocleanup", "strip_ansi", "silent",
}

_PROGRAM_DEFAULTS: dict[str, str] = {
    "numprocs": "1",
    "numprocs_start": "0",
    "directory": "",
    "environment": "",
    "user": "",
    "group": "",
    "umask": "",
    "autostart": "true",
    "autorestart": "unexpected",
    "exitcodes": "0",
    "startsecs": "1",
    "startretries": "3",
    "stopsignal": "TERM",
    "stopwaitsecs": "10",
    "stdout_logfile": "AUTO",  # supervisord's default: a file in childlogdir
    "stderr_logfile": "AUTO",
    "redirect_stderr": "false",
    "stdout_logfile_maxbytes": "0",
    "stdout_logfile_backups": "10",
    "stderr_logfile_maxbytes": "0",
    "stderr_logfile_backups": "10",
    "priority": "999",
    "notify": "false",
    "ready_timeout": "60",
    "backoff_initial": "1",
    "backoff_max": "30",
}
#: supervisord keys accepted for compatibility; daemonkit always signals the whole group
_PROGRAM_COMPAT_KEYS = {"stopasgroup", "killasgroup"}
#: supervisord keys accepted so its files load, without effect here (warned at start)
_PROGRAM_IGNORED_KEYS = {"stdout_events_enabled", "stderr_events_enabled",
                         "stdout_capture_maxbytes", "stderr_capture_maxbytes",
                         "stdout_syslog", "stderr_syslog", "serverurl"}
_PROGRAM_KEYS = (set(_PROGRAM_DEFAULTS) | {"command", "process_name"} | _PROGRAM_COMPAT_KEYS
                 | _PROGRAM_IGNORED_KEYS)
_GROUP_KEYS = {"programs", "priority"}

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_SIZE_RE = re.compile(r"^(\d+)\s*(KB|MB|GB|B)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


@dataclass(frozen=True)
class LogSpec:
    """Where one stream of an instance goes; ``path`` None means /dev/null."""

    path: str | None
    maxbytes: int = 0  # 0: never rotate by size
    backups: int = 10


@dataclass(frozen=True)
class InstanceSpec:
    """Everything needed to spawn one instance, with %(...)s already expanded."""

    name: str  # "worker" or "worker:2": the name users type
    program: str
    process_num: int
    argv: tuple[str, ...]
    directory: str | None
    environment: tuple[tuple[str, str], ...]
    stdout: LogSpec
    stderr: LogSpec | None  # None: redirected into stdout


@dataclass(frozen=True)
class ProgramConfig:
    """One [program:x] section. Equality (minus numprocs) decides what a reload restarts."""

    name: str
    source: str = field(compare=False)  # file that defined it, for error messages
    command: str
    process_name: str  # "" means the default, see name_template()
    numprocs: int
    numprocs_start: int
    directory: str
    environment: tuple[tuple[str, str], ...]
    user: str | None
    group: str | None
    umask: int | None
    autostart: bool
    autorestart: str  # "true" | "false" | "unexpected"
    exitcodes: frozenset[int]
    startsecs: float
    startretries: int
    stopsignal: int
    stopwaitsecs: float
    stdout_logfile: str
    stderr_logfile: str
    redirect_stderr: bool
    stdout_logfile_maxbytes: int
    stdout_logfile_backups: int
    stderr_logfile_maxbytes: int
    stderr_logfile_backups: int
    priority: int
    notify: bool
    ready_timeout: float  # notify programs: READY=1 must come within this (0: no limit)
    backoff_initial: float
    backoff_max: float
    here: str = field(compare=False)
    #: from [supervisor]: where AUTO log files go, the name in them, every child's environment
    childlogdir: str = "/tmp"
    identifier: str = "supervisor"
    base_environment: tuple[tuple[str, str], ...] = ()

    def same_except_numprocs(self, other: ProgramConfig) -> bool:
        if dataclasses.replace(self, numprocs=other.numprocs) != other:
            return False
        # %(here)s may expand differently if the section moved to another directory
        num = self.numprocs_start
        return self.instance(num, 1) == other.instance(num, 1)

    def process_nums(self, numprocs: int | None = None) -> range:
        count = self.numprocs if numprocs is None else numprocs
        return range(self.numprocs_start, self.numprocs_start + count)

    def name_template(self, numprocs: int | None = None) -> str:
        """``process_name``; its default depends on the instance count (``w`` or ``w:N``)."""
        count = self.numprocs if numprocs is None else numprocs
        if self.process_name:
            return self.process_name
        return "%(program_name)s:%(process_num)s" if count > 1 else "%(program_name)s"

    def instance(self, process_num: int, numprocs: int | None = None) -> InstanceSpec:
        """Expand the per-instance settings; ConfigError names the key that failed.

        Only the default name depends on ``numprocs``, so scaling renames but never
        changes what an instance runs.
        """
        values = {
            "program_name": self.name,
            "group_name": self.name,
            "process_num": process_num,
            "here": self.here,
            "host_node_name": os.uname().nodename,
            **{f"ENV_{key}": value for key, value in os.environ.items()},
        }

        def expand(key: str, raw: str) -> str:
            try:
                return raw % values
            except (KeyError, ValueError, TypeError) as exc:
                raise _error(self.source, f"program:{self.name}", key,
                             f"bad %(...)s expansion in {raw!r}: {exc}") from None

        name = expand("process_name", self.name_template(numprocs))
        if not _NAME_RE.match(name.replace(":", "_")):
            raise _error(self.source, f"program:{self.name}", "process_name",
                         f"{name!r} is not a valid process name")
        command = expand("command", self.command)
        try:
            argv = tuple(shlex.split(command))
        except ValueError as exc:
            raise _error(self.source, f"program:{self.name}", "command", str(exc)) from None
        if not argv:
            raise _error(self.source, f"program:{self.name}", "command", "empty command")
        directory = expand("directory", self.directory) if self.directory else None
        merged = dict(self.base_environment)  # [supervisor] environment; the program's wins
        merged.update((key, expand("environment", value)) for key, value in self.environment)
        env = tuple(merged.items())
        stdout = LogSpec(self._log_path(expand("stdout_logfile", self.stdout_logfile),
                                        name, "stdout"),
                         self.stdout_logfile_maxbytes, self.stdout_logfile_backups)
        stderr: LogSpec | None = None
        if not self.redirect_stderr:
            stderr = LogSpec(self._log_path(expand("stderr_logfile", self.stderr_logfile),
                                            name, "stderr"),
                             self.stderr_logfile_maxbytes, self.stderr_logfile_backups)
        return InstanceSpec(name, self.name, process_num, argv,
                            _resolve(self.here, directory) if directory else None,
                            env, stdout, stderr)

    def _log_path(self, value: str, name: str, channel: str) -> str | None:
        """supervisord's values: NONE (or OFF) discards, AUTO (the default) is a file per
        instance and stream in childlogdir. The AUTO name is stable (supervisord adds a
        random part): output survives a supervisor restart in the same file."""
        if value.strip().upper() in ("NONE", "OFF"):
            return None
        if value.strip().upper() in ("", "AUTO"):
            return os.path.join(self.childlogdir, f"{name}-{channel}---{self.identifier}.log")
        return _resolve(self.here, value)


@dataclass(frozen=True)
class SupervisorConfig:
    path: str
    pidfile: str
    logfile: str | None
    control: str | None
    user: str | None
    umask: int | None
    programs: dict[str, ProgramConfig]
    web: Any = None  # a daemonkit.web.config.WebConfig, or the raw dict without that module
    files: tuple[str, ...] = ()
    #: supervisord settings accepted without effect, globs that matched nothing: logged once
    warnings: tuple[str, ...] = ()
    #: [group:NAME] programs = a,b: group name -> member programs
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    childlogdir: str = "/tmp"

    def instance_names(self) -> list[str]:
        """Names of all instances, in start order."""
        return [self.programs[p].instance(n).name
                for p in self.program_order() for n in self.programs[p].process_nums()]

    def program_order(self) -> list[str]:
        """Start order: priority, then name (supervisord starts lower priorities first)."""
        return sorted(self.programs, key=lambda p: (self.programs[p].priority, p))


def _error(source: str, section: str, key: str | None, why: str) -> ConfigError:
    where = f"[{section}] {key}" if key else f"[{section}]"
    return ConfigError(f"{source}: {where}: {why}")


def _resolve(here: str, path: str) -> str:
    return os.path.normpath(os.path.join(here, os.path.expanduser(path)))


def load(path: str) -> SupervisorConfig:
    """Read, include and validate ``path``; raise ConfigError (one line) on any problem."""
    path = os.path.abspath(path)
    main = _read(path)
    files = [path]
    sections: list[tuple[str, str, dict[str, str]]] = []  # (file, section, items)
    warnings: list[str] = []
    sections.extend((path, name, dict(main.items(name))) for name in main.sections())
    if main.has_section("include"):
        items = dict(main.items("include"))
        unknown = set(items) - {"files"}
        if unknown:
            raise _error(path, "include", sorted(unknown)[0], "unknown key")
        for pattern in items.get("files", "").split():
            full = _resolve(os.path.dirname(path), pattern)
            matches = sorted(glob.glob(full))
            if not matches:
                warnings.append(f"{path}: [include] files: {pattern} matches no file")
            for included in matches:
                parser = _read(included)
                files.append(included)
                for name in parser.sections():
                    if name == "include":
                        raise _error(included, name, None,
                                     "[include] is only allowed in the main file")
                    sections.append((included, name, dict(parser.items(name))))
    return _build(path, sections, tuple(files), warnings)


def _read(path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(
        inline_comment_prefixes=(";",), strict=True, interpolation=None,
        default_section="\0no-defaults",  # supervisord has no [DEFAULT] magic
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
        _check_headers(path, text)
        parser.read_string(text, source=path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {' '.join(str(exc).split())}") from None
    return parser


def _check_headers(path: str, text: str) -> None:
    """A header missing its ']' would otherwise read as a key of the previous section."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("[") and not _HEADER_RE.match(line):
            raise ConfigError(f"{path}: line {number}: {line.strip()!r} is not a section "
                              "header (missing ']'?)")


_HEADER_RE = re.compile(r"^\[[^\]]+\]\s*([;#].*)?$")


def _expand_supervisor(source: str, section: str, items: dict[str, str]) -> dict[str, str]:
    """%(here)s and %(ENV_X)s, as supervisord expands them in its own section."""
    values = {"here": os.path.dirname(source), "host_node_name": os.uname().nodename,
              **{f"ENV_{key}": value for key, value in os.environ.items()}}
    expanded = {}
    for key, raw in items.items():
        try:
            expanded[key] = raw % values
        except (KeyError, ValueError, TypeError) as exc:
            raise _error(source, section, key,
                         f"bad %(...)s expansion in {raw!r}: {exc}") from None
    return expanded


def _build(path: str, sections: list[tuple[str, str, dict[str, str]]],
           files: tuple[str, ...], warnings: list[str]) -> SupervisorConfig:
    programs: dict[str, ProgramConfig] = {}
    groups: dict[str, tuple[str, ...]] = {}
    group_sources: dict[str, str] = {}
    supervisor: dict[str, str] = {}
    supervisor_source = path
    web: Any = None
    seen: dict[str, str] = {}
    for source, name, items in sections:
        if name in seen and name != "include":
            raise _error(source, name, None, f"section already defined in {seen[name]}")
        seen[name] = source
        if name == "include" or name in _IGNORED_SECTIONS or name.startswith(_IGNORED_PREFIXES):
            continue
        if name in ("supervisor", "supervisord"):
            allowed = _SUPERVISOR_KEYS | (_SUPERVISORD_IGNORED_KEYS if name == "supervisord"
                                          else set())
            for key in items:
                if key not in allowed:
                    raise _error(source, name, key, "unknown key")
            if "\0supervisor" in seen:
                raise _error(source, name, None, "only one [supervisor] section is allowed")
            seen["\0supervisor"] = source
            ignored = sorted(set(items) & _SUPERVISORD_IGNORED_KEYS)
            if ignored:
                warnings.append(f"{source}: [{name}] {', '.join(ignored)}: accepted and "
                                "ignored (no effect in daemonkit)")
            supervisor = _expand_supervisor(
                source, name, {k: v for k, v in items.items() if k in _SUPERVISOR_KEYS})
            supervisor_source = source
        elif name.startswith("program:"):
            program = _program(source, name[len("program:"):], items, warnings)
            programs[program.name] = program
        elif name.startswith("group:"):
            group = name[len("group:"):]
            groups[group] = _group(source, name, items)
            group_sources[group] = source
        elif name.startswith("eventlistener:"):
            warnings.append(f"{source}: [{name}] skipped: event listeners are not supported")
        elif name == "web":
            web = _web(source, items)
        else:
            raise _error(source, name, None, "unknown section")
    here = os.path.dirname(supervisor_source)
    pidfile = _resolve(here, supervisor.get("pidfile") or DEFAULT_PIDFILE)
    logfile = _resolve(here, supervisor["logfile"]) if supervisor.get("logfile") else None
    control = _resolve(here, supervisor["control"]) if supervisor.get("control") else None
    user = supervisor.get("user") or None
    if user is not None:
        _check_user(supervisor_source, "supervisor", "user", user)
    umask = (_octal(supervisor_source, "supervisor", "umask", supervisor["umask"])
             if supervisor.get("umask") else None)
    if supervisor.get("childlogdir"):
        childlogdir = _resolve(here, supervisor["childlogdir"])
    else:  # the brief's default: beside the supervisor's own log, else supervisord's /tmp
        childlogdir = os.path.dirname(logfile) if logfile else "/tmp"
    base_environment = _environment(supervisor_source, "supervisor", "environment",
                                    supervisor.get("environment", ""))
    identifier = supervisor.get("identifier") or "supervisor"
    if not _NAME_RE.match(identifier):
        raise _error(supervisor_source, "supervisor", "identifier",
                     f"{identifier!r} has characters not allowed in a file name")
    programs = {name: dataclasses.replace(program, childlogdir=childlogdir,
                                          identifier=identifier,
                                          base_environment=base_environment)
                for name, program in programs.items()}
    member_of: dict[str, str] = {}
    for group, members in groups.items():
        section = f"group:{group}"
        for member in members:
            if member not in programs:
                raise _error(group_sources[group], section, "programs",
                             f"no [program:{member}] section")
            if member in member_of:
                raise _error(group_sources[group], section, "programs",
                             f"{member} is already in [group:{member_of[member]}]")
            member_of[member] = group
    names: dict[str, str] = {}
    for program in programs.values():
        for num in program.process_nums():
            spec = program.instance(num)  # expands now, so a reload fails before acting
            if spec.name in names:
                raise _error(program.source, f"program:{program.name}", "process_name",
                             f"instance name {spec.name!r} also used by {names[spec.name]}")
            names[spec.name] = program.name
    return SupervisorConfig(path, pidfile, logfile, control, user, umask, programs, web, files,
                            tuple(warnings), groups, childlogdir)


def _group(source: str, section: str, items: dict[str, str]) -> tuple[str, ...]:
    """``[group:NAME] programs = a,b``: NAME, ``NAME:*`` and ``NAME:a`` address them."""
    if not _NAME_RE.match(section[len("group:"):]):
        raise _error(source, section, None, "group name has invalid characters")
    for key in items:
        if key not in _GROUP_KEYS:
            raise _error(source, section, key, "unknown key")
    members = tuple(m.strip() for m in items.get("programs", "").split(",") if m.strip())
    if not members:
        raise _error(source, section, "programs", "missing (a group needs its programs)")
    return members


def _web(source: str, items: dict[str, str]) -> Any:
    try:
        from daemonkit.web.config import parse_web_section  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return dict(items)
    return parse_web_section(items, source)


def _program(source: str, name: str, raw: dict[str, str], warnings: list[str]
             ) -> ProgramConfig:
    section = f"program:{name}"
    if not _NAME_RE.match(name):
        raise _error(source, section, None, f"program name {name!r} has invalid characters")
    for key in raw:
        if key not in _PROGRAM_KEYS:
            raise _error(source, section, key, "unknown key")
    if not raw.get("command", "").strip():
        raise _error(source, section, "command", "missing (every program needs a command)")
    items = {**_PROGRAM_DEFAULTS, **raw}

    def integer(key: str, minimum: int = 0) -> int:
        try:
            value = int(items[key])
        except ValueError:
            raise _error(source, section, key, f"{items[key]!r} is not an integer") from None
        if value < minimum:
            raise _error(source, section, key, f"must be >= {minimum}, got {value}")
        return value

    def seconds(key: str) -> float:
        try:
            value = float(items[key])
        except ValueError:
            raise _error(source, section, key, f"{items[key]!r} is not a number") from None
        if not value >= 0:  # also refuses NaN
            raise _error(source, section, key, f"must be >= 0, got {items[key]}")
        return value

    def boolean(key: str) -> bool:
        value = items[key].lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise _error(source, section, key, f"{items[key]!r} is not true or false")

    def size(key: str) -> int:
        match = _SIZE_RE.match(items[key].strip())
        if not match:
            raise _error(source, section, key, f"{items[key]!r} is not a size like 50MB")
        return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()]

    for key in _PROGRAM_COMPAT_KEYS & set(raw):
        boolean(key)
    ignored = sorted(_PROGRAM_IGNORED_KEYS & set(raw))
    if ignored:
        warnings.append(f"{source}: [{section}] {', '.join(ignored)}: accepted and ignored "
                        "(event listeners, syslog and capture mode are not supported)")
    for key in ("stdout_logfile", "stderr_logfile"):
        if items[key].strip().upper() == "SYSLOG":
            raise _error(source, section, key, "syslog is not supported: use a file path, "
                         "AUTO or NONE")
    numprocs = integer("numprocs", 1)
    process_name = items.get("process_name", "")
    if numprocs > 1 and process_name and "%(process_num)" not in process_name:
        raise _error(source, section, "process_name",
                     "must contain %(process_num)s when numprocs > 1")
    autorestart = items["autorestart"].lower()
    if autorestart in _TRUE:
        autorestart = "true"
    elif autorestart in _FALSE:
        autorestart = "false"
    elif autorestart != "unexpected":
        raise _error(source, section, "autorestart",
                     f"{items['autorestart']!r} is not true, false or unexpected")
    try:
        exitcodes = frozenset(int(c) for c in items["exitcodes"].split(",") if c.strip())
    except ValueError:
        raise _error(source, section, "exitcodes",
                     f"{items['exitcodes']!r} is not a comma-separated list of integers") from None
    user = items["user"] or None
    if user is not None:
        _check_user(source, section, "user", user)
    group = items["group"] or None
    if group is not None:
        try:
            grp.getgrnam(group)
        except KeyError:
            raise _error(source, section, "group", f"no such group {group!r}") from None
    backoff_initial = seconds("backoff_initial")
    backoff_max = seconds("backoff_max")
    if backoff_max < backoff_initial:
        raise _error(source, section, "backoff_max", "must be >= backoff_initial")
    return ProgramConfig(
        name=name,
        source=source,
        command=items["command"],
        process_name=process_name,
        numprocs=numprocs,
        numprocs_start=integer("numprocs_start"),
        directory=items["directory"],
        environment=_environment(source, section, "environment", items["environment"]),
        user=user,
        group=group,
        umask=_octal(source, section, "umask", items["umask"]) if items["umask"] else None,
        autostart=boolean("autostart"),
        autorestart=autorestart,
        exitcodes=exitcodes,
        startsecs=seconds("startsecs"),
        startretries=integer("startretries"),
        stopsignal=_signal(source, section, items["stopsignal"]),
        stopwaitsecs=seconds("stopwaitsecs"),
        stdout_logfile=items["stdout_logfile"],
        stderr_logfile=items["stderr_logfile"],
        redirect_stderr=boolean("redirect_stderr"),
        stdout_logfile_maxbytes=size("stdout_logfile_maxbytes"),
        stdout_logfile_backups=integer("stdout_logfile_backups"),
        stderr_logfile_maxbytes=size("stderr_logfile_maxbytes"),
        stderr_logfile_backups=integer("stderr_logfile_backups"),
        priority=integer("priority", -(10**9)),
        notify=boolean("notify"),
        ready_timeout=seconds("ready_timeout"),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        here=os.path.dirname(source),
    )


def _check_user(source: str, section: str, key: str, user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        if not user.isdigit():
            raise _error(source, section, key, f"no such user {user!r}") from None


def _octal(source: str, section: str, key: str, value: str) -> int:
    try:
        umask = int(value, 8)
    except ValueError:
        raise _error(source, section, key, f"{value!r} is not an octal umask") from None
    if not 0 <= umask <= 0o777:
        raise _error(source, section, key, f"{value!r} is out of range")
    return umask


def _signal(source: str, section: str, value: str) -> int:
    name = value.strip().upper()
    if name.isdigit():
        number = int(name)
        if number in {int(s) for s in signal.Signals}:
            return number
    else:
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            pass
    raise _error(source, section, "stopsignal", f"{value!r} is not a signal name")


def _environment(source: str, section: str, key_name: str, value: str
                 ) -> tuple[tuple[str, str], ...]:
    """``KEY="a,b",K2=v``: supervisord's syntax (commas separate, quotes protect)."""
    if not value.strip():
        return ()
    lexer = shlex.shlex(value, posix=True)
    lexer.whitespace = ","
    lexer.whitespace_split = True
    lexer.commenters = ""
    pairs: list[tuple[str, str]] = []
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise _error(source, section, key_name, str(exc)) from None
    for token in tokens:
        key, sep, val = token.strip().partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise _error(source, section, key_name, f"{token.strip()!r} is not KEY=value")
        pairs.append((key, val))
    return tuple(pairs)
