"""Process states, the operator's wish, and the transitions allowed between states.

Observed state (what the process is doing) is kept apart from the desired state (what the
operator asked for), as runit does with ``S_RUN``/``W_UP``: a process that crashed while
wanted up is restarted; one that exits while wanted down stays down. Every state change goes
through :func:`check_transition`, so an impossible change is a bug that fails loudly instead
of a status table that lies.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    STOPPED = "STOPPED"    # not running, not wanted (or never started)
    STARTING = "STARTING"  # spawned; not yet up for startsecs (or READY=1 not yet received)
    RUNNING = "RUNNING"    # up and counted as started
    BACKOFF = "BACKOFF"    # a start failed; waiting before the next attempt
    STOPPING = "STOPPING"  # stopsignal sent; waiting for the process group to exit
    EXITED = "EXITED"      # a RUNNING process exited and is not restarted
    FATAL = "FATAL"        # startretries exhausted; `start NAME` tries again


class Want(enum.Enum):
    UP = "UP"
    DOWN = "DOWN"


#: states in which a process (the group leader) exists
LIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
#: states from which `start` spawns a new process
STARTABLE_STATES = frozenset({State.STOPPED, State.EXITED, State.FATAL, State.BACKOFF})
#: supervisord's RUNNING_STATES: `start` says ALREADY_STARTED, `stop` acts
STARTED_STATES = frozenset({State.STARTING, State.RUNNING, State.BACKOFF})
#: supervisord's SIGNALLABLE_STATES: a process exists to signal
SIGNALLABLE_STATES = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
#: supervisord's state codes (getProcessInfo's ``state``)
STATE_CODES = {State.STOPPED: 0, State.STARTING: 10, State.RUNNING: 20, State.BACKOFF: 30,
               State.STOPPING: 40, State.EXITED: 100, State.FATAL: 200}

TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.BACKOFF, State.STOPPING}),
    State.RUNNING: frozenset({State.STOPPING, State.EXITED, State.BACKOFF}),
    State.BACKOFF: frozenset({State.STARTING, State.FATAL, State.STOPPED}),
    # STOPPING -> BACKOFF: a notify program that never sent READY=1, once it is gone
    State.STOPPING: frozenset({State.STOPPED, State.BACKOFF}),
    State.EXITED: frozenset({State.STARTING, State.STOPPED}),
    State.FATAL: frozenset({State.STARTING, State.STOPPED}),
}


class TransitionError(RuntimeError):
    """A state change the table does not allow: a bug in the supervisor, never user input."""


def check_transition(current: State, new: State) -> None:
    if new not in TRANSITIONS[current]:
        raise TransitionError(f"{current.value} -> {new.value} is not a valid transition")
