"""daemonkit: classic Unix daemons that tell the truth.

Subclass :class:`Daemon`, fill in ``setup``/``run``/``reload``/``shutdown``, call ``main()``,
and get ``start|stop|restart|status|reload|run`` with LSB exit codes, a pidfile that never
goes stale, graceful SIGTERM and honest readiness reporting.
"""

from .daemon import Daemon
from .errors import ConfigError, DaemonkitError, PidfileError, PrivilegeError, StopDaemon
from .exitcodes import Exit
from .pidfile import PidFile

__all__ = [
    "ConfigError",
    "Daemon",
    "DaemonkitError",
    "Exit",
    "PidFile",
    "PidfileError",
    "PrivilegeError",
    "StopDaemon",
]
__version__ = "0.1.0"
