"""The ``Daemon`` base class: the hooks a service fills in, and nothing else.

A service subclasses :class:`Daemon`, fills in some of ``setup_privileged``, ``setup``,
``run``, ``reload`` and ``shutdown`` (plain or ``async def``, mixed as it likes) and calls
``main()``. The CLI (``cli``), the commands (``commands``) and, inside the daemon, the
runtime (``runtime``) do the rest; their order is documented in ``runtime``.

The class keeps only the documented names, so a service may name its own methods and
attributes as it likes (``serve``, ``state``, ``runtime``, ``control``, ...). Reserved:
the hooks below, the class attributes below, and ``options``, ``log``, ``stopping``,
``listeners``, ``critical``, ``main``.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from .lifecycle import StopEvent

if TYPE_CHECKING:
    from .aiolifecycle import AsyncCritical
    from .lifecycle import Critical


class Daemon:
    """Base class of a daemonkit service. Class attributes are defaults the CLI can override."""

    #: service name in messages and process titles; default: the script's name without .py
    name: ClassVar[str | None] = None
    #: pidfile path; default ``/run/NAME.pid`` as root, else in a private directory of the
    #: user's, ``/tmp/daemonkit-UID``
    pidfile: ClassVar[str | None] = None
    #: user and group to drop to after ``setup_privileged()`` (``--user``/``--group``)
    user: ClassVar[str | None] = None
    group: ClassVar[str | None] = None
    workdir: ClassVar[str] = "/"
    umask: ClassVar[int] = 0o022
    start_timeout: ClassVar[float] = 10.0
    stop_timeout: ClassVar[float] = 10.0
    log_file: ClassVar[str | None] = None
    log_level: ClassVar[str] = "INFO"
    #: addresses to listen on (``--listen``): ``tcp://HOST:PORT``, ``unix:/path``, each may
    #: be named (``http=tcp://...``, matched to systemd's ``FileDescriptorName=``)
    listen: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: argparse.Namespace | None = None) -> None:
        #: every option, resolved (the CLI's and the service's own from add_arguments)
        self.options = options if options is not None else argparse.Namespace()
        #: the service's logger, named after the service
        name = getattr(self.options, "name", None)
        if not name:
            from .cli import service_name

            name = service_name(type(self))
        self.log = logging.getLogger(name)
        #: set on SIGTERM/SIGINT/SIGQUIT and when the daemon ends; threads ``wait()`` on it,
        #: coroutines ``await self.stopping.wait_async()``
        self.stopping = StopEvent()
        #: the listening sockets, in the order of ``listen``: ready before
        #: ``setup_privileged()``, bound by daemonkit, passed by systemd or by the daemon a
        #: ``restart`` replaced (the service accepts on them; it never binds them itself)
        self.listeners: list[socket.socket] = []

    # -- hooks for services -------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the service's own command-line options (they land in ``self.options``)."""

    def configure(self) -> None:
        """Validate options in the command process, before anything forks.

        The working directory is still the caller's: resolve relative paths here. Raise
        :class:`daemonkit.ConfigError` for a one-line error and exit 6 from ``start``.
        ``restart`` calls it before stopping the running daemon, so that a bad option leaves
        that daemon running: only check and read here, never take what the running daemon
        holds (its port, its database lock). It may be called twice in one process.
        """

    def setup_privileged(self) -> Any:
        """Runs inside the daemon as the invoking user (root), before the privilege drop."""

    def setup(self) -> Any:
        """Runs inside the daemon before it counts as ready; raising makes ``start`` fail."""

    def run(self) -> Any:
        """The service's main loop, in the main thread; returning ends the daemon (exit 0).

        ``async def run()`` makes the service an asyncio one: a stop cancels this task at its
        current ``await`` (never inside ``critical()``).
        """
        self.stopping.wait()

    def reload(self) -> Any:
        """SIGHUP / ``reload``; raising keeps the old state and makes ``reload`` exit 1."""

    def shutdown(self) -> Any:
        """Cleanup after ``run()`` ended for whatever reason; stop requests do not cut it."""

    def reopen_logs(self) -> Any:
        """SIGUSR1 / ``reopen-logs``, after the core reopened its own log file: reopen any
        other file the service writes, so logrotate can move it."""

    def status_info(self) -> Any:
        """Extra ``status`` fields as a dict (control thread: be thread-safe; in an async
        service it runs on the event loop)."""
        return {}

    def handle_control(self, request: dict[str, Any]) -> Any:
        """Answer a service-specific control-socket command with a dict (control thread; in
        an async service, on the event loop)."""
        return {"ok": False, "error": f"unknown command {request.get('cmd')!r}"}

    def handle_command(self, action: str) -> int | None:
        """Take over a CLI action in the command process; None means "do the default"."""
        return None

    def healthy(self) -> Any:
        """Whether systemd's watchdog should be fed now (True/False); override to check your
        loop. In an async service it runs on the event loop, so a stuck loop is unhealthy."""
        return True

    # -- API for services -----------------------------------------------------------------------

    def critical(self) -> Critical | AsyncCritical:
        """A block that a stop does not cut: ``with self.critical():`` in a sync service's main
        thread, ``async with self.critical():`` in an async one; the stop waits for its end."""
        from .runtime import current_runtime

        runtime = current_runtime()
        if runtime is None or runtime.daemon is not self:
            raise RuntimeError("critical() is available once the daemon runs")
        return runtime.critical()

    @classmethod
    def main(cls, argv: list[str] | None = None) -> NoReturn:
        """Parse ``argv`` (default ``sys.argv[1:]``), run the action, exit with its LSB code."""
        from .cli import run_command_and_exit

        run_command_and_exit(cls, sys.argv[1:] if argv is None else argv)
