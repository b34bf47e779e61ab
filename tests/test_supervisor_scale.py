"""Many programs: what one event costs must not grow with how many programs there are.

No timing here (the machine is shared): the engine runs in this process with 300 real
children, and the test counts what a respawn touches. Before the timer heap, every loop
turn read every instance's deadline (twice); now a respawn reads the deadlines of the
instance that changed and of nothing else. The spawn module is tested on its own: the child
``posix_spawn`` makes gets exactly the fds, environment, argv[0], session and signal state
that the fork way gave it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import check_child_report, child_report_request, kill_all, pid_alive, wait_for

from daemonkit.supervisor import config as config_module
from daemonkit.supervisor import spawn as spawn_module
from daemonkit.supervisor.engine import Engine
from daemonkit.supervisor.process import Instance
from daemonkit.supervisor.states import State

PROGRAMS = 300
STUBBORN = 7  # the program whose stop ends in SIGKILL after stopwaitsecs
STOPWAIT = {n: 1 if n == STUBBORN else 10 for n in range(PROGRAMS)}


@pytest.fixture
def enough_fds() -> Iterator[None]:
    """300 children hold ~900 fds in the engine: more than a 1024 soft limit leaves."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def engine(tmp_path: Path, enough_fds: None) -> Iterator[Engine]:
    ini = tmp_path / "sv.ini"
    ini.write_text(f"[supervisord]\nchildlogdir = {tmp_path}\n\n" + "".join(
        f"[program:p{n}]\ncommand = sleep 600\nstartsecs = 0\nautorestart = true\n"
        f"stdout_logfile = NONE\nredirect_stderr = true\nstopwaitsecs = {STOPWAIT[n]}\n\n"
        for n in range(PROGRAMS)).replace(
            f"[program:p{STUBBORN}]\ncommand = sleep 600",
            f"[program:p{STUBBORN}]\ncommand = sh -c \"trap '' TERM; exec sleep 600\""))
    log = logging.getLogger("test.supervisor.scale")
    log.setLevel(logging.WARNING)
    started = Engine(log)
    pids: set[int] = set()
    try:
        started.load(config_module.load(str(ini)))
        yield started
    finally:
        pids = {i.pid for i in started.instances.values() if i.pid is not None}
        started.shutdown(5.0)
        started.close()
        kill_all(pids)  # only if shutdown left one behind


def turn(engine: Engine) -> None:
    engine._dispatch(engine.selector.select(engine._timeout()))


