"""The supervisor's event loop: one ``selectors`` call in the main thread, nothing polled.

The loop sleeps in ``select()`` until one of these wakes it:

* the spawn helper's socket (:mod:`.spawner`: the helper starts the programs, so their
  exit statuses come from it, the instant it reaps them), or, for a child the supervisor
  made itself, the child's pidfd (respawn needs no SIGCHLD handler and no 1 s tick);
* a child's stdout/stderr pipe (relayed to its log file), or its stdin becoming writable;
* the NOTIFY_SOCKET datagram socket (``READY=1`` from programs with ``notify = true``);
* the wakeup pipe, written by other threads after they queued a call (control socket, web,
  XML-RPC);
* the nearest instance timer (startsecs, backoff, stopwaitsecs), from ``time.monotonic()``,
  or the nearest of the engine's own timers (the TICK_* clock of event listeners).

Nothing the loop does per event depends on how many programs there are: timers sit in a
heap (an instance schedules its deadline when it sets it; a changed deadline leaves a stale
entry that is skipped when it comes up), processes are found by pid in a dict, and only a
reload or a status walks every instance. 2,000 programs respawn as fast as 3.

Every instance's state lives here and is only touched by the main thread; other threads go
through :meth:`Engine.call`, which queues a function and waits for its result (or its
exception). A call may answer later (``start NAME`` answers when the instance is RUNNING or
has failed) by returning a :class:`Pending`.

Names are resolved here and nowhere else (:meth:`Engine.select`): an instance (``web``,
``worker:2``), a program, a group, ``group:*``, ``group:name`` (supervisord's namespec),
``all``. State changes are published on :attr:`Engine.events`, which feeds the event
listener pools (:mod:`.listeners`).

``depends_on`` (:mod:`.dependencies`): every start goes through :meth:`Engine._start`, which
holds an instance whose dependency is not RUNNING; the dependency's change to RUNNING
releases exactly the instances held on it. Stops of several instances signal a dependency
only once its dependents among them are gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import logging
import os
import queue
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from . import config as config_module
from . import limits
from .config import GroupConfig, ProgramConfig, SupervisorConfig
from .dependencies import DependencyGraph, StopOrder, chain_depth
from .events import (
    EventBus,
    GroupAdded,
    GroupRemoved,
    ProcessLogged,
    ProcessStateChanged,
    SupervisorStateChanged,
)
from .faults import (
    AlreadyAdded,
    Failed,
    Fault,
    NoSuchName,
    Result,
    ShuttingDown,
    StillRunning,
    SupervisorError,
)
from .isolated import load_isolated
from .listeners import ListenerPools
from .logfile import SyslogSink
from .process import Instance, SpawnError, resolve_command
from .spawn import Child, SpawnRequest
from .spawner import Spawner
from .states import LIVE_STATES, SIGNALLABLE_STATES, STARTED_STATES, State, Want
from .ticks import TickClock

_UCRED = struct.Struct("3i")


@dataclass
class Pending:
    """An answer that depends on future events: ready when ``done()`` is true or at deadline."""

    done: Callable[[], bool]
    answer: Callable[[bool], Any]  # argument: False if the deadline passed first
    deadline: float


@dataclass
class _Call:
    function: Callable[[], Any]
    finished: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    pending: Pending | None = None


#: from this many running programs on, spawns go through the spawn helper (:mod:`.spawner`):
#: each spawn from the supervisor copies its fd table, 3-4 fds per program, which costs
#: nothing measurable at 100 programs and doubles a spawn's cost at 2,000
HELPER_FROM_PROGRAMS = 100


class Engine:
    def __init__(self, log: logging.Logger, supervisor_id: str | None = None,
                 syslog_address: str = "/dev/log") -> None:
        self.log = log
        self.supervisor_id = supervisor_id
        self.selector = selectors.DefaultSelector()
        self.config: SupervisorConfig | None = None  # what runs
        #: the config the supervisor started with: what a restart-only setting still is
        self.started_with: SupervisorConfig | None = None
        self.available: SupervisorConfig | None = None  # the file as last read (reread)
        self.instances: dict[str, Instance] = {}  # live config's instances, in start order
        self.retiring: list[Instance] = []  # removed or changed: stopping, then forgotten
        self.numprocs: dict[str, int] = {}  # per program, after runtime scaling
        self.sockets: dict[str, socket.socket] = {}  # fcgi programs' listening sockets
        self.started_at = time.monotonic()
        self.last_reload: dict[str, Any] = {}
        self.events = EventBus()
        self.listeners = ListenerPools(log)
        self.events.subscribe(self.listeners.publish)
        self.ticks = TickClock(self.events.publish)
        self.timers = [self.ticks]  # objects with a monotonic ``deadline`` and ``on_timer``
        self.syslog = SyslogSink(syslog_address)
        self.stopping = False
        self.exit_requested = False  # supervisor.shutdown: the loop ends, the daemon stops
        self.closed = False
        self.deps: DependencyGraph[Instance] = DependencyGraph()  # who is held on whom
        self.stop_order: StopOrder[Instance] = StopOrder()  # stops held for dependents
        #: work that state changes trigger (start a released dependent, a deferred stop),
        #: run after the change that caused it, never inside it (see _later)
        self._followups: deque[Callable[[], None]] = deque()
        self._following = False
        self._timers: list[tuple[float, int, Instance]] = []  # heap: (when, seq, instance)
        self._timer_seq = itertools.count()  # ties never compare instances
        self._by_pid: dict[int, Instance] = {}  # every live leader, current or retiring
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._taking_calls = True  # False once no loop turns to answer them (see call)
        self._calls_gate = threading.Lock()  # a call is queued before the gate shuts, or not
        self._pending: list[_Call] = []
        self._main = threading.current_thread()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.watch(self._wake_r, self._drain_wakeup)
        self._notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # os.urandom, not secrets: secrets loads OpenSSL's libcrypto (4 MB of RSS) for this
        name = f"daemonkit-supervisor-{os.getpid()}-{os.urandom(6).hex()}"
        self._notify_sock.bind("\0" + name)  # abstract: reachable from children of any uid
        self._notify_sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._notify_sock.setblocking(False)
        self.notify_address = "@" + name
        self.watch(self._notify_sock.fileno(), self._on_notify)
        self.spawner = Spawner(log, self._helper_child_exited, self._helper_children_lost,
                               self.watch, self.unwatch,
                               worth_it=lambda: len(self._by_pid) >= HELPER_FROM_PROGRAMS)

    # -- Loop protocol for instances ----------------------------------------------------

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def watch_write(self, fd: int, callback: Callable[[], None]) -> None:
        self.selector.register(fd, selectors.EVENT_WRITE, callback)

    def unwatch(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)

    def changed(self, instance: Instance, old: State, expected: bool) -> None:
        pid = instance.pid
        if pid is None and old in LIVE_STATES:
            pid = instance.last_pid  # EXITED/STOPPED name the process that just exited
        self.events.publish(ProcessStateChanged(
            instance.name, instance.spec.group, instance.spec.process_name, old.value,
            instance.state.value, pid, expected, instance.failed_starts))
        if instance.program.kind == "eventlistener":
            self.listeners.process_changed(instance)
        program = instance.program.name
        if self.deps.observe(program, instance, old, instance.state):
            self._later(lambda: self._release(program))
        if instance in self.stop_order.blocks and instance.stopped():
            for waiter in self.stop_order.stopped(instance):
                self._later(waiter.stop)

    def _later(self, work: Callable[[], None]) -> None:
        """Run ``work`` once the state change being reported is complete.

        A release can start a program that is RUNNING at once (startsecs = 0), whose own
        change releases the next: queued, a chain of any length runs in a flat loop, and
        no instance is re-entered in the middle of its own transition."""
        self._followups.append(work)
        if self._following:
            return
        self._following = True
        try:
            for _ in range(10_000_000):  # bounded: each item is a start or stop
                if not self._followups:
                    break
                self._followups.popleft()()
        finally:
            self._following = False

    def _release(self, dependency: str) -> None:
        """Every instance of ``dependency`` is RUNNING: what was held on it may start."""
        if self.stopping:
            return
        for waiter in self.deps.release(dependency):
            if (self.instances.get(waiter.name) is waiter and waiter.want is Want.UP
                    and waiter.stopped()):
                self._start(waiter)  # held again on its next unmet dependency, if any

    def _loaded(self, program: str) -> bool:
        return self.config is not None and program in self.config.programs

    def waiting_for(self, instance: Instance) -> str | None:
        """``waiting for db (FATAL)`` while ``instance`` is wanted up but held back."""
        program = instance.program.name
        if (instance.want is not Want.UP or not instance.stopped()
                or program not in self.deps.depends_on
                or self.instances.get(instance.name) is not instance):
            return None
        return self.deps.waiting_text(program, self._loaded, self._shown_state)

    def _shown_state(self, program: str) -> str:
        """The state that keeps ``program`` from being up: its first instance not RUNNING."""
        for member in self.deps.members.get(program, ()):
            if member.state is not State.RUNNING:
                return str(member.state.value)
        return State.RUNNING.value

    def _dependency_failed(self, instance: Instance) -> bool:
        """A dependency ``instance`` waits for has given up (FATAL) or is not wanted up."""
        for program in self.deps.dependencies_closure(instance.program.name):
            for member in self.deps.members.get(program, ()):
                if member.state is State.FATAL or (member.want is Want.DOWN
                                                   and member.state is not State.RUNNING):
                    return True
        return False

    def output(self, instance: Instance, channel: str, data: bytes) -> None:
        """An event listener's stdout is its protocol; other output becomes PROCESS_LOG_*."""
        if channel == "stdout" and instance.program.kind == "eventlistener":
            self.listeners.output(instance, data)
            return
        self.events.publish(ProcessLogged(instance.name, instance.spec.group,
                                          instance.spec.process_name, instance.pid, channel,
                                          data))

    def listen_socket(self, instance: Instance) -> socket.socket | None:
        return self.sockets.get(instance.program.name) if instance.program.socket else None

    def spawn(self, request: SpawnRequest, meanwhile: Callable[[], None] | None = None
              ) -> Child:
        return self.spawner.spawn(request, meanwhile)

    def _helper_child_exited(self, pid: int, status: int) -> None:
        instance = self._by_pid.get(pid)
        if instance is not None and instance.pid == pid and instance.child is not None \
                and instance.child.helper:
            instance.on_exit(status)

    def _helper_children_lost(self, pids: set[int]) -> None:
        for pid in pids:
            instance = self._by_pid.get(pid)
            if instance is not None and instance.pid == pid:
                instance.adopt()

    def schedule(self, instance: Instance, when: float) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_seq), instance))

    def pid_changed(self, instance: Instance, old: int | None, new: int | None) -> None:
        if old is not None and self._by_pid.get(old) is instance:
            del self._by_pid[old]
        if new is not None:
            self._by_pid[new] = instance

    # -- configuration ------------------------------------------------------------------

    def load(self, new: SupervisorConfig) -> dict[str, Any]:
        """Apply ``new`` (already validated) as the difference from the running config."""
        notes = []
        started = self.started_with
        if started is None:
            self.started_with = new
        else:
            # against the start, not the last reload: the note repeats until the restart
            settings = ("pidfile", "logfile", "control", "user", "umask", "servers",
                        "directory", "log_level")
            stale = [key for key in settings
                     if _needs_restart(started, key) != _needs_restart(new, key)]
            if stale:
                notes.append(f"[{new.top_section}] {', '.join(stale)} changed: restart the "
                             "supervisor to apply")
            if started.web != new.web:
                notes.append("[web] changed: restart the supervisor to apply")
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
            if not before.same_config(after):
                changed.append(name)
            elif current != after.numprocs:  # also undoes a runtime scale: the file rules
                scaled[name] = [current, after.numprocs]
        self._open_sockets([new.programs[p] for p in (*added, *changed)])
        old_groups = set(self.config.all_groups) if self.config else set()
        self.config = new
        self.available = new
        self.listeners.configure(new.programs, new.identifier)
        self.ticks.want(self.listeners.ticks_wanted)
        # one retirement for all: a removed dependent stops before what it depends on
        self._retire([i for name in (*removed, *changed) for i in self._of_program(name)])
        for name in removed:
            self.numprocs.pop(name, None)
            self._close_socket(name)
        for name in changed:
            self._close_socket(name, keep=new.programs[name])
            self.numprocs[name] = new.programs[name].numprocs
            self._create(new.programs[name], start=new.programs[name].autostart)
        for name in added:
            self.numprocs[name] = new.programs[name].numprocs
            self._create(new.programs[name], start=new.programs[name].autostart)
        for name, (_count, target) in scaled.items():
            self._resize(name, target)
        self._reorder()
        self._start_held()  # once, in start order (priority, dependencies first): per program
        # it made a load O(programs^2)
        for group in sorted(old_groups - set(new.all_groups)):
            self.events.publish(GroupRemoved(group))
        for group in sorted(set(new.all_groups) - old_groups):
            self.events.publish(GroupAdded(group))
        self._wake()
        summary = {"added": sorted(added), "changed": sorted(changed),
                   "removed": sorted(removed), "scaled": scaled,
                   "unchanged": sorted(set(new.programs) - set(added) - set(changed) - set(scaled)),
                   "notes": notes}
        self.last_reload = summary
        return summary

    def announce_running(self) -> None:
        """supervisord's SUPERVISOR_STATE_CHANGE_RUNNING: the first config is loaded."""
        self.events.publish(SupervisorStateChanged("RUNNING"))

    def reload_file(self, new: SupervisorConfig | None = None) -> dict[str, Any]:
        """Re-read the config file (unless ``new`` was read already, outside the loop) and
        apply the difference; ConfigError leaves everything as it was."""
        assert self.config is not None
        if self.stopping:
            raise ShuttingDown("the supervisor is stopping; reload refused")
        if new is None:
            new = config_module.load(self.config.path, strict=self.config.strict)
        warnings = self._warn_new(new)
        summary = self.load(new)
        summary["warnings"] = warnings
        self.log.info("reloaded %s: %s", new.path, summary)
        return summary

    def read_file(self) -> SupervisorConfig:
        """Read the config file anew (any thread: nothing here touches the running state),
        in a child interpreter: reading a big file here would starve the loop of the GIL."""
        config = self.config
        if config is None:
            raise ShuttingDown("the supervisor is not ready")
        return load_isolated(config.path, strict=config.strict)

    def group_diff(self, new: SupervisorConfig) -> tuple[list[str], list[str], list[str]]:
        """supervisord's ``reloadConfig``: (added, changed, removed) process groups between
        the running config and ``new``. A group changes when any of its programs does
        (``numprocs`` too: supervisorctl's ``update`` then restarts the whole group)."""
        assert self.config is not None
        running, read = self.config.all_groups, new.all_groups
        added = sorted(set(read) - set(running))
        removed = sorted(set(running) - set(read))
        changed = sorted(name for name in set(read) & set(running)
                         if self._group_signature(self.config, name)
                         != self._group_signature(new, name))
        self._warn_new(new)  # supervisorctl's reread and update come this way
        self.available = new
        return added, changed, removed

    def _warn_new(self, new: SupervisorConfig) -> list[str]:
        """What the file read anew warns about that the running config did not; logged
        unless the file as last read (a reread before this reload) said it already."""
        assert self.config is not None
        warnings = [w for w in new.warnings if w not in self.config.warnings]
        logged = set(self.available.warnings) if self.available is not None else set()
        for warning in warnings:
            if warning not in logged:
                self.log.warning("%s", warning)
        return warnings

    @staticmethod
    def _group_signature(config: SupervisorConfig, group: str) -> tuple[Any, ...]:
        spec = config.all_groups[group]
        return (spec, tuple(config.programs[p] for p in spec.programs if p in config.programs))

    def add_group(self, group: str) -> None:
        """supervisord's ``addProcessGroup``: make a group of the last read file active."""
        assert self.config is not None
        self._refuse_if_stopping()  # (the servers answer during a shutdown)
        source = self.available or self.config
        if group not in source.all_groups:
            raise NoSuchName(group)
        if group in self.config.all_groups:
            raise AlreadyAdded(group)
        spec = source.all_groups[group]
        programs = {**self.config.programs,
                    **{p: source.programs[p] for p in spec.programs}}
        groups = {**self.config.all_groups, group: spec}
        self._apply_groups(programs, groups)

    def remove_group(self, group: str) -> None:
        """supervisord's ``removeProcessGroup``: only a group whose processes are stopped."""
        assert self.config is not None
        self._refuse_if_stopping()  # (the servers answer during a shutdown)
        if group not in self.config.all_groups:
            raise NoSuchName(group)
        members = self._group_instances(group)
        if any(not i.stopped() or i.state in STARTED_STATES for i in members):
            raise StillRunning(group)
        names = set(self.config.all_groups[group].programs)
        programs = {n: p for n, p in self.config.programs.items() if n not in names}
        groups = {n: g for n, g in self.config.all_groups.items() if n != group}
        self._apply_groups(programs, groups)

    def _apply_groups(self, programs: dict[str, ProgramConfig],
                      groups: dict[str, GroupConfig]) -> None:
        assert self.config is not None
        available = self.available
        composite = dataclasses.replace(self.config, programs=programs, all_groups=groups)
        self.load(composite)
        self.available = available

    def restart_all(self, new: SupervisorConfig) -> None:
        """supervisord's ``restart`` (supervisorctl ``reload``): every process stops, and the
        file (already read and valid) starts afresh."""
        assert self.config is not None
        self._refuse_if_stopping()  # (the servers answer during a shutdown)
        everyone = list(self.instances.values())
        self.config = dataclasses.replace(self.config, programs={}, all_groups={})
        self.numprocs.clear()
        for name in list(self.sockets):
            self._close_socket(name)
        self.instances = {}
        self._retire(everyone)
        self.load(new)

    def _open_sockets(self, programs: Iterable[ProgramConfig]) -> None:
        """Create the fcgi sockets a change needs, all or none (ConfigError changes nothing)."""
        opened: dict[str, socket.socket] = {}
        try:
            for program in programs:
                if program.socket is None:
                    continue
                current = self.config.programs.get(program.name) if self.config else None
                if current is not None and current.socket == program.socket and (
                        program.name in self.sockets):
                    continue  # same socket: keep it (and its queued connections)
                opened[program.name] = _create_socket(program)
        except (OSError, ValueError) as exc:
            for sock in opened.values():
                sock.close()
            raise ConfigError(f"[fcgi-program:{program.name}] socket: could not create "
                              f"{program.socket.address.url if program.socket else ''}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        for name, sock in opened.items():
            self._close_socket(name)
            self.sockets[name] = sock

    def _close_socket(self, program: str, keep: ProgramConfig | None = None) -> None:
        if keep is not None and keep.socket is not None:
            return  # the changed program's new socket is already in place
        sock = self.sockets.pop(program, None)
        if sock is not None:
            address = sock.getsockname() if sock.family == socket.AF_UNIX else None
            sock.close()
            if isinstance(address, str) and address:
                with contextlib.suppress(OSError):
                    os.unlink(address)

    def _of_program(self, program: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.program.name == program]

    def _group_instances(self, group: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.spec.group == group]

    def _create(self, program: ProgramConfig, start: bool, nums: Iterable[int] | None = None
                ) -> None:
        count = self.numprocs.get(program.name, program.numprocs)
        for num in (program.process_nums(count) if nums is None else nums):
            instance = Instance(program, program.instance(num, count), self, self.log,
                                notify_address=self.notify_address,
                                supervisor_id=self.supervisor_id, syslog=self.syslog)
            self.instances[instance.name] = instance
            if start:
                instance.want = Want.UP  # spawned by _start_held once no namesake is retiring

    def _retire(self, instances: list[Instance]) -> None:
        for instance in instances:
            self.instances.pop(instance.name, None)
            self.deps.forget(instance.program.name, instance)
        self._stop_in_order(instances)
        for instance in instances:
            if not instance.stopped():
                self.retiring.append(instance)
            else:
                instance.reopen_logs()

    def _stop_in_order(self, instances: list[Instance], by_priority: bool = False) -> None:
        """Stop each instance; one that others of ``instances`` depend on (directly or
        not) is signalled only once those are gone: dependents stop first.

        ``by_priority`` (shutdown): as supervisord shuts down, group by group, the
        instances of one wave are signalled only once every live instance of the next
        higher wave is gone. Without depends_on the waves are the group priorities (a
        database at priority 1 outlives the application at 100 that uses it; a
        ``[group:]``'s priority is its members', whatever their own; groups of equal
        priority stop together); with it, :meth:`SupervisorConfig.stop_waves` puts every
        dependent above what it depends on, so that depends_on wins without a wait ever
        going round in a circle."""
        by_program: dict[str, list[Instance]] = {}
        for instance in instances:
            by_program.setdefault(instance.program.name, []).append(instance)
        closures: dict[str, list[str]] = {}  # per program, not per instance

        def dependents_of(program: str) -> list[str]:
            if program not in self.deps.dependents:
                return []
            if program not in closures:
                closures[program] = self.deps.dependents_closure(program)
            return closures[program]

        # a program a reload removed may still be stopping, and still using what it
        # depended on, which the current graph does not know it did
        retired_users: dict[str, list[Instance]] = {}
        for old in self.retiring:
            if not old.stopped():
                for needed in old.program.depends_on:
                    retired_users.setdefault(needed, []).append(old)
        waves = self.config.stop_waves() if by_priority and self.config is not None else {}
        # instances of a configuration a reload replaced: already ordered when they were
        # retired, by the graph they belonged to, which the current one no longer knows
        retired = {id(i) for i in self.retiring} if by_priority else set()
        above = _next_wave_up([i for i in instances
                               if not i.stopped() and id(i) not in retired], waves) \
            if by_priority else {}
        for instance in instances:
            program = instance.program.name
            if id(instance) in retired:
                if not self.stop_order.deferred(instance):
                    instance.stop()  # (stopping already, most likely)
                continue
            self.stop_order.cancel(instance)
            dependents = [d for p in dependents_of(program) for d in by_program.get(p, ())
                          if not d.stopped()]
            dependents += [d for d in retired_users.get(program, ()) if d is not instance]
            dependents += above.get(waves.get(program, 0), ())
            if instance.state in LIVE_STATES and self.stop_order.defer(instance, dependents):
                instance.want = Want.DOWN  # signalled once what it waits for is gone
                continue
            instance.stop()

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
        self._start_held()

    def _rename(self, program: ProgramConfig, numprocs: int) -> None:
        """``w`` <-> ``w:0`` when the default name follows the count; the process stays."""
        for instance in self._of_program(program.name):
            spec = program.instance(instance.spec.process_num, numprocs)
            if spec.name != instance.name:
                del self.instances[instance.name]
                instance.spec = spec
                self.instances[spec.name] = instance

    def _reorder(self) -> None:
        """Instances in start order, and the dependency graph anew: what was held on the
        old graph is held again on the new one, or starts (its dependency went away).
        Instances STOPPED and wanted up are left to _start_held, which follows."""
        assert self.config is not None
        order = {name: index for index, name in enumerate(self.config.program_order())}
        self.instances = dict(sorted(
            self.instances.items(),
            key=lambda item: (order.get(item[1].program.name, 0), item[1].spec.process_num)))
        held = self.deps.rebuild(self.config.dependency_graph(),
                                 ((i.program.name, i) for i in self.instances.values()))
        for instance in held:
            if (self.instances.get(instance.name) is instance and instance.want is Want.UP
                    and instance.stopped() and instance.state is not State.STOPPED):
                self._start(instance)

    def _start_held(self) -> None:
        """Start instances wanted up whose namesake (old config) has finished stopping.

        STOPPED while wanted UP happens only here: everywhere else a wanted instance is
        spawned in the same step that stopped it."""
        self.retiring = [i for i in self.retiring if not i.stopped()]
        busy = {i.name for i in self.retiring}
        for instance in list(self.instances.values()):
            if (instance.want == Want.UP and instance.state == State.STOPPED
                    and instance.name not in busy):
                self._start(instance)

    def _retiring_namesake(self, instance: Instance) -> Instance | None:
        for old in self.retiring:
            if old.name == instance.name and not old.stopped():
                return old
        return None

    def _start(self, instance: Instance, pull: bool = False) -> None:
        """Start now, or once the old config's process of the same name is gone (two
        copies of one program must never run side by side), or once every program it
        depends on is RUNNING. ``pull`` (an operator's start): start those first, as
        systemd's Requires + After do."""
        self.stop_order.cancel(instance)
        if instance.state == State.STOPPED and self._retiring_namesake(instance):
            instance.want = Want.UP  # _start_held spawns it
            return
        program = instance.program.name
        if instance.state in (State.STOPPED, State.EXITED, State.FATAL) and (
                program in self.deps.depends_on):
            if pull:
                self._pull(program)
            blocker = self.deps.blocker(program, self._loaded)
            if blocker is not None:
                instance.want = Want.UP
                self.deps.hold(instance, blocker)  # _release starts it
                return
        instance.start()

    def _pull(self, program: str) -> None:
        """Start every program ``program`` depends on, directly or not, not already up."""
        for dependency in self.deps.dependencies_closure(program):
            for member in list(self.deps.members.get(dependency, ())):
                if member.state not in (State.STARTING, State.RUNNING) or (
                        member.want is Want.DOWN):
                    self._start(member)

    def _held(self, instance: Instance) -> bool:
        if instance.want != Want.UP:
            return False
        return instance.state == State.STOPPED or (
            instance.stopped() and self.deps.is_held(instance, instance.program.name))

    # -- the loop -----------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool],
            critical: Callable[[], AbstractContextManager[None]]) -> None:
        """Serve events until ``should_stop()``; each batch runs inside ``critical()``."""
        while not should_stop() and not self.exit_requested:
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
        self.spawner.deliver()  # exits the helper reported while a spawn waited for it
        now = time.monotonic()
        self._fire_timers(now)
        for timer in self.timers:
            if timer.deadline is not None and timer.deadline <= now:
                timer.on_timer(now)
        self._run_calls()
        if any(i.stopped() for i in self.retiring):  # a namesake may start now
            self._start_held()
        self._resolve_pending()

    def _fire_timers(self, now: float) -> None:
        """Every timer due by ``now``: those popped first, so one that a timer sets for
        ``now`` again waits for the next turn instead of looping here."""
        due = []
        while self._timers and self._timers[0][0] <= now:
            due.append(heapq.heappop(self._timers))
        for when, _seq, instance in due:
            if instance.deadline == when:  # else changed or cleared since: stale
                instance.on_timer(now)

    def _timeout(self) -> float | None:
        if self.spawner.pending():
            return 0.0
        nearest = self._timers[0][0] if self._timers else None  # maybe stale: one wakeup
        for waiting in self._pending:
            if waiting.pending is not None and (nearest is None
                                                or waiting.pending.deadline < nearest):
                nearest = waiting.pending.deadline
        for timer in self.timers:  # the few loop-wide timers (event listeners' ticks)
            if timer.deadline is not None and (nearest is None or timer.deadline < nearest):
                nearest = timer.deadline
        if nearest is None:
            return None  # idle: sleep until something happens
        return limits.select_timeout(nearest - time.monotonic())

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def request_exit(self) -> None:
        """Any thread: end :meth:`run` (the daemon then shuts down as on SIGTERM)."""
        self.exit_requested = True
        self._wake()

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
        """The current config's instance whose group leader is ``pid``, or whose group
        ``pid`` belongs to (a helper process)."""
        instance = self._by_pid.get(pid)
        if instance is None:
            try:
                instance = self._by_pid.get(os.getpgid(pid))
            except ProcessLookupError:
                return None
        if instance is None or self.instances.get(instance.name) is not instance:
            return None  # a retiring process's READY=1 starts nothing
        return instance

    # -- calls from other threads -------------------------------------------------------

    def call(self, function: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """Run ``function`` in the loop's thread and return its answer (any thread); its
        exception is raised here. A :class:`Pending` answer is waited for."""
        if self.closed:
            raise ShuttingDown("the supervisor is stopping")
        if threading.current_thread() is self._main:
            outcome = function()
            if isinstance(outcome, Pending):
                raise Failed("cannot wait inside the supervisor's own thread")
            return outcome
        pending = _Call(function)
        with self._calls_gate:
            if not self._taking_calls:
                raise ShuttingDown("the supervisor is stopping")
            self._calls.put(pending)
        self._wake()
        if not pending.finished.wait(timeout_s):
            raise Failed(f"no answer from the supervisor within {timeout_s:g}s")
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _run_calls(self) -> None:
        for _ in range(1000):  # bounded per iteration; the wakeup byte brings us back
            try:
                pending = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = pending.function()
            except (SupervisorError, ConfigError) as exc:
                pending.error = exc
                pending.finished.set()
                continue
            except Exception as exc:  # a bad request must not kill the loop
                self.log.exception("control command failed")
                pending.error = Failed(f"{type(exc).__name__}: {exc}")
                pending.finished.set()
                continue
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
                try:
                    waiting.result = waiting.pending.answer(done)
                except (SupervisorError, ConfigError) as exc:
                    waiting.error = exc
                waiting.finished.set()
            else:
                still.append(waiting)
        self._pending = still

    # -- names (loop thread) ------------------------------------------------------------

    def select(self, names: Iterable[str]) -> list[Instance]:
        """The instances ``names`` address, each once, in start order; NoSuchName for the
        first name that addresses nothing known."""
        chosen: dict[str, Instance] = {}
        for name in names:
            for instance in self._select_one(name):
                chosen.setdefault(instance.name, instance)
        order = {name: index for index, name in enumerate(self.instances)}
        return sorted(chosen.values(), key=lambda i: order.get(i.name, len(order)))

    def knows(self, name: str) -> bool:
        try:
            self._select_one(name)
        except NoSuchName:
            return False
        return True

    def _select_one(self, name: str) -> list[Instance]:
        config = self.config
        if name in ("*", "all"):
            return list(self.instances.values())
        if name in self.instances:
            return [self.instances[name]]
        if config is not None and name in config.programs:
            return self._of_program(name)  # maybe none: a program scaled to zero
        group, sep, member = name.partition(":")
        if config is None or group not in config.all_groups:
            raise NoSuchName(name)
        in_group = self._group_instances(group)
        if not sep or member in ("", "*"):  # supervisord's "group" and "group:*"
            return in_group
        if member in config.all_groups[group].programs and config.all_groups[group].explicit:
            return self._of_program(member)  # "group:program"
        named = [i for i in in_group if member in (i.spec.process_name, i.name)]
        if not named:
            raise NoSuchName(name)
        return named

    def lookup(self, namespec: str) -> tuple[str, Instance | None]:
        """supervisord's ``_getGroupAndProcess``: ``group`` (or ``group:*``) -> (group,
        None); ``group:name`` or ``name`` (its own group) -> (group, instance)."""
        config = self.config
        group, sep, process = namespec.partition(":")
        if not sep:
            process = namespec
        elif process == "*":
            process = ""
        if config is None or group not in config.all_groups:
            raise NoSuchName(namespec)
        if not process:
            return group, None
        for instance in self._group_instances(group):
            if instance.spec.process_name == process:
                return group, instance
        raise NoSuchName(namespec)

    def group_members(self, group: str) -> list[Instance]:
        if self.config is None or group not in self.config.all_groups:
            raise NoSuchName(group)
        return self._group_instances(group)

    # -- operations (loop thread) -------------------------------------------------------

    def _refuse_if_stopping(self) -> None:
        if self.stopping or self.exit_requested:
            raise ShuttingDown("the supervisor is stopping")

    def start(self, instances: list[Instance], supervisord: bool = False,
              wait: bool = True) -> Pending | list[Result]:
        """Start each instance and answer once each is RUNNING or has failed.

        ``supervisord``: supervisord's ``startProcess`` rules: an instance already starting,
        running or in backoff is ALREADY_STARTED, the command is checked first (NO_FILE,
        NOT_EXECUTABLE), and a failed start is reported at once (SPAWN_ERROR,
        ABNORMAL_TERMINATION). Otherwise daemonkit's: a backing-off instance starts now,
        and the answer waits through the retries for the outcome. Either way, an instance
        that reached RUNNING counts as started even if it exited since (startsecs = 0)."""
        self._refuse_if_stopping()
        marks: dict[str, int] = {}
        immediate: dict[str, Result] = {}
        for instance in instances:
            if supervisord:
                if instance.state in STARTED_STATES:
                    immediate[instance.name] = self._result(instance, Fault.ALREADY_STARTED)
                    continue
                try:
                    resolve_command(instance.spec)
                except SpawnError as exc:
                    immediate[instance.name] = self._result(instance, Fault[exc.kind],
                                                            str(exc))
                    continue
            marks[instance.name] = instance.times_running
            self._start(instance, pull=True)
        waiting = [i for i in instances if i.name in marks]

        def outcome(instance: Instance) -> Fault | None:
            if instance.times_running > marks[instance.name]:
                return Fault.SUCCESS
            if self._held(instance) and self._dependency_failed(instance):
                # supervisorctl knows only the start faults supervisord has
                return Fault.SPAWN_ERROR if supervisord else Fault.FAILED
            if self._held(instance) or instance.lingering_pgid is not None:
                return None
            if instance.state is State.RUNNING:
                return Fault.SUCCESS
            if supervisord:
                if instance.spawnerr:
                    return Fault.SPAWN_ERROR
                if instance.state in (State.STARTING, State.RUNNING):
                    return None
                return Fault.ABNORMAL_TERMINATION
            if instance.state in (State.STARTING, State.BACKOFF, State.STOPPING):
                return None
            return Fault.SPAWN_ERROR if instance.spawn_error else Fault.ABNORMAL_TERMINATION

        held_s = max((old.program.stopwaitsecs + 3.0 for old in self.retiring
                      if old.name in marks), default=0.0)
        wait_s = _start_wait_s(waiting) + held_s + self._dependencies_wait_s(waiting)
        return self._answer(instances, immediate, waiting, outcome, wait, wait_s, "start")

    def _dependencies_wait_s(self, instances: list[Instance]) -> float:
        """How long starting what ``instances`` depend on may take, one after another."""
        programs = {d for i in instances
                    for d in self.deps.dependencies_closure(i.program.name)}
        return sum(_start_wait_s(list(self.deps.members.get(p, ()))) for p in sorted(programs))

    def stop(self, instances: list[Instance], supervisord: bool = False,
             wait: bool = True) -> Pending | list[Result]:
        """Stop each instance; answer once each process group is gone. ``supervisord``: an
        instance that is not starting, running or backing off is NOT_RUNNING."""
        self._refuse_if_stopping()
        immediate: dict[str, Result] = {}
        for instance in instances:
            if supervisord and instance.state not in STARTED_STATES:
                immediate[instance.name] = self._result(instance, Fault.NOT_RUNNING)
        waiting = [i for i in instances if i.name not in immediate]
        self._stop_in_order(waiting)

        def outcome(instance: Instance) -> Fault | None:
            return Fault.SUCCESS if instance.stopped() else None

        links = chain_depth(self.deps.depends_on) if any(
            self.stop_order.deferred(i) for i in waiting) else 1
        wait_s = max((i.program.stopwaitsecs for i in waiting), default=0.0) * links + 3.0
        return self._answer(instances, immediate, waiting, outcome, wait, wait_s, "stop")

    def restart(self, instances: list[Instance]) -> Pending | list[Result]:
        """Stop, then start again (daemonkit's ``restart NAME``), answered like ``start``."""
        self._refuse_if_stopping()
        marks = {i.name: i.times_running for i in instances}
        for instance in instances:
            self.stop_order.cancel(instance)
            instance.stop()
            instance.want = Want.UP
            if instance.stopped():
                self._start(instance, pull=True)

        def outcome(instance: Instance) -> Fault | None:
            if instance.times_running > marks[instance.name]:
                return Fault.SUCCESS
            if self._held(instance) and self._dependency_failed(instance):
                return Fault.FAILED
            if (self._held(instance) or instance.lingering_pgid is not None
                    or instance.state in (State.STARTING, State.BACKOFF, State.STOPPING)):
                return None
            return Fault.SPAWN_ERROR if instance.spawn_error else Fault.ABNORMAL_TERMINATION

        held_s = max((old.program.stopwaitsecs + 3.0 for old in self.retiring
                      if old.name in marks), default=0.0)
        wait_s = (max((i.program.stopwaitsecs for i in instances), default=0.0) + 3.0
                  + _start_wait_s(instances) + held_s)
        return self._answer(instances, {}, instances, outcome, True, wait_s, "restart")

    def _answer(self, instances: list[Instance], immediate: dict[str, Result],  # noqa: PLR0917
                waiting: list[Instance], outcome: Callable[[Instance], Fault | None],
                wait: bool, wait_s: float, verb: str) -> Pending | list[Result]:
        def results(finished: bool) -> list[Result]:
            answer = []
            for instance in instances:
                if instance.name in immediate:
                    answer.append(immediate[instance.name])
                    continue
                code = outcome(instance)
                waiting_for = self.waiting_for(instance)
                if code is None:
                    answer.append(self._result(instance, Fault.FAILED,
                                               waiting_for or f"{verb} not done after "
                                               f"{wait_s:g}s"))
                else:
                    answer.append(self._result(instance, code, waiting_for if code in (
                        Fault.FAILED, Fault.SPAWN_ERROR) else None))
            return answer

        if not wait or not waiting:
            return results(True)
        return Pending(lambda: all(outcome(i) is not None for i in waiting), results,
                       time.monotonic() + wait_s)

    def _result(self, instance: Instance, code: Fault, detail: str | None = None) -> Result:
        if code is Fault.SUCCESS:
            description = "OK"
        else:
            description = code.name if detail is None else f"{code.name}: {detail}"
        return Result(instance.spec.process_name, instance.spec.group, code, description,
                      self._describe(instance))

    def signal(self, instances: list[Instance], signum: int,
               supervisord: bool = False) -> list[Result]:
        """Send ``signum`` to each process (supervisord's ``signalProcess``: the process
        itself, not its group); an instance without a process is NOT_RUNNING."""
        self._refuse_if_stopping()
        results = []
        for instance in instances:
            if instance.state not in SIGNALLABLE_STATES or not instance.signal(signum):
                results.append(self._result(instance, Fault.NOT_RUNNING))
            else:
                results.append(self._result(instance, Fault.SUCCESS))
        return results

    def clear_logs(self, instances: list[Instance]) -> list[Result]:
        results = []
        for instance in instances:
            try:
                instance.clear_logs()
            except OSError as exc:
                results.append(self._result(instance, Fault.FAILED, str(exc)))
            else:
                results.append(self._result(instance, Fault.SUCCESS))
        return results

    def scale(self, program: str, delta: int) -> dict[str, Any]:
        self._refuse_if_stopping()  # (the servers answer during a shutdown)
        if self.config is None or program not in self.config.programs:
            raise NoSuchName(f"no such program: {program}")
        if delta not in (1, -1):  # one instance per request, as the web page offers
            raise Failed(f"delta must be 1 or -1, got {delta}")
        current = self.numprocs.get(program, self.config.programs[program].numprocs)
        target = current + delta
        if target < 0:
            raise Failed(f"{program} has only {current} instances")
        if target > limits.MAX_NUMPROCS:
            raise Failed(f"{program}: {limits.MAX_NUMPROCS} instances is the limit")
        if target > 1 and "%(process_num)" not in self.config.programs[program].name_template(
                target):
            raise Failed(f"{program}: process_name has no %(process_num)s")
        self._resize(program, target)
        return {"ok": True, "program": program, "numprocs": target}

    def stop_budget_s(self) -> float:
        """How long stopping everything may take now: the configuration's waves
        (:meth:`SupervisorConfig.stop_chain_s`), and after them, at worst, every program a
        reload removed that is still stopping (a current program may wait for one, and the
        removed ones for each other)."""
        current = self.config.stop_chain_s() if self.config is not None else 0.0
        return current + sum(i.program.stopwaitsecs for i in self.retiring if not i.stopped())

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "config": self.config.path if self.config else None,
            "programs": [self._describe(i) for i in self.instances.values()],
            "retiring": [i.describe() for i in self.retiring],
            # the process of a removed program or instance (a reload, a scale-down) has no
            # current name to be shown under (a changed one's is shown under its successor's,
            # see _describe): listed until it exits
            "removed": [i.describe() for i in self.retiring
                        if i.name not in self.instances and i.pid is not None],
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
            return {**instance.describe(), "waiting": self.waiting_for(instance)}
        return {**old.describe(), "want": instance.want.value, "retiring": True,
                "waiting": None}

    def shown(self, instance: Instance) -> Instance:
        """The instance whose process runs under this name (see :meth:`_describe`)."""
        if instance.state == State.STOPPED:
            old = self._retiring_namesake(instance)
            if old is not None:
                return old
        return instance

    def reopen_logs(self) -> None:
        everyone = [*self.instances.values(), *self.retiring]
        for instance in everyone:
            instance.reopen_logs()
        self.log.info("reopened the log files of %d instances", len(everyone))

    # -- shutdown -----------------------------------------------------------------------

    def shutdown(self, grace_s: float) -> None:
        """Stop every instance (stopsignal, stopwaitsecs, SIGKILL), reaping as we go; the
        highest priority last, as supervisord stops them, and each dependency only once
        its dependents are gone."""
        self.stopping = True
        self.events.publish(SupervisorStateChanged("STOPPING"))
        self.ticks.want(set())
        live = [*reversed(self.instances.values()), *(i for i in self.retiring if not i.stopped())]
        # event listeners last, as supervisord stops them (priority -1), and once they have
        # been handed what they were sent: they hear every program's STOPPING and STOPPED
        # instead of being signalled in the same instant and losing those events. Except a
        # listener that depends_on a program: like every dependent, it stops before that
        # program, which waits for it
        depends_on = self.deps.depends_on
        listeners = [i for i in live if i.program.kind == "eventlistener"
                     and not depends_on.get(i.program.name)]
        programs = [i for i in live if i not in listeners]
        self._stop_in_order(programs, by_priority=True)
        waiting_listeners = []
        for listener in listeners:
            self.stop_order.cancel(listener)
            if listener.state in LIVE_STATES:
                listener.want = Want.DOWN
                waiting_listeners.append(listener)
            else:
                listener.stop()
        everyone = [*self.instances.values(), *self.retiring]
        deadline = time.monotonic() + grace_s
        programs_gone_at: float | None = None
        killed = False
        for _ in range(100_000):  # bounded; each turn sleeps in select()
            now = time.monotonic()
            if waiting_listeners and all(i.stopped() for i in programs):
                programs_gone_at = programs_gone_at or now
                for listener in list(waiting_listeners):
                    if (self.listeners.drained(listener)
                            or now - programs_gone_at >= config_module.LISTENER_DRAIN_S):
                        waiting_listeners.remove(listener)
                        listener.stop()
            if all(i.stopped() for i in everyone):
                break
            if now >= deadline:
                if killed:
                    self.log.error("children still alive after SIGKILL: %s",
                                   [i.name for i in everyone if not i.stopped()])
                    break
                self.log.warning("shutdown took its whole %.1fs: SIGKILL to %s", grace_s,
                                 ", ".join(i.name for i in everyone if not i.stopped()))
                for instance in self.stop_order.clear():
                    instance.want = Want.DOWN
                for instance in everyone:
                    instance.kill_now()
                killed, deadline = True, now + 2.0
            timeout = self._timeout()  # 0.0 (exits waiting) is a timeout too
            self._dispatch(self.selector.select(limits.select_timeout(
                min(1.0 if timeout is None else timeout, deadline - now))))
        self._resolve_pending()

    def stop_taking_calls(self) -> None:
        """Once :meth:`shutdown` is done no loop turns: a server thread still asking (the
        servers answer until the end of the shutdown, as supervisord's do) is refused at once
        instead of waiting out its timeout, which would hold up the servers' stop."""
        with self._calls_gate:
            self._taking_calls = False
        for _ in range(100_000):  # bounded: no call is queued after the gate shut
            try:
                pending = self._calls.get_nowait()
            except queue.Empty:
                return
            pending.error = ShuttingDown("the supervisor is stopping")
            pending.finished.set()

    def close(self) -> None:
        self.stop_taking_calls()
        self.closed = True  # before the fds go: their numbers may be reused at once
        for name in list(self.sockets):
            self._close_socket(name)
        self.syslog.close()
        self.spawner.close()
        self.selector.close()
        self._notify_sock.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


def _start_wait_s(instances: list[Instance]) -> float:
    """How long a start may take: startsecs (or ready_timeout), the retries' backoff, 5 s."""
    worst = 0.0
    for instance in instances:
        program = instance.program
        first = program.ready_timeout if program.notify else program.startsecs
        retries = sum(min(program.backoff_max, program.backoff_initial * 2 ** n) * 1.1 + first
                      for n in range(min(program.startretries, 8)))
        worst = max(worst, first + retries)
    return min(worst, 600.0) + 5.0


def _create_socket(program: ProgramConfig) -> socket.socket:
    """Bind and listen, as supervisord's SocketManager does (children inherit it as fd 0)."""
    assert program.socket is not None
    spec = program.socket
    address = spec.address
    if address.kind == "tcp":
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        family, kind, proto, _name, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
        except BaseException:
            sock.close()
            raise
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
            if spec.owner is not None:
                os.chown(address.path, spec.owner[0], spec.owner[1])
            if spec.mode is not None:
                os.chmod(address.path, spec.mode)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(address.path)
            raise
    sock.listen(spec.backlog or socket.SOMAXCONN)
    os.set_inheritable(sock.fileno(), False)  # given to each child as fd 0 by Popen only
    return sock


def _needs_restart(config: SupervisorConfig, key: str) -> Any:
    """What of a top-level setting only a restart applies. A server's credentials are read
    per request (``rpc.server``), so new ones apply at a reload and are left out here; only
    whether it asks for any at all (turning that off waits for the restart)."""
    value = getattr(config, key)
    if key == "servers":
        return tuple((dataclasses.replace(server, username=None, password=None),
                      server.username is not None) for server in value)
    return value


def _next_wave_up(instances: list[Instance], waves: dict[str, int]
                  ) -> dict[int, list[Instance]]:
    """Per shutdown wave among ``instances``, the instances of the next higher one."""
    by_wave: dict[int, list[Instance]] = {}
    for instance in instances:
        by_wave.setdefault(waves.get(instance.program.name, 0), []).append(instance)
    levels = sorted(by_wave)
    return {level: by_wave[above] for level, above in itertools.pairwise(levels)}
