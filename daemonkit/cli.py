"""Command line of every daemonkit service: ``[options] {start,stop,restart,status,reload,run}``.

Options may stand before or after the action. Relative paths are resolved here, against the
directory the command was run from, because the daemon itself runs in ``--workdir`` (``/`` by
default). Errors in the command line exit 2 with usage, as argparse does; every other problem
is a :class:`DaemonkitError` carrying its own LSB code.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from . import commands
from .errors import DaemonkitError
from .exitcodes import Exit
from .paths import default_pidfile
from .printable import printable

if TYPE_CHECKING:
    from .daemon import Daemon

ACTIONS = ("start", "stop", "restart", "status", "reload", "run", "reopen-logs")


def service_name(daemon_class: type[Daemon]) -> str:
    """The class's ``name``, else the script's file name without ``.py``."""
    if daemon_class.name:
        return daemon_class.name
    script = os.path.basename(sys.argv[0] or daemon_class.__name__)
    return os.path.splitext(script)[0] or "daemon"


class _Parser(argparse.ArgumentParser):
    """A usage error is one line and a pointer to --help, not the whole usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(int(Exit.USAGE), f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(daemon_class: type[Daemon]) -> argparse.ArgumentParser:
    name = service_name(daemon_class)
    parser = _Parser(
        prog=os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else name,
        description=(daemon_class.__doc__ or f"{name} service").strip().splitlines()[0],
        allow_abbrev=False,  # `--pid` must not quietly mean `--pidfile` today, `--pid-x` later
    )
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument("--pidfile", default=daemon_class.pidfile, metavar="PATH",
                        help="pidfile; its lock says whether the daemon runs")
    parser.add_argument("--workdir", default=daemon_class.workdir, metavar="DIR",
                        help="working directory of the daemon (default: %(default)s)")
    parser.add_argument("--umask", default=f"{daemon_class.umask:03o}", metavar="OCTAL",
                        help="file creation mask of the daemon (default: %(default)s; never 0)")
    parser.add_argument("--start-timeout", type=_seconds, default=daemon_class.start_timeout,
                        metavar="SECONDS", help="how long start waits for setup() to finish")
    parser.add_argument("--stop-timeout", type=_seconds, default=daemon_class.stop_timeout,
                        metavar="SECONDS", help="how long stop waits before SIGKILL")
    parser.add_argument("--log-file", default=daemon_class.log_file, metavar="PATH",
                        help="log file; also receives the daemon's stdout and stderr")
    parser.add_argument("--log-level", default=daemon_class.log_level, metavar="LEVEL",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                        type=str.upper, help="logging level (default: %(default)s)")
    parser.add_argument("--syslog", action="store_true", help="also log to syslog")
    parser.add_argument("--syslog-socket", default="/dev/log", metavar="PATH",
                        help="syslog socket for --syslog (default: %(default)s)")
    parser.add_argument("--user", default=daemon_class.user, metavar="NAME",
                        help="drop to this user after setup_privileged()")
    parser.add_argument("--group", default=daemon_class.group, metavar="NAME",
                        help="drop to this group (default: the user's primary group)")
    parser.add_argument("--listen", action="append", metavar="[NAME=]ADDRESS",
                        help="listen on tcp://HOST:PORT or unix:/path (repeatable; default: "
                             "the class's `listen`); the sockets are in self.listeners")
    parser.add_argument("--json", action="store_true", help="status: print one JSON object")
    daemon_class.add_arguments(parser)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"out of range (0, 86400): {text!r}")
    return value


def parse_options(
    daemon_class: type[Daemon], argv: list[str]
) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser(daemon_class)
    _refuse_unknown_options(parser, argv)
    # intermixed: options may stand anywhere, also between the action and a service's own
    # positional arguments (`supervise status --json NAME`)
    options = parser.parse_intermixed_args(argv)
    try:
        options.umask = int(options.umask, 8)
    except ValueError:
        parser.error(f"--umask: not an octal number: {options.umask!r}")
    if not 0 < options.umask <= 0o777:
        parser.error("--umask: must be between 001 and 777 (a umask of 0 makes files "
                     "world-writable)")
    # which options this command line gave (a default is not "given"): `reload` names those
    # it cannot apply
    options._daemonkit_given = sorted(
        action.dest for action in parser._actions if any(
            argument == flag or argument.startswith(flag + "=")
            for flag in action.option_strings for argument in argv))
    options.name = service_name(daemon_class)
    if options.listen is None:
        options.listen = list(daemon_class.listen)
    options.pidfile = os.path.abspath(options.pidfile or default_pidfile(options.name))
    options.workdir = os.path.abspath(options.workdir)
    if options.log_file is not None:
        options.log_file = os.path.abspath(options.log_file)
    return parser, options


def _refuse_unknown_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Name an unknown option, and the one that was probably meant.

    Left to argparse, ``--prot 8000 start`` complains about ``invalid choice: '8000'`` (the
    unknown option is skipped, its value taken for the action) and never names ``--prot``.
    """
    known = [option for action in parser._actions for option in action.option_strings]
    for argument in argv:
        if argument == "--":
            return
        if not argument.startswith("-") or argument == "-" or _is_number(argument):
            continue
        option = argument.split("=", 1)[0]
        if option in known or (not option.startswith("--") and option[:2] in known):
            continue
        import difflib  # only for a command line that fails anyway

        close = difflib.get_close_matches(option, known, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        parser.error(f"unknown option {option}{hint}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def run_cli(daemon_class: type[Daemon], argv: list[str]) -> int:
    """Run one action; returns its LSB exit code (see :func:`run_command_and_exit`)."""
    return _run_action(daemon_class, argv)[1]


def _run_action(daemon_class: type[Daemon], argv: list[str]) -> tuple[str, int]:
    """The action parsed from ``argv`` and its LSB exit code."""
    _parser, options = parse_options(daemon_class, argv)
    return options.action, _answer(daemon_class, options)


def _answer(daemon_class: type[Daemon], options: argparse.Namespace) -> int:
    daemon = daemon_class(options)
    try:
        taken_over = daemon.handle_command(options.action)
        if taken_over is not None:
            return taken_over
        return commands.ACTIONS[options.action](daemon)
    except DaemonkitError as exc:
        print(printable(f"{options.name}: {exc}"), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(f"{options.name}: interrupted", file=sys.stderr)
        return int(Exit.FAILURE)
    except BrokenPipeError:
        # `status | head -1`: the reader left; say nothing more (and nothing at exit either)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(Exit.FAILURE)


def run_command_and_exit(daemon_class: type[Daemon], argv: list[str]) -> NoReturn:
    """:func:`run_cli`, then exit; a command (not ``run``) skips the interpreter's teardown.

    A command process's work is done when its action returns: what is left is Python
    freeing every module and object one by one, 15-20 ms here, which ``start``, ``stop``
    and ``status`` would add to each call for nothing. The exit handlers (logging's flush
    among them, and any a service registered in ``configure()``) still run, and the
    standard streams are flushed. ``run`` is the service itself and exits normally."""
    action, code = _run_action(daemon_class, argv)
    if action == "run":
        sys.exit(code)
    atexit._run_exitfuncs()  # the exit handlers, run as sys.exit would run them
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
