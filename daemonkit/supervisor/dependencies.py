"""``depends_on``: which programs must be RUNNING before a program starts, and stop order.

Two halves, both kept out of the engine so its event loop stays a loop:

* at load (:func:`resolve`, :func:`find_cycle`, :func:`start_order`, :func:`chain_depth`):
  names of programs or ``[group:x]`` sections become a graph of programs; an unknown name
  or a cycle is refused there, once, so the running supervisor never meets one;
* at run time (:class:`DependencyGraph`): which instances are held back and on what, and
  (:class:`StopOrder`) which stops wait for their dependents to be gone.

Every run-time method costs what the program's own dependencies or dependents cost, never a
walk over every instance: with 2,000 programs a respawn must not pay for the other 1,999.
The supervisor's readiness is the state machine's: a ``notify = true`` program is RUNNING
only once it said ``READY=1``, so "RUNNING" is all a dependent waits for.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

from .states import State


class DependencyError(ValueError):
    """A ``depends_on`` that cannot be: an unknown name or a cycle (one line)."""

    def __init__(self, section: str, message: str) -> None:
        super().__init__(message)
        self.section = section  # whose depends_on to blame: "program:web" or "group:app"


# -- at load -----------------------------------------------------------------------------------


def resolve(own: Mapping[str, tuple[str, ...]], of_group: Mapping[str, tuple[str, ...]],
            members: Mapping[str, tuple[str, ...]], programs: Iterable[str],
            group_of: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Program -> the programs it depends on (sorted, no repeats).

    ``own``: each program's ``depends_on`` names; ``of_group``: each ``[group:x]``'s, which
    every member inherits; ``members``: ``[group:x]`` -> its programs (a name that is a
    program means that program, else a group means all its members); ``group_of``: a
    program's ``[group:x]``, if any."""
    known = set(programs)

    def expanded(names: tuple[str, ...], section: str) -> set[str]:
        found: set[str] = set()
        for name in names:
            if name in known:
                found.add(name)
            elif name in members:
                found.update(members[name])
            else:
                raise DependencyError(section, f"no program or group named {name!r}")
        return found

    graph: dict[str, tuple[str, ...]] = {}
    for program in sorted(known):
        needed = expanded(own.get(program, ()), f"program:{program}")
        group = group_of.get(program)
        if group is not None and of_group.get(group):
            needed |= expanded(of_group[group], f"group:{group}")
        if needed:
            graph[program] = tuple(sorted(needed))
    return graph


def find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts (``[a, b, a]``), or None.

    Iterative (a chain of thousands of programs must not hit the recursion limit) and
    deterministic (the same file always names the same cycle)."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        todo: list[Iterator[str]] = [iter(graph.get(root, ()))]
        while todo:
            step = next(todo[-1], None)
            if step is None:
                todo.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if step in on_path:
                return [*path[path.index(step):], step]
            if step in done:
                continue
            path.append(step)
            on_path.add(step)
            todo.append(iter(graph.get(step, ())))
    return None


def start_order(programs: Iterable[str], graph: Mapping[str, tuple[str, ...]],
                key: Callable[[str], tuple[object, ...]]) -> list[str]:
    """Dependencies before their dependents, otherwise (and between ties) by ``key``.

    Without any ``depends_on`` this is exactly ``sorted(programs, key=key)``: supervisord's
    priority order. Names outside ``programs`` (a dependency not loaded) are skipped; a
    cycle (impossible after :func:`find_cycle`) leaves its members in key order at the end."""
    names = list(programs)
    present = set(names)
    blocking = {p: sum(1 for d in graph.get(p, ()) if d in present) for p in names}
    dependents: dict[str, list[str]] = {}
    for program in names:
        for dependency in graph.get(program, ()):
            if dependency in present:
                dependents.setdefault(dependency, []).append(program)
    ready = [(key(p), p) for p in names if not blocking[p]]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _key, program = heapq.heappop(ready)
        order.append(program)
        for dependent in dependents.get(program, ()):
            blocking[dependent] -= 1
            if not blocking[dependent]:
                heapq.heappush(ready, (key(dependent), dependent))
    if len(order) < len(names):
        placed = set(order)
        order += sorted((p for p in names if p not in placed), key=key)
    return order


