"""The daemon's own life cycle as an explicit state machine, and results of requested actions.

Other threads (the control socket's) ask "are you ready?", "did my reload run, and how did
it end?"; the main thread answers by entering states and finishing actions. A condition
variable carries both, so nobody polls.
"""

from __future__ import annotations

import threading
import time
from enum import Enum
from typing import Any


class State(Enum):
    STARTING = "starting"  # setup_privileged()/setup() running
    RUNNING = "running"  # setup() done: ready
    STOPPING = "stopping"  # run() ended; shutdown() running
    FAILED = "failed"  # setup() raised; the process is about to exit


#: the only moves the daemon makes; anything else is a bug, caught at once
_TRANSITIONS = {
    State.STARTING: {State.RUNNING, State.FAILED},
    State.RUNNING: {State.STOPPING},
    State.STOPPING: set(),
    State.FAILED: set(),
}


class StateMachine:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.current = State.STARTING

    def enter(self, state: State) -> None:
        with self._changed:
            if state not in _TRANSITIONS[self.current]:
                raise RuntimeError(f"daemon state {self.current.value} -> {state.value}")
            self.current = state
            self._changed.notify_all()

    def enter_once(self, state: State) -> bool:
        """Enter ``state`` unless already there or past it; True if this call moved."""
        with self._changed:
            if state not in _TRANSITIONS[self.current]:
                return False
            self.current = state
            self._changed.notify_all()
            return True

    def wait_until_settled(self, timeout_s: float) -> State:
        """Wait while STARTING (bounded); return the state then."""
        with self._changed:
            self._changed.wait_for(lambda: self.current is not State.STARTING, timeout_s)
            return self.current


class ActionTracker:
    """Numbered runs of main-thread actions (reload, reopen), so a waiter gets *its* result.

    A waiter takes a ticket (the number the next run will have) before requesting the action;
    any run that starts after the request serves it (requests arriving together coalesce).
    """

    def __init__(self) -> None:
        self._done = threading.Condition()
        self._started: dict[str, int] = {}
        self._finished: dict[str, int] = {}
        self._results: dict[str, dict[str, Any]] = {}

    def ticket(self, action: str) -> int:
        with self._done:
            return self._started.get(action, 0) + 1

    def begin(self, action: str) -> None:
        with self._done:
            self._started[action] = self._started.get(action, 0) + 1

    def finish(self, action: str, result: dict[str, Any]) -> None:
        with self._done:
            self._finished[action] = self._started[action]
            self._results[action] = result
            self._done.notify_all()

    def wait(self, action: str, ticket: int, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        with self._done:
            while self._finished.get(action, 0) < ticket:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._done.wait(remaining)
            return dict(self._results[action])
