"""The spawn helper: programs are its children, with what they asked for, and nothing of
the supervisor's is lost when the helper is gone, wedged, or handed a request too big.

Each test drives a real :class:`Spawner` (its helper a real process) or a real supervisor;
the children are real and are killed by pid at the end.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Sv, check_child_report, child_report_request, kill_all, pid_alive, wait_for

from daemonkit.supervisor import engine as engine_module
from daemonkit.supervisor import spawn as spawn_module
from daemonkit.supervisor import spawner as spawner_module
from daemonkit.supervisor.spawner import Spawner


class Harness:
    """A Spawner with the loop it needs: a selector, and what it reported."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.exits: dict[int, int] = {}
        self.lost: set[int] = set()
        self.pids: set[int] = set()
        self.spawner = Spawner(logging.getLogger("test.spawner"), self._exited,
                               self.lost.update, self._watch, self.selector.unregister)

    def _watch(self, fd: int, callback: Callable[[], None]) -> None:
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def _exited(self, pid: int, status: int) -> None:
        self.exits[pid] = status

    def spawn(self, request: spawn_module.SpawnRequest) -> spawn_module.Child:
        child = self.spawner.spawn(request)
        self.pids.add(child.pid)
        return child

    def turn(self, timeout: float = 0.05) -> None:
        for key, _mask in self.selector.select(0 if self.spawner.pending() else timeout):
            key.data()
        self.spawner.deliver()

    def wait_exit(self, pid: int) -> int:
        for _ in range(400):  # bounded: each turn waits up to 50 ms for the helper
            if pid in self.exits:
                return self.exits[pid]
            self.turn()
        raise AssertionError(f"no exit reported for {pid}")

    def close(self) -> None:
        self.spawner.close()
        kill_all({pid for pid in self.pids if pid not in self.exits})
        for pid in self.pids:  # a child this process made itself (the fallbacks)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.selector.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    try:
        yield made
    finally:
        made.close()


def helper_children(helper_pid: int) -> set[int]:
    return {int(w) for w in Path(f"/proc/{helper_pid}/task/{helper_pid}/children")
            .read_text().split()}


@pytest.mark.parametrize("way", ["posix_spawn", "fork"])
def test_helper_child_gets_what_was_asked(harness: Harness, tmp_path: Path, way: str) -> None:
    request, report, spawned_fds, in_w = child_report_request(tmp_path, way == "fork")
    child = harness.spawn(request)
    for fd in spawned_fds:
        os.close(fd)
    try:
        assert child.helper and child.way == way
        assert harness.spawner.helper_pid is not None
        assert os.getpid() != harness.spawner.helper_pid
        assert child.pid in helper_children(harness.spawner.helper_pid)  # not ours
        check_child_report(report, child.pid, request.cwd or os.getcwd(), unblocked=True,
                           not_ignored=[signal.SIGPIPE, signal.SIGTERM, signal.SIGINT,
                                        signal.SIGHUP])
    finally:
        os.close(in_w)
    os.kill(child.pid, signal.SIGKILL)
    status = harness.wait_exit(child.pid)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL


def test_exit_status_and_spawn_errors_come_back(harness: Harness, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"]}
    # started by a thread that blocks signals: the helper must not keep them blocked
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})
    try:
        child = harness.spawn(spawn_module.SpawnRequest(
            "/bin/sh", ["sh", "-c", "exit 3"], env, cwd=str(tmp_path)))  # the fork way
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    assert harness.spawner.helper_pid is not None
    status = Path(f"/proc/{harness.spawner.helper_pid}/status").read_text()
    assert "SigBlk:\t0000000000000000" in status
    assert os.waitstatus_to_exitcode(harness.wait_exit(child.pid)) == 3  # SIGCHLD came
    child = harness.spawn(spawn_module.SpawnRequest("/bin/sh", ["sh", "-c", "exit 7"], env))
    assert os.waitstatus_to_exitcode(harness.wait_exit(child.pid)) == 7
    with pytest.raises(OSError) as refused:
        harness.spawn(spawn_module.SpawnRequest(str(tmp_path / "missing"), ["missing"], env))
    assert refused.value.errno == 2
    with pytest.raises(OSError) as refused:  # the fork way's error from Popen, in the helper
        harness.spawn(spawn_module.SpawnRequest("/bin/true", ["true"], env,
                                                cwd=str(tmp_path / "no-such-dir")))
    assert refused.value.errno == 2
    assert harness.spawner.sock is not None  # an error is an answer, not a broken helper


