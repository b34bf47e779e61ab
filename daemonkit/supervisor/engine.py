"""The supervisor's event loop: one ``selectors`` call in the main thread, nothing polled.

The loop sleeps in ``select()`` until one of these wakes it:

* a child's pidfd (readable the instant the child exits: respawn needs no SIGCHLD handler
  and no 1 s tick, and a pidfd cannot be fooled by pid reuse);
* a child's stdout/stderr pipe (relayed to its log file);
* the NOTIFY_SOCKET datagram socket (``READY=1`` from programs with ``notify = true``);
* the wakeup pipe, written by other threads after they queued a call (control socket, web);
* the nearest instance timer (startsecs, backoff, stopwaitsecs), from ``time.monotonic()``.

Every instance's state lives here and is only touched by the main thread; other threads go
through :meth:`Engine.call`, which queues a function and waits for its result. A call may
answer later (``start NAME`` answers when the instance is RUNNING or has failed) by returning
a :class:`Pending`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from . import config as config_module
from .config import ProgramConfig, SupervisorConfig
from .process import Instance
from .states import State, Want

_UCRED = struct.Struct("3i")


@dataclass
class Pending:
    """An answer that depends on future events: ready when ``done()`` is true or at deadline."""

    done: Callable[[], bool]
    answer: Callable[[bool], dict[str, Any]]  # argument: False if the deadline passed first
    deadline: float


@dataclass
class _Call:
    function: Callable[[], dict[str, Any] | Pending]
    finished: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    pending: Pending | None = None


class Engine:
    def __init__(self, log: logging.Logger, supervisor_id: str | None = None) -> None:
        self.log = log
        self.supervisor_id = supervisor_id
        self.selector = selectors.DefaultSelector()
        self.config: SupervisorConfig | None = None
        self.instances: dict[str, Instance] = {}  # live config's instances, in start order
        self.retiring: list[Instance] = []  # removed or changed: stopping, then forgotten
        self.numprocs: dict[str, int] = {}  # per program, after runtime scaling
        self.started_at = time.monotonic()
        self.last_reload: dict[str, Any] = {}
        self.stopping = False
        self.closed = False
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._pending: list[_Call] = []
        self._main = threading.current_thread()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.watch(self._wake_r, self._drain_wakeup)
        self._notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        name = f"daemonkit-supervisor-{os.getpid()}-{secrets.token_hex(6)}"
        self._notify_sock.bind("\0" + name)  # abstract: reachable from children of any uid
        self._notify_sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._notify_sock.setblocking(False)
        self.notify_address = "@" + name
        self.watch(self._notify_sock.fileno(), self._on_notify)

    # -- Loop protocol for instances ----------------------------------------------------

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def unwatch(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)

    def changed(self, instance: Instance) -> None:
        """State changes are picked up by pending answers at the end of the iteration."""

    # -- configuration ------------------------------------------------------------------

    def load(self, new: SupervisorConfig) -> dict[str, Any]:
        """Apply ``new`` (already validated) as the difference from the running config."""
        notes = []
        if self.config is not None:
            settings = ("pidfile", "logfile", "control", "user", "umask")
            stale = [key for key in settings
                     if getattr(self.config, key) != getattr(new, key)]
            if stale:
                notes.append(f"[supervisor] {', '.join(stale)} changed: restart the supervisor "
                             "to apply")
            if self.config.web != new.web:
                notes.append("[web] changed: restart the supervisor to apply")
            for warning in new.warnings:
                if warning not in self.config.warnings:
                    self.log.warning("%s", warning)
        old = self.config.programs if self.config else {}
        added = [p for p in new.programs if p not in old]
        removed = [p for p in old if p not in new.programs]
        changed: list[str] = []
        scaled: dict[str, list[int]] = {}
        for name in new.programs:
            if name not in old:
                continue
            before, after = old[name], new.programs[name]
            current = self.numprocs.get(name, before.numprocs)
            if not before.same_except_numprocs(after):
                changed.append(name)
            elif current != after.numprocs:  # also undoes a runtime scale: the file rules
                scaled[name] = [current, after.numprocs]
        self.config = new
        for name in removed:
            self._retire(self._of_program(name))
            self.numprocs.pop(name, None)
        for name in changed:
            self._retire(self._of_program(name))
            self.numprocs[name] = new.programs[name].numprocs
            self._create(new.programs[name], start=new.programs[name].autostart)
        for name in added:
            self.numprocs[name] = new.programs[name].numprocs
            self._create(new.programs[name], start=new.programs[name].autostart)
        for name, (_count, target) in scaled.items():
            self._resize(name, target)
        self._reorder()
        self._wake()
        summary = {"added": sorted(added), "changed": sorted(changed),
                   "removed": sorted(removed), "scaled": scaled,
                   "unchanged": sorted(set(new.programs) - set(added) - set(changed) - set(scaled)),
                   "notes": notes}
        self.last_reload = summary
        return summary

    def reload_file(self) -> dict[str, Any]:
        """Re-read the config file; ConfigError leaves everything as it was."""
        assert self.config is not None
        if self.stopping:
            raise ConfigError("the supervisor is stopping; reload refused")
        new = config_module.load(self.config.path)
        summary = self.load(new)
        self.log.info("reloaded %s: %s", new.path, summary)
        return summary

    def _of_program(self, program: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.program.name == program]

    def _create(self, program: ProgramConfig, start: bool, nums: Iterable[int] | None = None
                ) -> None:
        count = self.numprocs.get(program.name, program.numprocs)
        for num in (program.process_nums(count) if nums is None else nums):
            instance = Instance(program, program.instance(num, count), self, self.log,
                                notify_address=self.notify_address,
                                supervisor_id=self.supervisor_id)
            self.instances[instance.name] = instance
            if start:
                instance.want = Want.UP  # spawned by _start_held once no namesake is retiring
        self._start_held()

    def _retire(self, instances: list[Instance]) -> None:
        for instance in instances:
            del self.instances[instance.name]
            instance.stop()
            if not instance.stopped():
                self.retiring.append(instance)
            else:
                instance.reopen_logs()

    def _resize(self, program_name: str, target: int) -> None:
        assert self.config is not None
        program = self.config.programs[program_name]
        current = self._of_program(program_name)
        self.numprocs[program_name] = target
        wanted_nums = set(program.process_nums(target))
        self._retire([i for i in current if i.spec.process_num not in wanted_nums])
        existing = {i.spec.process_num for i in current}
        new_nums = [n for n in program.process_nums(target) if n not in existing]
        # new instances of a running program start; of a stopped one, stay stopped
        start = any(i.want == Want.UP for i in current) or (not current and program.autostart)
        self._rename(program, target)
        self._create(program, start=start, nums=new_nums)
        self._reorder()

    def _rename(self, program: ProgramConfig, numprocs: int) -> None:
        """``w`` <-> ``w:0`` when the default name follows the count; the process stays."""
        for instance in self._of_program(program.name):
            spec = program.instance(instance.spec.process_num, numprocs)
            if spec.name != instance.name:
                del self.instances[instance.name]
                instance.spec = spec
                self.instances[spec.name] = instance

    def _reorder(self) -> None:
        assert self.config is not None
        order = {name: index for index, name in enumerate(self.config.program_order())}
        self.instances = dict(sorted(
            self.instances.items(),
            key=lambda item: (order.get(item[1].program.name, 0), item[1].spec.process_num)))

    def _start_held(self) -> None:
        """Start instances wanted up whose namesake (old config) has finished stopping.

        STOPPED while wanted UP happens only here: everywhere else a wanted instance is
        spawned in the same step that stopped it."""
        self.retiring = [i for i in self.retiring if not i.stopped()]
        busy = {i.name for i in self.retiring}
        for instance in self.instances.values():
            if (instance.want == Want.UP and instance.state == State.STOPPED
                    and instance.name not in busy):
                instance.start()

    def _retiring_namesake(self, instance: Instance) -> Instance | None:
        for old in self.retiring:
            if old.name == instance.name and not old.stopped():
                return old
        return None

    def _start(self, instance: Instance) -> None:
        """Start now, or once the old config's process of the same name is gone: two
        copies of one program must never run side by side."""
        if instance.state == State.STOPPED and self._retiring_namesake(instance):
            instance.want = Want.UP  # _start_held spawns it
        else:
            instance.start()

    def _held(self, instance: Instance) -> bool:
        return instance.want == Want.UP and instance.state == State.STOPPED

    # -- the loop -----------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool],
            critical: Callable[[], AbstractContextManager[None]]) -> None:
        """Serve events until ``should_stop()``; each batch runs inside ``critical()``."""
        while not should_stop():
            with critical():  # a SIGHUP reload must not resize what we iterate over
                timeout = self._timeout()
            # a reload served after this point wakes us through the wakeup pipe
            events = self.selector.select(timeout)
            with critical():
                self._dispatch(events)

    def _dispatch(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _mask in events:
            current = self.selector.get_map().get(key.fd)
            if current is not None and current.data is key.data:
                key.data()  # still the same registration (an fd number can be reused)
        now = time.monotonic()
        for instance in [*self.instances.values(), *self.retiring]:
            if instance.deadline is not None and instance.deadline <= now:
                instance.on_timer(now)
        self._run_calls()
        if self.retiring:
            self._start_held()
        self._resolve_pending()

    def _timeout(self) -> float | None:
        deadlines = [i.deadline for i in (*self.instances.values(), *self.retiring)
                     if i.deadline is not None]
        deadlines += [c.pending.deadline for c in self._pending if c.pending is not None]
        if not deadlines:
            return None  # idle: sleep until something happens
        return max(0.0, min(deadlines) - time.monotonic())

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _drain_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _on_notify(self) -> None:
        for _ in range(64):  # bounded: a chatty child cannot starve the loop
            try:
                data, ancillary, _flags, _addr = self._notify_sock.recvmsg(
                    4096, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            sender = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = _UCRED.unpack(payload[:_UCRED.size])[0]
            instance = self._instance_of_pid(sender) if sender else None
            if instance is None:
                continue
            fields = dict(line.split("=", 1) for line in data.decode(errors="replace")
                          .splitlines() if "=" in line)
            if fields.get("READY") == "1":
                instance.on_ready()

    def _instance_of_pid(self, pid: int) -> Instance | None:
        leaders = {i.pid: i for i in self.instances.values() if i.pid is not None}
        if pid in leaders:
            return leaders[pid]
        try:
            return leaders.get(os.getpgid(pid))  # a helper process in the instance's group
        except ProcessLookupError:
            return None

    # -- calls from other threads -------------------------------------------------------

    def call(self, function: Callable[[], dict[str, Any] | Pending],
             timeout_s: float = 30.0) -> dict[str, Any]:
        """Run ``function`` in the loop's thread and return its answer (any thread)."""
        if self.closed:
            return {"ok": False, "error": "the supervisor is stopping"}
        if threading.current_thread() is self._main:
            outcome = function()
            if isinstance(outcome, Pending):
                return {"ok": False, "error": "cannot wait inside the supervisor's own thread"}
            return outcome
        pending = _Call(function)
        self._calls.put(pending)
        self._wake()
        if not pending.finished.wait(timeout_s):
            return {"ok": False, "error": f"no answer from the supervisor within {timeout_s:g}s"}
        assert pending.result is not None
        return pending.result

    def _run_calls(self) -> None:
        for _ in range(1000):  # bounded per iteration; the wakeup byte brings us back
            try:
                pending = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = pending.function()
            except ConfigError as exc:
                outcome = {"ok": False, "error": str(exc)}
            except Exception as exc:  # a bad request must not kill the loop
                self.log.exception("control command failed")
                outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            if isinstance(outcome, Pending):
                pending.pending = outcome
                self._pending.append(pending)
            else:
                pending.result = outcome
                pending.finished.set()
        self._wake()

    def _resolve_pending(self) -> None:
        if not self._pending:
            return
        now = time.monotonic()
        still: list[_Call] = []
        for waiting in self._pending:
            assert waiting.pending is not None
            done = waiting.pending.done()
            if done or now >= waiting.pending.deadline or self.stopping:
                waiting.result = waiting.pending.answer(done)
                waiting.finished.set()
            else:
                still.append(waiting)
        self._pending = still

    # -- operations (loop thread) -------------------------------------------------------

    def targets(self, name: str) -> list[Instance] | None:
        if name in ("*", "all"):
            return list(self.instances.values())
        if name in self.instances:
            return [self.instances[name]]
        found = self._of_program(name)
        if found:
            return found
        if self.config and name in self.config.programs:
            return []  # a program scaled to zero instances
        group, sep, member = name.partition(":")
        members = self.config.groups.get(group) if self.config else None
        if members is None:
            return None
        in_group = [i for i in self.instances.values() if i.program.name in members]
        if not sep or member == "*":  # supervisord's "group" and "group:*"
            return in_group
        if member in members:  # "group:program"
            return self._of_program(member)
        named = [i for i in in_group if i.name == member]  # "group:prog:2"
        return named or None

    def action(self, name: str, verb: str) -> dict[str, Any] | Pending:
        if self.stopping:
            return {"ok": False, "error": "the supervisor is stopping"}
        instances = self.targets(name)
        if instances is None:
            return {"ok": False, "error": f"no such program or instance: {name}"}
        held_s = max((old.program.stopwaitsecs + 3.0 for old in self.retiring
                       if old.name in {i.name for i in instances}), default=0.0)
        if verb == "start":
            for instance in instances:
                self._start(instance)
            return self._wait(instances, lambda i: _settled_up(i) and not self._held(i),
                              _extra_start_s(instances) + held_s, "start")
        if verb == "stop":
            for instance in instances:
                instance.stop()
            return self._wait(instances, lambda i: i.stopped(), _extra_stop_s(instances), "stop")
        if verb == "restart":
            for instance in instances:
                instance.stop()
                instance.want = Want.UP
                if instance.stopped():
                    self._start(instance)
            wait_s = _extra_stop_s(instances) + _extra_start_s(instances) + held_s
            return self._wait(instances, lambda i: _settled_up(i) and not self._held(i),
                              wait_s, "restart")
        return {"ok": False, "error": f"unknown verb {verb!r} (start, stop or restart)"}

    def _wait(self, instances: list[Instance], done: Callable[[Instance], bool],
              wait_s: float, verb: str) -> Pending:
        def answer(finished: bool) -> dict[str, Any]:
            states = [i.describe() for i in instances]
            if verb in ("start", "restart"):
                failed = [i for i in instances if i.state != State.RUNNING]
            else:
                failed = [i for i in instances if not i.stopped()]
            if not failed:
                return {"ok": True, "instances": states}
            detail = ", ".join(f"{i.name} {i.state.value}" + (f" ({i.spawn_error})"
                               if i.spawn_error else "") for i in failed)
            why = "" if finished else f" after {wait_s:g}s"
            return {"ok": False, "error": f"{verb} failed{why}: {detail}", "instances": states}

        return Pending(lambda: all(done(i) for i in instances), answer,
                       time.monotonic() + wait_s)

    def scale(self, program: str, delta: int) -> dict[str, Any]:
        if self.config is None or program not in self.config.programs:
            return {"ok": False, "error": f"no such program: {program}"}
        if delta not in (1, -1):  # one instance per request, as the web page offers
            return {"ok": False, "error": f"delta must be 1 or -1, got {delta}"}
        current = self.numprocs.get(program, self.config.programs[program].numprocs)
        target = current + delta
        if target < 0:
            return {"ok": False, "error": f"{program} has only {current} instances"}
        if target > 1 and "%(process_num)" not in self.config.programs[program].name_template(
                target):
            return {"ok": False, "error": f"{program}: process_name has no %(process_num)s"}
        self._resize(program, target)
        return {"ok": True, "program": program, "numprocs": target}

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "config": self.config.path if self.config else None,
            "programs": [self._describe(i) for i in self.instances.values()],
            "retiring": [i.describe() for i in self.retiring],
            "program_names": self.config.program_order() if self.config else [],
            "groups": {g: list(m) for g, m in self.config.groups.items()} if self.config
            else {},
            "last_reload": self.last_reload,
        }

    def _describe(self, instance: Instance) -> dict[str, object]:
        """While the old config's process of this name is still stopping, that process is
        what runs under the name: show it (STOPPING, its pid), not the idle successor."""
        old = self._retiring_namesake(instance) if instance.state == State.STOPPED else None
        if old is None:
            return instance.describe()
        return {**old.describe(), "want": instance.want.value, "retiring": True}

    def reopen_logs(self) -> None:
        everyone = [*self.instances.values(), *self.retiring]
        for instance in everyone:
            instance.reopen_logs()
        self.log.info("reopened the log files of %d instances", len(everyone))

    # -- shutdown -----------------------------------------------------------------------

    def shutdown(self, grace_s: float) -> None:
        """Stop every instance (stopsignal, stopwaitsecs, SIGKILL), reaping as we go."""
        self.stopping = True
        for instance in reversed([*self.instances.values()]):
            instance.stop()
        for instance in self.retiring:
            if not instance.stopped():
                instance.stop()
        everyone = [*self.instances.values(), *self.retiring]
        deadline = time.monotonic() + grace_s
        killed = False
        for _ in range(100_000):  # bounded; each turn sleeps in select()
            if all(i.stopped() for i in everyone):
                break
            now = time.monotonic()
            if now >= deadline:
                if killed:
                    self.log.error("children still alive after SIGKILL: %s",
                                   [i.name for i in everyone if not i.stopped()])
                    break
                for instance in everyone:
                    instance.kill_now()
                killed, deadline = True, now + 2.0
            self._dispatch(self.selector.select(min(self._timeout() or 1.0,
                                                    max(0.0, deadline - now))))
        self._resolve_pending()

    def close(self) -> None:
        self.closed = True  # before the fds go: their numbers may be reused at once
        self.selector.close()
        self._notify_sock.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


def _settled_up(instance: Instance) -> bool:
    return instance.state not in (State.STARTING, State.BACKOFF, State.STOPPING) and (
        instance.lingering_pgid is None)


def _extra_start_s(instances: list[Instance]) -> float:
    worst = max((i.program.startsecs for i in instances), default=0.0)
    return worst + 5.0


def _extra_stop_s(instances: list[Instance]) -> float:
    worst = max((i.program.stopwaitsecs for i in instances), default=0.0)
    return worst + 3.0
