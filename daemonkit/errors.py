"""Exceptions of daemonkit.

Each carries the LSB exit code the CLI turns it into, so the code that detects a problem
decides how it is reported, and the CLI stays a thin translator.
"""

import lockfile

from .exitcodes import Exit


class DaemonkitError(Exception):
    """Base of the errors the CLI reports as one line and an exit code."""

    exit_code: Exit = Exit.FAILURE


class ConfigError(DaemonkitError):
    """The service's configuration or options are invalid (LSB 6, "not configured")."""

    exit_code = Exit.NOT_CONFIGURED


class PrivilegeError(DaemonkitError):
    """The command lacks the privilege it needs (LSB 4)."""

    exit_code = Exit.NO_PRIVILEGE


class PidfileError(DaemonkitError, lockfile.LockFailed):  # type: ignore[misc]
    """The pidfile cannot be created, opened or locked for a reason other than a live owner.

    Also a ``lockfile.LockFailed``, so code written against ``lockfile`` catches it too.
    """


class StopDaemon(BaseException):  # a request, not an error: no 'Error' suffix
    """Raised in the main thread when SIGTERM/SIGINT arrives outside a ``critical()`` block.

    A ``BaseException`` (like ``SystemExit``) so that a service's ``except Exception`` does not
    swallow the request to stop.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