def stop_waves(order: Sequence[str], graph: Mapping[str, tuple[str, ...]],
               priority: Callable[[str], int]) -> dict[str, int]:
    """Program -> its shutdown wave: shutdown stops the highest wave first, and each wave
    only once the one above it is gone.

    A program's wave is above those of its dependencies and of every program of a lower
    priority placed before it in ``order`` (the start order). Without depends_on the waves
    are supervisord's priority levels. Where depends_on and priority disagree (an app at 100
    that depends_on a cache at 200, a db at 150 between them), waiting level by level on
    both would go round in a circle (the app for the db, the db for the cache, the cache for
    the app) until the grace ran out and everything got SIGKILL; the start order has already
    settled each such disagreement for depends_on, and following it cannot loop: every wait
    points to a program started after the waiter. Names of ``graph`` missing from ``order``
    are ignored."""
    levels = sorted({priority(p) for p in order})
    rank = {level: index for index, level in enumerate(levels)}
    # highest wave so far among programs of the first i priority ranks: a Fenwick tree of
    # prefix maxima, so that 2,000 programs of 2,000 priorities are not 4 million steps
    highest = [-1] * (len(levels) + 1)
    waves: dict[str, int] = {}
    for program in order:
        level = rank[priority(program)]
        wave = -1
        index = level  # the ranks below this program's, 1-based in the tree
        while index > 0:
            wave = max(wave, highest[index])
            index -= index & -index
        for dependency in graph.get(program, ()):
            wave = max(wave, waves.get(dependency, -1))
        wave += 1
        waves[program] = wave
        index = level + 1
        while index <= len(levels):
            highest[index] = max(highest[index], wave)
            index += index & -index
    return waves


def chain_depth(graph: Mapping[str, tuple[str, ...]]) -> int:
    """Programs on the longest dependency chain (1 without depends_on): how many
    stopwaitsecs a shutdown may need back to back. A cycle is cut, not followed."""
    depth: dict[str, int] = {}
    for root in graph:
        stack = [root]
        visiting: set[str] = set()
        for _ in range(4 * len(graph) + 4):  # bounded: each program is pushed at most twice
            if not stack:
                break
            program = stack[-1]
            if program in depth:
                stack.pop()
                continue
            visiting.add(program)
            pending = [d for d in graph.get(program, ()) if d not in depth and d not in visiting]
            if pending:
                stack.extend(pending)
                continue
            depth[program] = 1 + max((depth.get(d, 0) for d in graph.get(program, ())),
                                     default=0)
            stack.pop()
    return max(depth.values(), default=1)


# -- at run time -------------------------------------------------------------------------------


class Member(Hashable, Protocol):
    """What the graph needs to know of an instance."""

    @property
    def state(self) -> State: ...


M = TypeVar("M", bound=Member)


