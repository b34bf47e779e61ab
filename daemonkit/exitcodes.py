"""LSB exit codes (LSB Core, "Init Script Actions").

init scripts, systemd's ``ExecStart=`` of ``Type=forking`` units and monitoring tools read
these numbers, so every command of the CLI returns one of them and nothing else.
"""

from enum import IntEnum


class Exit(IntEnum):
    """Exit status of a CLI action."""

    OK = 0
    #: generic failure; for ``status``: not running but the pidfile exists
    FAILURE = 1
    USAGE = 2
    #: ``status`` only: the program is not running
    NOT_RUNNING_STATUS = 3
    #: insufficient privilege; for ``status``: the state is unknown
    NO_PRIVILEGE = 4
    NOT_INSTALLED = 5
    NOT_CONFIGURED = 6
    #: the program is not running (every action except ``status``)
    NOT_RUNNING = 7
