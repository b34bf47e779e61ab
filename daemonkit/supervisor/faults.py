"""What can go wrong in a request to the supervisor: supervisord's fault codes, as exceptions.

The engine raises these; each front end turns them into its own wire form (an XML-RPC
``Fault`` with supervisord's code and ``NAME: detail`` text, or a control-socket reply with
``"code"``), and each client turns them back into the same exception: nobody matches message
text. The numbers are supervisord's (``supervisor/xmlrpc.py``), so XML-RPC clients get exactly
what supervisord would send.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Fault(enum.IntEnum):
    UNKNOWN_METHOD = 1
    INCORRECT_PARAMETERS = 2
    BAD_ARGUMENTS = 3
    SIGNATURE_UNSUPPORTED = 4
    SHUTDOWN_STATE = 6
    BAD_NAME = 10
    BAD_SIGNAL = 11
    NO_FILE = 20
    NOT_EXECUTABLE = 21
    FAILED = 30
    ABNORMAL_TERMINATION = 40
    SPAWN_ERROR = 50
    ALREADY_STARTED = 60
    NOT_RUNNING = 70
    SUCCESS = 80
    ALREADY_ADDED = 90
    STILL_RUNNING = 91
    CANT_REREAD = 92


class SupervisorError(Exception):
    """A request the supervisor refused or could not do; ``text`` is supervisord's
    ``NAME: detail`` form, ``detail`` the part after the name."""

    code: Fault = Fault.FAILED

    def __init__(self, detail: str | None = None, code: Fault | None = None) -> None:
        if code is not None:
            self.code = code
        self.detail = detail
        self.text = self.code.name if detail is None else f"{self.code.name}: {detail}"
        super().__init__(self.text)


class NoSuchName(SupervisorError):
    code = Fault.BAD_NAME


class BadSignal(SupervisorError):
    code = Fault.BAD_SIGNAL


class ShuttingDown(SupervisorError):
    code = Fault.SHUTDOWN_STATE


class NotRunning(SupervisorError):
    code = Fault.NOT_RUNNING


class AlreadyStarted(SupervisorError):
    code = Fault.ALREADY_STARTED


class AlreadyAdded(SupervisorError):
    code = Fault.ALREADY_ADDED


class StillRunning(SupervisorError):
    code = Fault.STILL_RUNNING


class CannotReread(SupervisorError):
    code = Fault.CANT_REREAD


class NoFile(SupervisorError):
    code = Fault.NO_FILE


class BadArguments(SupervisorError):
    code = Fault.BAD_ARGUMENTS


class IncorrectParameters(SupervisorError):
    code = Fault.INCORRECT_PARAMETERS


class Failed(SupervisorError):
    code = Fault.FAILED


_BY_CODE: dict[Fault, type[SupervisorError]] = {
    cls.code: cls for cls in (NoSuchName, BadSignal, ShuttingDown, NotRunning, AlreadyStarted,
                              AlreadyAdded, StillRunning, CannotReread, NoFile, BadArguments,
                              IncorrectParameters, Failed)}


def error_for(code: Fault | int | str, detail: str | None = None) -> SupervisorError:
    """The exception for a code as it came over a wire (number or name)."""
    try:
        fault = Fault[code] if isinstance(code, str) else Fault(code)
    except (KeyError, ValueError):
        fault = Fault.FAILED
    return _BY_CODE.get(fault, SupervisorError)(detail, code=fault)


@dataclass
class Result:
    """The outcome for one process of a request on several (supervisord's result struct)."""

    name: str  # supervisord's process name (within the group)
    group: str
    code: Fault
    description: str
    instance: dict[str, Any] = field(default_factory=dict)  # its state afterwards

    @property
    def ok(self) -> bool:
        return self.code is Fault.SUCCESS

    def as_struct(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "status": int(self.code),
                "description": self.description}