class DependencyGraph(Generic[M]):
    """The running config's dependencies: who waits on whom, and who is RUNNING.

    ``members`` of each depended-on program and how many of them are RUNNING are kept up to
    date from state changes (:meth:`observe`), so "is db up?" is one comparison."""

    def __init__(self) -> None:
        self.depends_on: dict[str, tuple[str, ...]] = {}
        self.dependents: dict[str, set[str]] = {}
        self.members: dict[str, set[M]] = {}  # only programs someone depends on
        self.running: dict[str, int] = {}
        self.waiting: dict[str, set[M]] = {}  # dependency -> instances held on it

    def rebuild(self, graph: Mapping[str, tuple[str, ...]],
                instances: Iterable[tuple[str, M]]) -> list[M]:
        """A new config: the graph anew. Returns the instances held so far (the caller
        checks each again: a reload may have removed or satisfied what they waited on)."""
        held = [m for waiters in self.waiting.values() for m in waiters]
        self.depends_on = dict(graph)
        self.dependents = {}
        for program, needed in self.depends_on.items():
            for dependency in needed:
                self.dependents.setdefault(dependency, set()).add(program)
        self.members, self.running, self.waiting = {}, {}, {}
        for program, member in instances:
            if program in self.dependents:
                self.members.setdefault(program, set()).add(member)
                if member.state is State.RUNNING:
                    self.running[program] = self.running.get(program, 0) + 1
        return held

    def observe(self, program: str, member: M, old: State, new: State) -> bool:
        """A state change; True if ``program`` just became fully RUNNING."""
        members = self.members.get(program)
        if members is None or member not in members:
            return False
        if old is State.RUNNING and new is not State.RUNNING:
            self.running[program] -= 1
        elif new is State.RUNNING and old is not State.RUNNING:
            self.running[program] = self.running.get(program, 0) + 1
            return self.up(program)
        return False

    def forget(self, program: str, member: M) -> None:
        """An instance left the running config (retired, scaled away)."""
        members = self.members.get(program)
        if members is not None and member in members:
            members.discard(member)
            if member.state is State.RUNNING:
                self.running[program] -= 1

    def up(self, program: str) -> bool:
        """Every instance of ``program`` is RUNNING (a program scaled to 0: vacuously)."""
        if program not in self.dependents:
            return True
        return self.running.get(program, 0) >= len(self.members.get(program, ()))

    def blocker(self, program: str, loaded: Callable[[str], bool]) -> str | None:
        """The first dependency of ``program`` that is not up (or not loaded), or None."""
        for dependency in self.depends_on.get(program, ()):
            if not loaded(dependency) or not self.up(dependency):
                return dependency
        return None

    def hold(self, member: M, dependency: str) -> None:
        self.waiting.setdefault(dependency, set()).add(member)

    def release(self, dependency: str) -> list[M]:
        """The instances held on ``dependency`` (each must be checked again)."""
        return list(self.waiting.pop(dependency, ()))

    def is_held(self, member: M, program: str) -> bool:
        return any(member in self.waiting.get(d, ()) for d in self.depends_on.get(program, ()))

    def waiting_text(self, program: str, loaded: Callable[[str], bool],
                     shown_state: Callable[[str], str]) -> str | None:
        """``waiting for db (FATAL), cache (STARTING)``: what status says of a held instance."""
        parts = []
        for dependency in self.depends_on.get(program, ()):
            if not loaded(dependency):
                parts.append(f"{dependency} (not added)")
            elif not self.up(dependency):
                parts.append(f"{dependency} ({shown_state(dependency)})")
        return f"waiting for {', '.join(parts)}" if parts else None

    def closure(self, program: str, edges: Mapping[str, Iterable[str]]) -> list[str]:
        """Every program reachable from ``program`` along ``edges`` (not itself)."""
        seen: set[str] = set()
        stack = list(edges.get(program, ()))
        while stack:
            name = stack.pop()
            if name not in seen and name != program:
                seen.add(name)
                stack.extend(edges.get(name, ()))
        return sorted(seen)

    def dependencies_closure(self, program: str) -> list[str]:
        return self.closure(program, self.depends_on)

    def dependents_closure(self, program: str) -> list[str]:
        return self.closure(program, self.dependents)


class StopOrder(Generic[M]):
    """Stops that wait for dependents: ``db`` is signalled once ``web`` is gone.

    ``waits[db]`` holds the dependents db still waits for; ``blocks[web]`` the stops web
    holds up. A stop that finishes (:meth:`stopped`) releases only what it held up."""

    def __init__(self) -> None:
        self.waits: dict[M, set[M]] = {}
        self.blocks: dict[M, set[M]] = {}

    def defer(self, member: M, until_gone: Iterable[M]) -> bool:
        """Hold ``member``'s stop until each of ``until_gone`` is stopped; False: none to
        wait for, stop now."""
        pending = {m for m in until_gone if m is not member}
        if not pending:
            return False
        self.waits[member] = pending
        for dependent in pending:
            self.blocks.setdefault(dependent, set()).add(member)
        return True

    def deferred(self, member: M) -> bool:
        return member in self.waits

    def cancel(self, member: M) -> None:
        """A start of ``member`` wins over its deferred stop."""
        for dependent in self.waits.pop(member, ()):
            blocked = self.blocks.get(dependent)
            if blocked is not None:
                blocked.discard(member)
                if not blocked:
                    del self.blocks[dependent]

    def stopped(self, member: M) -> list[M]:
        """``member`` is gone: the stops that now wait for nothing more."""
        ready = []
        for waiter in self.blocks.pop(member, ()):
            pending = self.waits.get(waiter)
            if pending is None:
                continue
            pending.discard(member)
            if not pending:
                del self.waits[waiter]
                ready.append(waiter)
        return ready

    def clear(self) -> list[M]:
        """Everything still deferred (shutdown's last resort: stop them all now)."""
        deferred = list(self.waits)
        self.waits.clear()
        self.blocks.clear()
        return deferred

