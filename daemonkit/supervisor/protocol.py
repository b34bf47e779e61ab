"""The supervisor's control-socket commands, shared by the daemon (service) and its CLI (client).

A request is the core's JSON object with ``"cmd"`` set to one of the names below; a refusal
is ``{"ok": false, "code": FAULT_NAME, "error": text}``, ``FAULT_NAME`` being one of
:class:`.faults.Fault` (the core's own refusals carry no code).
"""

from __future__ import annotations

from typing import Any

from .faults import Fault, SupervisorError, error_for

CMD_STATUS = "supervisor-status"  # {} -> engine status
CMD_ACTION = "supervisor-action"  # {"names": [...], "verb": "start"|"stop"|"restart"}
CMD_SCALE = "supervisor-scale"  # {"program", "delta": 1|-1}
CMD_RELOAD = "supervisor-reload"  # {} -> read the file, apply the difference
CMD_UPDATE = "supervisor-update"  # {"groups": [...]} -> the same, for these groups only
CMD_REREAD = "supervisor-reread"  # {} -> what an update would change, nothing applied
CMD_AVAIL = "supervisor-avail"  # {} -> every program of the file, in use or not
CMD_SIGNAL = "supervisor-signal"  # {"names": [...], "signal": "HUP"}
CMD_PID = "supervisor-pid"  # {"names": [...]} -> pids (none: the supervisor's own)
CMD_CLEAR = "supervisor-clear"  # {"names": [...]}
CMD_LOG = "supervisor-log"  # {"name", "channel", "offset", "length"} -> a piece of a log

VERBS = ("start", "stop", "restart")
LOG_CHANNELS = ("stdout", "stderr")


def refusal(exc: SupervisorError) -> dict[str, Any]:
    """A generic failure's text is its detail alone; others keep supervisord's form."""
    text = exc.detail if exc.code is Fault.FAILED and exc.detail else exc.text
    return {"ok": False, "code": exc.code.name, "error": text}


def raise_for(reply: dict[str, Any]) -> None:
    """A refusal with a code becomes its exception; one without (the core's) is FAILED."""
    if reply.get("ok"):
        return
    code = reply.get("code")
    text = str(reply.get("error", "refused"))
    if isinstance(code, str) and code in Fault.__members__:
        prefix = f"{code}: "
        raise error_for(code, text[len(prefix):] if text.startswith(prefix) else text)
    raise error_for(Fault.FAILED, text)
