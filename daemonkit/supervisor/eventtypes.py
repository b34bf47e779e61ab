"""supervisord's event types: their names, their family tree, and each one's payload text.

A listener subscribes by name (``events = PROCESS_STATE, TICK_60``); a name stands for
itself and every type below it (``EVENT`` for all), as supervisord's event classes inherit.
What goes over the wire is supervisord's text, byte for byte: superlance and the listeners
people wrote against supervisord parse it with ``split()`` and ``int(headers['len'])``.
"""

from __future__ import annotations

from .events import (
    Event,
    GroupAdded,
    GroupRemoved,
    ProcessLogged,
    ProcessStateChanged,
    SupervisorStateChanged,
    Tick,
)

#: every event type supervisord knows, with its parent (``EVENT`` is the root)
PARENT: dict[str, str | None] = {
    "EVENT": None,
    "PROCESS_STATE": "EVENT",
    **{f"PROCESS_STATE_{s}": "PROCESS_STATE" for s in (
        "STOPPED", "EXITED", "STARTING", "STOPPING", "BACKOFF", "FATAL", "RUNNING", "UNKNOWN")},
    "PROCESS_COMMUNICATION": "EVENT",
    "PROCESS_COMMUNICATION_STDOUT": "PROCESS_COMMUNICATION",
    "PROCESS_COMMUNICATION_STDERR": "PROCESS_COMMUNICATION",
    "PROCESS_LOG": "EVENT",
    "PROCESS_LOG_STDOUT": "PROCESS_LOG",
    "PROCESS_LOG_STDERR": "PROCESS_LOG",
    "REMOTE_COMMUNICATION": "EVENT",
    "SUPERVISOR_STATE_CHANGE": "EVENT",
    "SUPERVISOR_STATE_CHANGE_RUNNING": "SUPERVISOR_STATE_CHANGE",
    "SUPERVISOR_STATE_CHANGE_STOPPING": "SUPERVISOR_STATE_CHANGE",
    "TICK": "EVENT",
    "TICK_5": "TICK",
    "TICK_60": "TICK",
    "TICK_3600": "TICK",
    "PROCESS_GROUP": "EVENT",
    "PROCESS_GROUP_ADDED": "PROCESS_GROUP",
    "PROCESS_GROUP_REMOVED": "PROCESS_GROUP",
}
#: types daemonkit accepts in ``events =`` but never emits (no capture mode)
NEVER_EMITTED = frozenset({"PROCESS_COMMUNICATION", "PROCESS_COMMUNICATION_STDOUT",
                           "PROCESS_COMMUNICATION_STDERR", "PROCESS_STATE_UNKNOWN"})
TICK_PERIODS = {"TICK_5": 5, "TICK_60": 60, "TICK_3600": 3600}


def descends(name: str, ancestor: str) -> bool:
    current: str | None = name
    for _ in range(len(PARENT)):  # bounded: the tree is shallow
        if current is None:
            return False
        if current == ancestor:
            return True
        current = PARENT[current]
    return False


def covered(subscribed: tuple[str, ...]) -> frozenset[str]:
    """The concrete types a listener subscribed to ``subscribed`` receives."""
    return frozenset(name for name in PARENT if any(descends(name, s) for s in subscribed))


def _state_payload(event: ProcessStateChanged) -> str:
    fields: list[tuple[str, object]] = [
        ("processname", event.process_name), ("groupname", event.group),
        ("from_state", event.from_state)]
    state = event.to_state
    pid = event.pid if event.pid is not None else 0
    if state in ("STARTING", "BACKOFF"):
        fields.append(("tries", event.tries))
    elif state == "EXITED":
        fields += [("expected", int(event.expected)), ("pid", pid)]
    elif state in ("RUNNING", "STOPPING", "STOPPED"):
        fields.append(("pid", pid))
    return " ".join(f"{key}:{value}" for key, value in fields)


def type_name(event: Event) -> str:
    """The supervisord event type of a bus event."""
    if isinstance(event, ProcessStateChanged):
        return f"PROCESS_STATE_{event.to_state}"
    if isinstance(event, ProcessLogged):
        return f"PROCESS_LOG_{event.channel.upper()}"
    if isinstance(event, Tick):
        return f"TICK_{event.period}"
    if isinstance(event, SupervisorStateChanged):
        return f"SUPERVISOR_STATE_CHANGE_{event.state}"
    if isinstance(event, GroupAdded):
        return "PROCESS_GROUP_ADDED"
    if isinstance(event, GroupRemoved):
        return "PROCESS_GROUP_REMOVED"
    return "REMOTE_COMMUNICATION"


def payload(event: Event) -> str:
    """The payload text supervisord sends for the event."""
    if isinstance(event, ProcessStateChanged):
        return _state_payload(event)
    if isinstance(event, ProcessLogged):
        try:
            data = event.data.decode()
        except UnicodeDecodeError:
            data = f"Undecodable: {event.data!r}"
        pid = event.pid if event.pid is not None else 0
        return (f"processname:{event.process_name} groupname:{event.group} pid:{pid} "
                f"channel:{event.channel}\n{data}")
    if isinstance(event, Tick):
        return f"when:{event.when}"
    if isinstance(event, SupervisorStateChanged):
        return ""
    if isinstance(event, (GroupAdded, GroupRemoved)):
        return f"groupname:{event.group}\n"
    return f"type:{event.type}\n{event.data}"
