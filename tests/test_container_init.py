"""As PID 1 of a PID namespace (a container), `run` reaps orphans and forwards SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest
from helpers import Service, Sv, wait_for

#: PID 1 of a container that waits for its one child and nothing else, as ``sh -c`` or any
#: entrypoint script does: orphans that are reparented to it stay zombies for good
DUMB_INIT = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_pid1_reaps_orphans_and_forwards_sigterm(probe: Service) -> None:
    # --kill-child: if the test kills unshare, the namespace (its init and service) goes too
    command = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
               *probe.argv("run", "--make-orphan")]
    outer = subprocess.Popen(command, cwd=probe.workdir)
    try:
        probe.wait_event("run")
        namespace_init = psutil.Process(outer.pid).children()[0]  # PID 1 inside
        assert namespace_init.cmdline()[0] == "probe: init"

        def orphan_reaped() -> bool:
            descendants = namespace_init.children(recursive=True)
            zombies = [p for p in descendants if p.status() == psutil.STATUS_ZOMBIE]
            sleepers = [p for p in descendants if p.name() == "sleep"]
            return not zombies and not sleepers

        wait_for(orphan_reaped, timeout=10, message="the orphan `sleep` exited and was reaped")
        namespace_init.send_signal(signal.SIGTERM)
        assert outer.wait(timeout=10) == 0, "SIGTERM forwarded, service exited 0"
        assert probe.events_seen()[-1] == "shutdown"
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait()


@contextmanager
def supervisor_under_dumb_init(sv: Sv, program: str, *, own_proc: bool
                               ) -> Iterator[psutil.Process]:
    """``sv``'s supervisor (``run``) in a PID namespace of its own under :data:`DUMB_INIT`,
    with a /proc of the namespace's or the host's; yields the namespace's PID 1 once
    ``program`` runs."""
    command = ["unshare", "--pid", "--fork", "--kill-child",
               *(["--mount-proc"] if own_proc else []), "/usr/bin/python3", "-c", DUMB_INIT,
               sys.executable, "-m", "daemonkit", "supervise", "-c", str(sv.ini), "run"]
    outer = subprocess.Popen(command, cwd=sv.dir, env=sv.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sv.cli("status", program).returncode == 0, timeout=20,
                 message=f"{program} RUNNING")
        yield psutil.Process(outer.pid).children()[0]
    finally:
        outer.kill()  # --kill-child: the namespace's init and everything in it go too
        outer.wait()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_supervisor_under_a_pid1_that_never_reaps(sv: Sv) -> None:
    """A program whose group outlives its leader: the helpers' stopped orphans used to go to
    PID 1, and under a PID 1 that never reaps them they stayed zombies, which still count as
    the group: the stop never finished. Zombies no longer count as the group."""
    sv.write("""
        [program:forky]
        command = sh -c 'sleep 1000 & sleep 1000'
        startsecs = 0
        stopwaitsecs = 3
        """)
    with supervisor_under_dumb_init(sv, "forky", own_proc=True) as namespace_init:
        stopped = sv.cli("stop", "forky", timeout=30)
        assert stopped.returncode == 0, (stopped.stdout, stopped.stderr, sv.log())
        assert sv.status()["forky"]["state"] == "STOPPED"
        assert "sending SIGKILL" not in sv.log()  # done when the group was, not at the limit
        # the scenario is real: the two sleeps are PID 1's zombies, and will stay so
        zombies = [p for p in namespace_init.children() if p.status() == psutil.STATUS_ZOMBIE]
        assert [p.name() for p in zombies] == ["sleep", "sleep"]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_supervisor_in_a_pid_namespace_that_shows_the_hosts_proc(sv: Sv) -> None:
    """A container without a /proc of its own sees the host's, where the supervisor's pids
    name other processes: a member that ignores SIGTERM must still hold the stop until it
    is killed, not be missed in the wrong /proc."""
    sv.write("""
        [program:stubborn]
        command = sh -c '(trap "" TERM; exec sleep 1000) & sleep 1000'
        startsecs = 0
        stopwaitsecs = 1
        """)
    with supervisor_under_dumb_init(sv, "stubborn", own_proc=False) as namespace_init:
        def sleeps() -> list[psutil.Process] | None:
            found = [p for p in namespace_init.children(recursive=True) if p.name() == "sleep"]
            return found if len(found) == 2 else None

        sleepers = wait_for(sleeps, timeout=10, message="both sleeps")
        stopped = sv.cli("stop", "stubborn", timeout=30)
        assert stopped.returncode == 0, (stopped.stdout, stopped.stderr, sv.log())
        assert "sending SIGKILL" in sv.log()  # the stubborn sleep was waited for
        running = [p.pid for p in sleepers
                   if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert running == []