def test_a_bad_request_is_an_error_not_a_dead_helper(harness: Harness) -> None:
    """posix_spawn raises ValueError for a NUL byte or an "=" in a variable's name: the
    helper answers it as a spawn error and keeps its running children's statuses."""
    sleeper = harness.spawn(spawn_module.SpawnRequest("/bin/sleep", ["sleep", "600"], {}))
    helper = harness.spawner.helper_pid
    for argv, env in ((["sleep", "6\x0000"], {}), (["sleep", "600"], {"A=B": "c"})):
        with pytest.raises((OSError, ValueError, subprocess.SubprocessError)):
            harness.spawn(spawn_module.SpawnRequest("/bin/sleep", argv, env))
        assert harness.spawner.helper_pid == helper and pid_alive(helper or 0)
    os.kill(sleeper.pid, signal.SIGKILL)
    assert os.waitstatus_to_exitcode(harness.wait_exit(sleeper.pid)) == -signal.SIGKILL


def test_helper_holds_few_fds_while_the_caller_holds_many(harness: Harness) -> None:
    """The point of the helper: its fd table, which each child copies, stays short."""
    held = [os.pipe2(os.O_CLOEXEC) for _ in range(300)]
    try:
        children = [harness.spawn(spawn_module.SpawnRequest(
            "/bin/sleep", ["sleep", "600"], {}, stdout=w, stderr=w)) for _r, w in held[:50]]
        helper = harness.spawner.helper_pid
        assert helper is not None
        assert len(os.listdir(f"/proc/{helper}/fd")) < 12
        assert {c.pid for c in children} <= helper_children(helper)
    finally:
        for r, w in held:
            os.close(r)
            os.close(w)


def test_a_request_too_big_for_the_helper_is_spawned_here(harness: Harness) -> None:
    # (one variable stays below the kernel's 128 KiB per string)
    env = {"PATH": os.environ["PATH"], **{f"BIG{n}": "x" * 60_000 for n in range(3)}}
    assert sum(map(len, env.values())) > spawner_module.spawnhelper.MAX_REQUEST
    child = harness.spawn(spawn_module.SpawnRequest("/bin/sleep", ["sleep", "600"], env))
    assert not child.helper
    wait_for(lambda: Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(b"sleep"),
             10, message="setpriv exec'd sleep")  # its environment, read mid-exec, is cut
    assert Path(f"/proc/{child.pid}/environ").read_bytes().count(b"x" * 1000) > 100
    os.kill(child.pid, signal.SIGKILL)
    os.waitpid(child.pid, 0)
    harness.exits[child.pid] = 0  # reaped here


