"""``daemonkit init-files``: systemd units, a SysV script and a logrotate file for a service.

The files are templates (``daemonkit/templates/*.in``) with ``@KEY@`` placeholders, filled
with absolute paths: the interpreter that runs this command (``sys.executable``, so the
venv with daemonkit in it) and the service script. Every value is quoted for the file it lands
in: systemd splits ``ExecStart=`` itself and expands ``%`` and ``$``, the shell has its own
rules. Paths that go into directives which cannot be quoted (``PIDFile=``...) are refused
when they hold blanks or quotes, rather than written into a unit that means something else.

The notify unit is ``Type=notify`` with ``ExecReload=`` running the service's synchronous
``reload``, so ``systemctl reload`` fails when ``reload()`` raised. ``--notify-reload`` writes
``Type=notify-reload`` instead (systemd 253 and later: systemd sends SIGHUP and waits for the
daemon's ``RELOADING=1`` and ``READY=1``, no helper process), at a price measured under systemd
257: it has no way to hear that a reload failed, and ``systemctl reload`` exits 0 even when
``reload()`` raised. What newer systemd does better at no such price is written when the
systemd the units are for has it (``--systemd-version``, default the one installed here):
from 254 on, ``Restart=`` backs off (``RestartSteps=``, ``RestartMaxDelaySec=``) instead of
retrying a crashing service every 2 s for ever.

The service's name comes from ``--name``, else from a ``name = "..."`` class attribute in
the script (read with ``ast``: the script is never imported, importing runs its code), else
from the file name. The shipped ``init/`` files are this command's output (see
``init/README.md``), and a test keeps them so.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources

from .errors import ConfigError
from .listen import ListenAddress, parse_address

#: file kinds, in output order: (template, path under --output-dir, file mode); ``socket``
#: only for a service that listens (``listen`` class attribute, or ``--listen`` after ``--``)
KINDS: dict[str, tuple[str, str, int]] = {
    "notify": ("notify.service.in", "systemd/{name}.service", 0o644),
    "socket": ("socket.in", "systemd/{name}.socket", 0o644),
    "forking": ("forking.service.in", "systemd/{name}-forking.service", 0o644),
    "sysv": ("sysv-init.sh.in", "sysv/{name}", 0o755),
    "logrotate": ("logrotate.in", "logrotate/{name}", 0o644),
}

#: the first systemd with ``Type=notify-reload`` and ``ReloadSignal=``
NOTIFY_RELOAD_SINCE = 253
#: the first systemd with ``RestartSteps=`` and ``RestartMaxDelaySec=``
RESTART_BACKOFF_SINCE = 254

#: extra seconds systemd grants beyond the daemon's own timeouts, so the daemon's clean
#: outcome (a reported setup error, a SIGKILL after --stop-timeout) comes before systemd's
UNIT_TIMEOUT_MARGIN_S = 10

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")
#: what may stand unquoted in a unit file directive and in a logrotate path
_PLAIN_PATH_RE = re.compile(r"/[A-Za-z0-9_@+=:,./-]*")
_PLACEHOLDER_RE = re.compile(r"@[A-Z_]+@")
#: directories that ProtectHome=yes hides from the service
_HOME_DIRS = ("/home/", "/root/", "/run/user/")


class InitFilesError(Exception):
    """A value that cannot be written into the files; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Everything the templates are filled with, checked and absolute."""

    name: str
    description: str
    user: str
    group: str | None
    python: str
    script: str
    pidfile: str
    log_file: str
    workdir: str
    start_timeout: int
    stop_timeout: int
    watchdog_sec: int
    service_args: tuple[str, ...]
    #: the systemd the units are for; None: unknown, write what every systemd understands
    systemd_version: int | None = None
    #: where the service listens (its --listen addresses), in order
    listen: tuple[ListenAddress, ...] = ()
    #: Type=notify-reload asked for (--notify-reload)
    notify_reload: bool = False
    #: the service uses ZeroMQ (--zmq, or the script imports zmq): libzmq needs what the
    #: hardening would deny it
    zmq: bool = False

    @property
    def restart_backoff(self) -> bool:
        return self.systemd_version is not None and self.systemd_version >= RESTART_BACKOFF_SINCE

    @property
    def group_name(self) -> str:
        """The group for logrotate's ``su``/``create``: --group, else the group named like the
        user (what ``useradd`` creates). Not looked up: the output must not depend on the
        accounts of the machine it was generated on."""
        return self.group or self.user


# -- quoting -------------------------------------------------------------------------------------


def systemd_word(word: str) -> str:
    """One word of an ``Exec*=`` line: specifiers and variables escaped, quoted if needed."""
    if any(ord(char) < 32 for char in word):
        raise InitFilesError(f"control character in {word!r}")
    escaped = word.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@+=:,./%$-]+", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plain_path(path: str, what: str) -> str:
    """A path for a directive that takes no quotes (``PIDFile=``, logrotate's file list)."""
    if not _PLAIN_PATH_RE.fullmatch(path):
        raise InitFilesError(f"{what} {path!r}: only letters, digits and _@+=:,./- are "
                             "allowed in it (it goes into directives that cannot quote)")
    return path


# -- reading the service script ------------------------------------------------------------------


def read_script_facts(path: str) -> tuple[str | None, str | None]:
    """(``name`` class attribute, first docstring line) of a service script, without running it."""
    tree = _script_tree(path)
    docstring = ast.get_docstring(tree)
    summary = docstring.strip().splitlines()[0].strip() if docstring else None
    name = _class_constant(tree, "name")
    return name if isinstance(name, str) else None, summary or None


def read_script_listen(path: str) -> tuple[str, ...]:
    """The ``listen`` class attribute (a tuple or list of strings) of a service script."""
    value = _class_constant(_script_tree(path), "listen")
    if isinstance(value, tuple | list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return ()


def _script_tree(path: str) -> ast.Module:
    try:
        with open(path, encoding="utf-8") as script_file:
            return ast.parse(script_file.read(), filename=path)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InitFilesError(f"cannot read {path}: {exc}") from exc


def _class_constant(tree: ast.Module, attribute: str) -> object:
    """The literal value of a class attribute in the script (the first class that has it)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if (isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None
                    and any(isinstance(t, ast.Name) and t.id == attribute
                            for t in (statement.targets if isinstance(statement, ast.Assign)
                                      else [statement.target]))):
                try:
                    return ast.literal_eval(statement.value)
                except ValueError:
                    return None
    return None


def imports_zmq(path: str) -> bool:
    """Whether the script imports pyzmq itself."""
    for node in ast.walk(_script_tree(path)):
        if isinstance(node, ast.Import) and any(
                alias.name.split(".")[0] == "zmq" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "zmq":
            return True
    return False


def defines_a_daemon(path: str) -> bool:
    """Whether the script has a class derived from a ``...Daemon`` (it may be the user's
    own base class: only a note when not)."""
    for node in ast.walk(_script_tree(path)):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                if str(name).endswith("Daemon"):
                    return True
    return False


def listen_arguments(service_args: list[str]) -> tuple[str, ...]:
    """The ``--listen`` values among the service's own arguments."""
    found = []
    for position, argument in enumerate(service_args):
        if argument == "--listen" and position + 1 < len(service_args):
            found.append(service_args[position + 1])
        elif argument.startswith("--listen="):
            found.append(argument.split("=", 1)[1])
    return tuple(found)


# -- settings from the command line --------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daemonkit init-files",
        description="Write a Type=notify and a Type=forking systemd unit, an LSB init script "
                    "and a logrotate file for a daemonkit service script.",
        epilog="Options for the service itself go after '--', e.g. "
               "daemonkit init-files svc.py --user svc -- --config /etc/svc.json",
    )
    parser.add_argument("script", help="the service script (a daemonkit.Daemon subclass)")
    parser.add_argument("--user", required=True,
                        help="dedicated user the service runs as (not root, not nobody)")
    parser.add_argument("--group", help="its group (default: the user's primary group)")
    parser.add_argument("--name", help="service name (default: the class's name attribute, "
                                       "else the script's file name)")
    parser.add_argument("--description", help="one line (default: the script's docstring)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with daemonkit installed (default: %(default)s)")
    parser.add_argument("--script-path", metavar="PATH",
                        help="where the script is installed (default: its absolute path now)")
    parser.add_argument("--pidfile", metavar="PATH", help="default /run/NAME/NAME.pid")
    parser.add_argument("--log-file", metavar="PATH", help="default /var/log/NAME/NAME.log "
                        "(SysV and forking; the notify unit logs to the journal)")
    parser.add_argument("--workdir", metavar="DIR", help="default /var/lib/NAME")
    parser.add_argument("--start-timeout", type=int, default=30, metavar="SECONDS",
                        help="how long start waits for setup() (default %(default)s)")
    parser.add_argument("--stop-timeout", type=int, default=20, metavar="SECONDS",
                        help="how long stop waits before SIGKILL (default %(default)s)")
    parser.add_argument("--watchdog-sec", type=int, default=30, metavar="SECONDS",
                        help="systemd WatchdogSec= of the notify unit (default %(default)s)")
    parser.add_argument("--systemd-version", type=int, metavar="N",
                        help="the systemd the units are for (default: the one installed here, "
                             f"{installed_systemd_version() or 'none'}); from "
                             f"{RESTART_BACKOFF_SINCE} on, Restart= backs off")
    parser.add_argument("--zmq", action="store_true",
                        help="the service uses ZeroMQ (found by itself if the script imports "
                             "zmq): allow what libzmq needs under the hardening")
    parser.add_argument("--notify-reload", action="store_true",
                        help=f"Type=notify-reload (systemd {NOTIFY_RELOAD_SINCE}+): SIGHUP, no "
                             "helper process, but `systemctl reload` cannot fail")
    parser.add_argument("--only", choices=tuple(KINDS), action="append",
                        help="print or write just this file (repeatable)")
    parser.add_argument("--output-dir", metavar="DIR", help="write DIR/systemd/NAME.service, "
                        "DIR/systemd/NAME-forking.service, DIR/sysv/NAME and DIR/logrotate/NAME "
                        "instead of printing them")
    return parser


def settings_from(options: argparse.Namespace, service_args: list[str]) -> Settings:
    script = os.path.abspath(options.script)
    if not os.path.isfile(script):
        raise InitFilesError(f"{options.script}: no such file")
    class_name, summary = read_script_facts(script)
    name = options.name or class_name or os.path.splitext(os.path.basename(script))[0]
    if not _NAME_RE.fullmatch(name):
        raise InitFilesError(f"service name {name!r}: use letters, digits and _.-")
    for label, account in (("user", options.user), ("group", options.group)):
        if account is not None and not _USER_RE.fullmatch(account):
            raise InitFilesError(f"{label} {account!r} is not a valid name")
    if options.user in ("root", "0"):
        raise InitFilesError(f"--user {options.user}: give the service a dedicated user "
                             "(useradd --system ...); it starts as root only to drop to it")
    if options.user == "nobody":
        raise InitFilesError("--user nobody: give the service a dedicated user (useradd "
                             "--system ...); systemd refuses to trust 'nobody'")
    for label, value in (("--start-timeout", options.start_timeout),
                         ("--stop-timeout", options.stop_timeout),
                         ("--watchdog-sec", options.watchdog_sec)):
        if not 0 < value < 86400:
            raise InitFilesError(f"{label} {value}: out of range 1..86399")
    systemd_version = options.systemd_version
    if systemd_version is None:
        systemd_version = installed_systemd_version()
    elif not 0 < systemd_version < 10000:
        raise InitFilesError(f"--systemd-version {systemd_version}: not a systemd version")
    if options.notify_reload and systemd_version is not None and (
            systemd_version < NOTIFY_RELOAD_SINCE):
        raise InitFilesError(f"--notify-reload: systemd {systemd_version} has no "
                             f"Type=notify-reload (it came with {NOTIFY_RELOAD_SINCE})")
    description = options.description or summary or f"{name} (daemonkit service)"
    if "\n" in description:
        raise InitFilesError("--description must be one line")
    script_path = options.script_path or script
    python = options.python
    try:
        listen = tuple(parse_address(text) for text in
                       listen_arguments(service_args) or read_script_listen(script))
    except ConfigError as exc:
        raise InitFilesError(str(exc)) from exc
    for label, path in (("--python", python), ("--script-path", script_path)):
        if not os.path.isabs(path):
            raise InitFilesError(f"{label} {path!r} must be an absolute path")
    return Settings(
        name=name,
        description=description,
        user=options.user,
        group=options.group,
        python=python,
        script=script_path,
        pidfile=plain_path(os.path.abspath(options.pidfile or f"/run/{name}/{name}.pid"),
                           "--pidfile"),
        log_file=plain_path(os.path.abspath(options.log_file or f"/var/log/{name}/{name}.log"),
                            "--log-file"),
        workdir=plain_path(os.path.abspath(options.workdir or f"/var/lib/{name}"), "--workdir"),
        start_timeout=options.start_timeout,
        stop_timeout=options.stop_timeout,
        watchdog_sec=options.watchdog_sec,
        service_args=tuple(service_args),
        systemd_version=systemd_version,
        listen=listen,
        notify_reload=options.notify_reload,
        zmq=options.zmq or imports_zmq(script),
    )


def installed_systemd_version() -> int | None:
    """The version of systemd installed on this machine (running or not), None without one."""
    try:
        result = subprocess.run(["systemctl", "--version"], capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"systemd (\d+)\b", result.stdout)
    return int(match.group(1)) if match else None


# -- rendering -----------------------------------------------------------------------------------


def _read_write_paths(settings: Settings) -> str:
    """Directories outside the unit's managed ones that the daemon must write to."""
    managed = (f"/run/{settings.name}", f"/var/lib/{settings.name}",
               f"/var/log/{settings.name}")
    needed = []
    for path, is_dir in ((settings.pidfile, False), (settings.log_file, False),
                         (settings.workdir, True)):
        directory = path if is_dir else os.path.dirname(path)
        if directory not in managed and directory not in needed:
            needed.append(directory)
    return "ReadWritePaths=" + " ".join(needed) if needed else ""


def _reload_directives(settings: Settings, command: str) -> str:
    """How ``systemctl reload`` reaches ``reload()`` in a notify unit, with why, for the file."""
    if settings.notify_reload:
        lines = [
            "# `systemctl reload` sends SIGHUP (ReloadSignal=) and waits for the daemon's",
            "# RELOADING=1 and READY=1 around reload(). systemd cannot be told that reload()",
            "# failed: the daemon keeps its old state and logs why (journalctl -u "
            f"{settings.name}),",
            "# but `systemctl reload` exits 0. For an exit status that says so, generate the",
            "# unit without --notify-reload (ExecReload= runs the synchronous `reload`).",
            "ReloadSignal=SIGHUP",
        ]
    else:
        lines = [
            "# The service's own reload action is synchronous: it returns once reload() has "
            "run in the",
            "# daemon and fails (exit 1, old configuration kept) if reload() raised.",
            f"ExecReload={command} --pidfile {settings.pidfile} reload",
        ]
    return "\n".join(lines)


def _listen_streams(settings: Settings) -> str:
    lines = []
    for address in settings.listen:
        if address.path is not None and address.path.startswith("@"):
            if not re.fullmatch(r"@[A-Za-z0-9_.:-]+", address.path):
                raise InitFilesError(f"--listen unix:{address.path}: only letters, digits and "
                                     "_.:- in an abstract name")
            lines.append(f"ListenStream={address.path}")
        elif address.path is not None:
            lines.append(f"ListenStream={plain_path(address.path, '--listen')}")
        else:
            host = f"[{address.host}]" if ":" in str(address.host) else address.host
            lines.append(f"ListenStream={host}:{address.port}")
    if any(address.path is not None and not address.path.startswith("@")
           for address in settings.listen):
        lines += ["SocketMode=0666", "RemoveOnStop=yes"]
    return "\n".join(lines)


def _fd_name(settings: Settings) -> str:
    """A name for the sockets, when the service names its one address: systemd names every
    socket of a unit alike, so several addresses are matched by their order instead."""
    names = [address.name for address in settings.listen]
    if len(names) == 1 and names[0]:
        return f"FileDescriptorName={names[0]}"
    return ""


def _socket_dependency(settings: Settings) -> str:
    if not settings.listen:
        return ""
    return (f"# started with {settings.name}.socket, which holds the listening sockets\n"
            f"Requires={settings.name}.socket\nAfter={settings.name}.socket")


#: what a service may need to bind a port below 1024 itself (Type=forking: `start` runs as
#: User=, and there is no .socket unit binding it as root)
_PRIVILEGED_PORT = 1024


def _capabilities(settings: Settings, kind: str) -> str:
    if kind == "forking" and any(address.port is not None and address.port < _PRIVILEGED_PORT
                                 for address in settings.listen):
        return ("# it binds a port below 1024 as its user: that one capability, nothing else\n"
                "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
                "AmbientCapabilities=CAP_NET_BIND_SERVICE")
    return "CapabilityBoundingSet=\nAmbientCapabilities="


def _address_families(settings: Settings) -> str:
    if not settings.zmq:
        return "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"
    return ("# AF_NETLINK: libzmq (pyzmq) lists the network interfaces for every bind, even to "
            "an IP\n# address, and aborts the process if it cannot\n"
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK")


def _zmq_syscalls(settings: Settings) -> str:
    if not settings.zmq:
        return ""
    return ("# libzmq sets each of its threads' scheduling policy (to the default) and aborts if "
            "it cannot;\n# RestrictRealtime= and the empty capability set keep it from raising "
            "anything\nSystemCallFilter=sched_setscheduler")


#: where PrivateTmp= would hide the interpreter or the script
_TMP_DIRS = ("/tmp/", "/var/tmp/")


def _private_tmp(settings: Settings) -> str:
    if any(path.startswith(_TMP_DIRS) for path in (settings.python, settings.script)):
        return "no"
    return "yes"


def _runtime_preserve(settings: Settings) -> str:
    """A unix socket of the .socket unit inside /run/NAME must outlive the service's stops:
    systemd removes a RuntimeDirectory= when the service stops, unless told not to."""
    runtime = f"/run/{settings.name}/"
    if any(address.path is not None and address.path.startswith(runtime)
           for address in settings.listen):
        return ("# the socket unit's socket lives here: keep the directory across stops\n"
                "RuntimeDirectoryPreserve=yes")
    return ""


def _protect_home(settings: Settings) -> str:
    """``yes`` unless the interpreter or the script lives in a home directory (a pyenv, a
    checkout): then the service could not even start, so the homes stay visible, read-only."""
    paths = (settings.python, settings.script)
    if any(path.startswith(_HOME_DIRS) for path in paths):
        return "read-only"
    return "yes"


def placeholders(settings: Settings) -> dict[str, str]:
    """Values of the ``@KEY@`` placeholders, already quoted for where they stand."""
    command = " ".join(systemd_word(word) for word in (settings.python, settings.script))
    postrotate = " ".join(shlex.quote(word) for word in (
        settings.python, settings.script, "--pidfile", settings.pidfile, "reopen-logs"))
    return {
        "NAME": settings.name,
        "DESCRIPTION": settings.description.replace("%", "%%"),
        "SHORT_DESCRIPTION": settings.description,
        "USER": settings.user,
        "GROUP": settings.group or "",
        "GROUP_NAME": settings.group_name,
        "GROUP_LINE": f"Group={settings.group}" if settings.group else "",
        "PYTHON": shlex.quote(settings.python),
        "SCRIPT": shlex.quote(settings.script),
        "COMMAND": command,
        "NOTIFY_TYPE": "notify-reload" if settings.notify_reload else "notify",
        "NOTIFY_RELOAD": _reload_directives(settings, command),
        "PIDFILE": settings.pidfile,
        "LOGFILE": settings.log_file,
        "STATEDIR": settings.workdir,
        "READ_WRITE_PATHS": _read_write_paths(settings),
        "PROTECT_HOME": _protect_home(settings),
        "DAEMON_START_TIMEOUT": str(settings.start_timeout),
        "DAEMON_STOP_TIMEOUT": str(settings.stop_timeout),
        "UNIT_START_TIMEOUT": str(settings.start_timeout + UNIT_TIMEOUT_MARGIN_S),
        "UNIT_STOP_TIMEOUT": str(settings.stop_timeout + UNIT_TIMEOUT_MARGIN_S),
        "WATCHDOG_SEC": str(settings.watchdog_sec),
        "POSTROTATE": postrotate,
        "LISTEN_STREAMS": _listen_streams(settings) if settings.listen else "",
        "FD_NAME": _fd_name(settings),
        "SOCKET_DEPENDENCY": _socket_dependency(settings),
        "ADDRESS_FAMILIES": _address_families(settings),
        "ZMQ_SYSCALLS": _zmq_syscalls(settings),
        "PRIVATE_TMP": _private_tmp(settings),
        "RUNTIME_PRESERVE": _runtime_preserve(settings),
        "RESTART_BACKOFF": ("# a crash loop backs off: 2 s, then longer, up to a minute\n"
                            "RestartSteps=5\nRestartMaxDelaySec=60s"
                            if settings.restart_backoff else ""),
        "ARGS": "".join(" " + systemd_word(arg) for arg in settings.service_args),
        "SHELL_ARGS": "".join(shlex.quote(arg) + " " for arg in settings.service_args),
    }


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill ``@KEY@`` placeholders; a line that was only a placeholder with an empty value
    (an optional directive) disappears."""
    lines = []
    for line in template.splitlines(keepends=True):
        stripped = line.strip()
        if _PLACEHOLDER_RE.fullmatch(stripped) and values.get(stripped.strip("@")) == "":
            continue
        lines.append(_PLACEHOLDER_RE.sub(lambda match: _value(match.group(0), values), line))
    return "".join(lines)


def _value(placeholder: str, values: dict[str, str]) -> str:
    key = placeholder.strip("@")
    if key not in values:
        raise KeyError(f"template placeholder {placeholder} has no value")
    return values[key]


def render(settings: Settings, kind: str) -> str:
    template_name = KINDS[kind][0]
    template = resources.files("daemonkit").joinpath("templates", template_name).read_text()
    return render_template(template, {**placeholders(settings),
                                      "CAPABILITIES": _capabilities(settings, kind)})


def output_path(settings: Settings, kind: str) -> str:
    return KINDS[kind][1].format(name=settings.name)


# -- command -------------------------------------------------------------------------------------


def split_service_args(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def write_files(settings: Settings, kinds: list[str], output_dir: str) -> list[str]:
    """Write each file; returns what was written (``PATH (replaced)`` for a file that was
    there before and said something else)."""
    written = []
    for kind in kinds:
        path = os.path.join(output_dir, output_path(settings, kind))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        text = render(settings, kind)
        try:
            with open(path, encoding="utf-8") as existing:
                replaced = existing.read() != text
        except FileNotFoundError:
            replaced = False
        temporary = f"{path}.tmp{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as output:
            output.write(text)
        os.chmod(temporary, KINDS[kind][2])
        os.replace(temporary, path)  # a half-written unit never replaces a good one
        written.append(f"{path} (replaced)" if replaced else path)
    return written


def main(argv: list[str]) -> int:
    own_args, service_args = split_service_args(argv)
    options = build_parser().parse_args(own_args)
    try:
        settings = settings_from(options, service_args)
        kinds = options.only or [kind for kind in KINDS if kind != "socket" or settings.listen]
        if "socket" in kinds and not settings.listen:
            raise InitFilesError("--only socket: the service listens nowhere (no `listen` "
                                 "class attribute, no --listen after --)")
        if options.output_dir:
            for path in write_files(settings, kinds, options.output_dir):
                print(f"wrote {path}")
        else:
            for number, kind in enumerate(kinds):
                if len(kinds) > 1:
                    print(("\n" if number else "") + f"# ===== {output_path(settings, kind)}")
                sys.stdout.write(render(settings, kind))
            sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has seen enough; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (InitFilesError, OSError) as exc:
        print(f"daemonkit init-files: {exc}", file=sys.stderr)
        return 1
    if _protect_home(settings) != "yes":
        print("daemonkit init-files: note: the interpreter or the script lives in a home "
              "directory; the units use ProtectHome=read-only", file=sys.stderr)
    if _private_tmp(settings) != "yes":
        print("daemonkit init-files: note: the interpreter or the script lives under /tmp; "
              "the units use PrivateTmp=no (install them elsewhere, e.g. /opt)",
              file=sys.stderr)
    if not defines_a_daemon(settings.script if os.path.exists(settings.script)
                            else os.path.abspath(options.script)):
        print(f"daemonkit init-files: note: {options.script} defines no class derived from "
              "daemonkit.Daemon; the units run it with start/stop/run/reload",
              file=sys.stderr)
    return 0
