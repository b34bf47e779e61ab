"""The supervisor as the web helper (and any other in-process client) sees it.

The web server runs in its own thread; the supervisor's state lives in the main thread's
loop. Every method of an implementation must therefore be safe to call from any thread:
the supervisor's implementation hands each call to its loop and waits for the answer.
"""

from __future__ import annotations

from typing import Any, Protocol


class SupervisorAPI(Protocol):
    def status(self) -> dict[str, Any]:
        """``{"pid", "uptime_s", "config", "programs": [{"name", "program", "process_num",
        "state", "pid", "uptime_s", "restarts", "exit_status", "stdout_logfile"}]}``."""
        ...

    def action(self, name: str, verb: str) -> dict[str, Any]:
        """``verb`` is start|stop|restart; ``name`` a program, ``prog:N`` or ``*`` for all.

        Returns ``{"ok": bool, "error"?: str}``."""
        ...

    def scale(self, program: str, delta: int) -> dict[str, Any]:
        """Change a program's ``numprocs`` by ``delta`` at runtime (until the next reload)."""
        ...

    def select(self, name: str) -> list[str] | None:
        """Names of the instances ``name`` addresses (a program, an instance, a group,
        ``group:*``, ``*``/``all``), as the supervisor resolves names; None if unknown."""
        ...

    def known(self, name: str) -> bool:
        """True if ``name`` is a program or an instance (``prog:N``) of the running config."""
        ...