def test_respawn_touches_only_the_instance_that_exited(engine: Engine,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    instances = list(engine.instances.values())
    assert len(instances) == PROGRAMS
    assert all(i.state is State.RUNNING and pid_alive(i.pid or 0) for i in instances)
    if spawn_module.fast_way_available():  # util-linux setpriv here: no fork per child
        assert {i.child.way for i in instances if i.child} == {"posix_spawn"}

    reads: list[str] = []
    deadline = Instance.deadline
    assert isinstance(deadline, property) and deadline.fget is not None
    getter = deadline.fget

    def counted(instance: Instance) -> float | None:
        reads.append(instance.name)
        return getter(instance)

    monkeypatch.setattr(Instance, "deadline", property(counted, deadline.fset))
    victim = instances[PROGRAMS // 2]
    old_pid = victim.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    for _ in range(1000):  # bounded: each turn sleeps in select() until an event
        if victim.pid not in (None, old_pid) and victim.state is State.RUNNING:
            break
        turn(engine)
    new_pid = victim.pid
    assert new_pid not in (None, old_pid) and pid_alive(new_pid)
    assert victim.restarts == 1
    assert set(reads) <= {victim.name}, f"a respawn read others' deadlines: {set(reads)}"
    assert engine._instance_of_pid(new_pid) is victim
    assert engine._instance_of_pid(old_pid) is None
    assert all(i.restarts == 0 and i.state is State.RUNNING
               for i in instances if i is not victim)


def test_stop_timers_fire_from_the_heap(engine: Engine) -> None:
    """stopwaitsecs still ends in SIGKILL for a child that ignores the stop signal."""
    stubborn = engine.instances[f"p{STUBBORN}"]
    assert stubborn.pid is not None
    wait_for(lambda: Path(f"/proc/{stubborn.pid}/cmdline").read_bytes().startswith(b"sleep"),
             10, message="sh exec'd sleep with SIGTERM ignored")
    stubborn.stop()
    for _ in range(1000):
        if stubborn.stopped():
            break
        turn(engine)
    assert stubborn.stopped() and stubborn.kill_sent
    assert stubborn.exit_status == -signal.SIGKILL


@pytest.mark.parametrize("way", ["posix_spawn", "fork"])
def test_spawned_child_gets_what_was_asked(tmp_path: Path, way: str) -> None:
    if way == "posix_spawn" and not spawn_module.fast_way_available():
        pytest.skip("no util-linux setpriv with --pdeathsig here")
    request, report, spawned_fds, in_w = child_report_request(tmp_path, way == "fork")
    child = spawn_module.spawn(request)
    for fd in spawned_fds:
        os.close(fd)
    try:
        assert child.way == way
        check_child_report(report, child.pid, request.cwd or os.getcwd(),
                           not_ignored=[signal.SIGPIPE], unblocked=way == "posix_spawn")
    finally:
        os.close(in_w)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        _, status = os.waitpid(child.pid, 0)
        child.reaped(os.waitstatus_to_exitcode(status))
    assert child.popen is None


def test_pdeathsig_reaches_a_posix_spawned_child(tmp_path: Path) -> None:
    """The parent dies by SIGKILL: its posix_spawn child gets SIGTERM (setpriv set it)."""
    if not spawn_module.fast_way_available():
        pytest.skip("no util-linux setpriv with --pdeathsig here")
    pidfile = tmp_path / "child.pid"
    code = ("import os, sys, time\n"
            "from daemonkit.supervisor import spawn\n"
            "child = spawn.spawn(spawn.SpawnRequest('/bin/sleep', ['sleep', '600'],"
            " dict(os.environ)))\n"
            "assert child.way == 'posix_spawn', child.way\n"
            f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
            "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code])
    child_pid = 0
    try:
        child_pid = wait_for(lambda: int(pidfile.read_text() or 0) if pidfile.exists()
                             else 0, 20, message="the child's pid")
        # setpriv sets PR_SET_PDEATHSIG before it execs sleep: wait for that exec
        wait_for(lambda: Path(f"/proc/{child_pid}/cmdline").read_bytes().startswith(b"sleep"),
                 10, message="sleep exec'd")
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not pid_alive(child_pid), 10, message="child died with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if child_pid:
            kill_all({child_pid})


def test_settings_of_a_large_file_read_few_lines(tmp_path: Path) -> None:
    """The client's settings come from a filtered parse: the same answers as the full
    load, with continuation lines, comments, [DEFAULT] and an include in the way."""
    (tmp_path / "more.conf").write_text(
        "[program:late]\ncommand = sleep 600\nstopwaitsecs = 40 ; the slowest\n")
    ini = tmp_path / "sv.ini"
    ini.write_text(
        "[supervisord]\npidfile = %(here)s/sv.pid\nlogfile = sv.log\nloglevel = debug\n\n"
        "[include]\nfiles = more.conf\n\n"
        "[DEFAULT]\nstopwaitsecs = 12\n\n"
        + "".join(f"[program:p{n}]\ncommand = sh -c\n    \"sleep 600\"\n"
                  f"environment = A=\"stopwaitsecs = 99\"\n# stopwaitsecs = 98\n\n"
                  for n in range(PROGRAMS))
        + "[program:slow]\ncommand = sleep 600\nStopWaitSecs =\n    50\n")
    full = config_module.load(str(ini))
    settings = config_module.read_settings(str(ini))
    assert (settings.pidfile, settings.logfile, settings.log_level) == (
        full.pidfile, full.logfile, full.log_level) == (
        str(tmp_path / "sv.pid"), str(tmp_path / "sv.log"), "DEBUG")
    assert settings.stop_timeout == full.stop_timeout() == 55.0  # [program:slow], folded
    top_only = config_module.read_settings(str(ini), with_programs=False)
    assert (top_only.pidfile, top_only.logfile) == (settings.pidfile, settings.logfile)