def test_a_wedged_helper_is_replaced(harness: Harness,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped helper: the spawn waits REPLY_TIMEOUT_S, then the supervisor spawns the
    child itself; the stopped helper is killed and its children handed over as lost."""
    monkeypatch.setattr(spawner_module, "REPLY_TIMEOUT_S", 0.5)
    monkeypatch.setattr(spawner_module, "FIRST_REPLY_TIMEOUT_S", 0.5)
    sleeper = harness.spawn(spawn_module.SpawnRequest("/bin/sleep", ["sleep", "600"], {}))
    helper = harness.spawner.helper_pid
    assert helper is not None and sleeper.helper
    os.kill(helper, signal.SIGSTOP)
    child = harness.spawn(spawn_module.SpawnRequest("/bin/sleep", ["sleep", "600"], {}))
    assert not child.helper and pid_alive(child.pid)
    assert not pid_alive(helper)  # killed and reaped
    harness.turn(0)
    assert harness.lost == {sleeper.pid}
    assert pid_alive(sleeper.pid)  # orphaned, not killed: the supervisor watches it
    again = harness.spawn(spawn_module.SpawnRequest("/bin/sleep", ["sleep", "600"], {}))
    assert again.helper and harness.spawner.helper_pid not in (None, helper)
    os.kill(child.pid, signal.SIGKILL)
    os.waitpid(child.pid, 0)
    harness.exits[child.pid] = 0
    kill_all({sleeper.pid})


def test_a_wedged_helpers_unreported_child_is_killed(harness: Harness,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A child the helper made but never reported (its reply lost in the wedge) would run
    beside the copy the supervisor spawns instead: it is killed, the known ones are not."""
    monkeypatch.setattr(spawner_module, "REPLY_TIMEOUT_S", 0.5)
    known = harness.spawn(spawn_module.SpawnRequest("/bin/sleep", ["sleep", "600"], {}))
    sock, helper = harness.spawner.sock, harness.spawner.helper_pid
    assert sock is not None and helper is not None
    message, _fds = spawner_module._encode(
        spawn_module.SpawnRequest("/bin/sleep", ["sleep", "601"], {}))
    sock.send(message)  # behind the Spawner's back: a child it will never hear of
    assert marshal.loads(sock.recv(4096))[0] == "spawned"  # and its reply, taken away
    stranger = wait_for(lambda: helper_children(helper) - {known.pid}, 10,
                        message="the unreported child")
    (stranger_pid,) = stranger
    harness.pids.add(stranger_pid)
    os.kill(helper, signal.SIGSTOP)
    child = harness.spawn(spawn_module.SpawnRequest("/bin/sleep", ["sleep", "600"], {}))
    assert not child.helper
    wait_for(lambda: not pid_alive(stranger_pid), 10, message="the stranger killed")
    assert pid_alive(known.pid)  # handed over as lost, not killed
    harness.turn(0)
    assert harness.lost == {known.pid}
    os.kill(child.pid, signal.SIGKILL)
    os.waitpid(child.pid, 0)
    harness.exits[child.pid] = 0
    kill_all({known.pid})


def test_the_helper_stops_its_children_when_the_caller_dies(tmp_path: Path) -> None:
    """What PR_SET_PDEATHSIG gave each program: the caller is SIGKILLed, the helper sees
    its socket close and sends every child the death signal it asked for."""
    pidfile = tmp_path / "pids"
    code = ("import logging, os, time\n"
            "from daemonkit.supervisor import spawn, spawner\n"
            "s = spawner.Spawner(logging.getLogger(), lambda *a: None, lambda *a: None,"
            " lambda *a: None, lambda *a: None)\n"
            "kids = [s.spawn(spawn.SpawnRequest('/bin/sleep', ['sleep', '600'], {})).pid"
            " for _ in range(3)]\n"
            f"open({str(pidfile)!r}, 'w').write(' '.join(map(str, kids)) + '\\n')\n"
            "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code])
    kids: list[int] = []
    try:
        text = wait_for(lambda: pidfile.exists() and pidfile.read_text().endswith("\n")
                        and pidfile.read_text(), 20, message="the children's pids")
        kids = [int(w) for w in text.split()]
        assert all(pid_alive(pid) for pid in kids)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not any(pid_alive(pid) for pid in kids), 10,
                 message="children stopped with their supervisor")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        kill_all(set(kids))


def supervisor_children(supervisor: int) -> set[int]:
    return {int(w) for w in Path(f"/proc/{supervisor}/task/{supervisor}/children")
            .read_text().split()}


def is_helper(pid: int) -> bool:
    return b"spawnhelper.py\0" in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_a_small_supervisor_is_one_process(sv: Sv) -> None:
    sv.write("[program:w]\ncommand = sleep 600\nnumprocs = 3\nstartsecs = 0\n")
    sv.cli("start", check=True)
    pids = {p["pid"] for p in sv.status().values()}
    assert supervisor_children(sv.supervisor_pid()) == pids  # no helper below 100 programs
    sv.cli("stop", check=True)


def test_supervisor_survives_its_helper_being_killed(sv: Sv) -> None:
    """The helper starts with the 101st program (HELPER_FROM_PROGRAMS = 100): killed, it
    leaves that program running, watched by pidfd; its respawn gets a new helper."""
    assert engine_module.HELPER_FROM_PROGRAMS == 100
    sv.write("""
        [program:w]
        command = sleep 600
        numprocs = 102
        startsecs = 0
        autorestart = true
        stdout_logfile = NONE
        redirect_stderr = true
        """)
    sv.cli("start", check=True)
    before = {name: p["pid"] for name, p in sv.status().items()}
    supervisor = sv.supervisor_pid()
    helper = next(pid for pid in supervisor_children(supervisor) if is_helper(pid))
    by_helper = helper_children(helper)
    assert by_helper == {before["w:100"], before["w:101"]}
    assert supervisor_children(supervisor) == {helper} | (set(before.values()) - by_helper)
    os.kill(helper, signal.SIGKILL)
    wait_for(lambda: "spawn helper" in sv.log(), 10, message="the helper's end logged")
    assert {name: p["pid"] for name, p in sv.status().items()} == before  # still running
    victim = before["w:100"]
    os.kill(victim, signal.SIGKILL)  # watched by pidfd now: respawned by a new helper
    respawned = wait_for(lambda: (p := sv.status()["w:100"])["state"] == "RUNNING"
                         and p["pid"] not in (None, victim) and p, 10,
                         message="w:100 respawned")
    assert respawned["restarts"] == 1
    new_helper = next(pid for pid in supervisor_children(supervisor) if is_helper(pid))
    assert new_helper != helper and respawned["pid"] in helper_children(new_helper)
    assert sv.status()["w:101"]["pid"] == before["w:101"]
    sv.cli("stop", check=True)
    assert not any(pid_alive(pid) for pid in [*before.values(), respawned["pid"]])
