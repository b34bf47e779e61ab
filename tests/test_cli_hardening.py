"""What a careless user or a hostile one does to the CLI, and what must not happen then.

Each test comes from a black-box trial of the CLI (see the issue notes).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import Service, WorldRuntime, pid_alive, wait_for


def test_stop_and_start_never_touch_a_file_that_is_not_a_pidfile(probe: Service,
                                                                  tmp_path: Path) -> None:
    precious = tmp_path / "important.conf"
    precious.write_text("db_password=secret\n")
    probe.pidfile = precious
    stopped = probe.cli("stop")
    assert stopped.returncode == 1
    assert "does not look like a pidfile" in stopped.stderr
    started = probe.cli("start")
    assert started.returncode == 1
    assert precious.read_text() == "db_password=secret\n"
    assert not probe.events.exists(), "nothing was started"


def test_a_device_node_is_refused_without_being_opened(probe: Service, tmp_path: Path) -> None:
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    probe.pidfile = node
    for action in ("stop", "start", "status"):
        result = probe.cli(action)
        assert result.returncode != 0, action
        assert "not a regular file" in result.stderr + result.stdout
    assert stat.S_ISCHR(node.lstat().st_mode)


def test_stop_refuses_a_pid_that_does_not_hold_the_pidfile(probe: Service) -> None:
    """Someone who can write the pidfile's directory names an unrelated process in it."""
    victim = subprocess.Popen(["sleep", "300"])
    code = textwrap.dedent(f"""
        import os, sys
        from daemonkit.filelock import try_write_lock
        fd = os.open({str(probe.pidfile)!r}, os.O_RDWR | os.O_CREAT, 0o644)
        assert try_write_lock(fd)
        os.write(fd, b"{victim.pid}\\n")
        print("locked", flush=True)
        sys.stdin.read()
    """)
    impostor = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert impostor.stdout is not None and impostor.stdout.readline().strip() == "locked"
        stopped = probe.cli("stop", "--stop-timeout", "1")
        assert stopped.returncode == 1
        assert "refusing to signal" in stopped.stderr
        assert pid_alive(victim.pid), "the unrelated process must survive"
    finally:
        for child in (impostor, victim):
            child.kill()
            child.wait()


def test_concurrent_starts_of_a_failing_service_all_fail(probe: Service) -> None:
    """Nobody says "already running" about a daemon that never became ready."""
    probe.extra = ["--setup-fail", "port 47001 is taken", "--setup-sleep", "0.2"]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: probe.cli("start"), range(6)))
    assert [r.returncode for r in results] == [1] * 6, [r.stdout for r in results]
    assert all("port 47001 is taken" in r.stderr for r in results)
    assert probe.cli("status").returncode in (1, 3)


def test_second_start_returns_only_once_the_first_is_ready(probe: Service) -> None:
    first = subprocess.Popen(probe.argv("start", "--setup-sleep", "1.0"),
                             stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(e.startswith("setup uid") for e in probe.events_seen()))
        during = probe.cli("status")
        assert during.returncode == 0
        assert "is starting" in during.stdout
        second = probe.cli("start")
        assert second.returncode == 0
        assert "setup done" in probe.events_seen(), "returned before the daemon was ready"
        assert "already running" in second.stdout
    finally:
        first.communicate(timeout=30)


def test_start_during_a_slow_shutdown_starts_a_new_daemon(probe: Service) -> None:
    assert probe.cli("start", "--shutdown-seconds", "1.0").returncode == 0
    old_pid = probe.pid()
    assert old_pid is not None
    os.kill(old_pid, signal.SIGTERM)
    probe.wait_event("shutdown begin")
    status = probe.cli("status")
    assert "is stopping" in status.stdout
    reload = probe.cli("reload")
    assert reload.returncode == 1 and "stopping" in reload.stderr
    started = probe.cli("start")
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    assert probe.pid() not in (None, old_pid)
    events = probe.events_seen()
    assert "reload begin" not in events, "no reload() interleaved with shutdown()"


def test_sighup_during_setup_waits_for_setup(probe: Service) -> None:
    starting = subprocess.Popen(probe.argv("start", "--setup-sleep", "0.5"),
                                stdout=subprocess.PIPE, text=True)
    try:
        events = wait_for(lambda: [e for e in probe.events_seen() if e.startswith("setup uid")])
        pid = int(events[0].split("pid=")[1])
        os.kill(pid, signal.SIGHUP)
    finally:
        starting.communicate(timeout=30)
    probe.wait_event("reload done 1")
    events = probe.events_seen()
    assert events.index("setup done") < events.index("reload begin")


def test_failed_start_leaves_no_control_socket_and_no_stray_traceback(probe: Service) -> None:
    assert probe.cli("start", "--setup-fail", "nope").returncode == 1
    wait_for(lambda: not probe.pidfile.with_suffix(".ctl").exists(),
             message="control socket removed")
    assert "StopDaemon" not in probe.log_text()


def test_reload_raising_system_exit_keeps_the_daemon(probe: Service) -> None:
    assert probe.cli("start", "--reload-exit").returncode == 0
    pid = probe.pid()
    result = probe.cli("reload")
    assert result.returncode == 1
    assert "SystemExit: 3" in result.stderr
    assert pid is not None and pid_alive(pid)
    assert probe.cli("status").returncode == 0


def test_reload_stuck_behind_a_critical_block_is_not_called_failed(probe: Service) -> None:
    assert probe.cli("start", "--critical-seconds", "3").returncode == 0
    probe.wait_event("begin 0")
    result = probe.cli("reload", "--start-timeout", "0.5")
    assert result.returncode == 1
    assert "not confirmed" in result.stderr and "will run when the block ends" in result.stderr
    probe.wait_event("reload done 1")


def test_service_cannot_overwrite_core_status_keys(probe: Service) -> None:
    assert probe.cli("start", "--status-override").returncode == 0
    report = json.loads(probe.cli("status", "--json").stdout)
    assert report["running"] is True
    assert report["pid"] == probe.pid()
    assert report["name"] == "probe"
    assert report["state"] == "running"


def test_missing_workdir_and_syslog_socket_are_configuration_errors(probe: Service,
                                                                     tmp_path: Path) -> None:
    workdir = probe.cli("start", "--workdir", str(tmp_path / "nowhere"))
    assert workdir.returncode == 6 and "does not exist" in workdir.stderr
    syslog = probe.cli("--syslog", "start", "--syslog-socket", str(tmp_path / "no.sock"))
    assert syslog.returncode == 6 and "no syslog socket" in syslog.stderr
    assert not probe.events.exists()


def test_failed_log_reopen_keeps_the_daemon(world_runtime: WorldRuntime,
                                            world_tmp: Path) -> None:
    log_dir = world_tmp / "logs"
    log_dir.mkdir(mode=0o755)  # root's: the dropped daemon cannot create a file in it
    (world_tmp / "events.log").touch()
    (world_tmp / "events.log").chmod(0o666)
    command = [world_runtime.python, str(world_runtime.root / "services" / "probe.py"),
               "--pidfile", str(world_tmp / "probe.pid"), "--events",
               str(world_tmp / "events.log"), "--log-file", str(log_dir / "probe.log")]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], capture_output=True, text=True,
                              env=world_runtime.env, timeout=60, check=False)

    assert cli("start", "--user", "nobody").returncode == 0
    pid = int((world_tmp / "probe.pid").read_text())
    try:
        os.rename(log_dir / "probe.log", log_dir / "probe.log.1")
        reopened = cli("reopen-logs")
        assert reopened.returncode == 1
        assert "still writing to the old file" in reopened.stderr
        assert pid_alive(pid)
        assert cli("status").returncode == 0
        assert "cannot reopen" in (log_dir / "probe.log.1").read_text()
    finally:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid))


def test_existing_log_file_keeps_its_owner_after_the_drop(world_runtime: WorldRuntime,
                                                          world_tmp: Path) -> None:
    shared_log = world_tmp / "shared.log"
    shared_log.write_text("")
    (world_tmp / "events.log").touch()
    (world_tmp / "events.log").chmod(0o666)
    result = subprocess.run(
        [world_runtime.python, str(world_runtime.root / "services" / "probe.py"), "start",
         "--pidfile", str(world_tmp / "probe.pid"), "--events", str(world_tmp / "events.log"),
         "--log-file", str(shared_log), "--user", "nobody"],
        capture_output=True, text=True, env=world_runtime.env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    pid = int((world_tmp / "probe.pid").read_text())
    try:
        assert shared_log.stat().st_uid == 0
        wait_for(lambda: "ready" in shared_log.read_text(), message="the daemon still logs")
    finally:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid))


def test_stop_by_the_service_user_succeeds_with_a_warning(world_runtime: WorldRuntime,
                                                          world_tmp: Path) -> None:
    run_dir = world_tmp / "run"
    run_dir.mkdir(mode=0o755)
    (world_tmp / "events.log").touch()
    (world_tmp / "events.log").chmod(0o666)
    base = [world_runtime.python, str(world_runtime.root / "services" / "probe.py"),
            "--pidfile", str(run_dir / "probe.pid"), "--events", str(world_tmp / "events.log")]
    started = subprocess.run([*base, "start", "--user", "nobody"], capture_output=True,
                             text=True, env=world_runtime.env, timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    pid = int((run_dir / "probe.pid").read_text())
    try:
        stopped = subprocess.run(["runuser", "-u", "nobody", "--", *base, "stop"],
                                 capture_output=True, text=True, env=world_runtime.env,
                                 timeout=60, check=False)
        assert stopped.returncode == 0, stopped.stderr
        assert f"probe stopped (pid {pid})" in stopped.stdout
        assert "warning: left" in stopped.stderr
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid))


def test_observing_the_pidfile_never_disturbs_a_start(tmp_path: Path) -> None:
    """status used to probe with a shared flock, which made a concurrent start fail for an
    instant; observe() takes no lock at all."""
    import threading

    from daemonkit import PidFile
    from daemonkit.filelock import try_write_lock

    path = tmp_path / "x.pid"
    path.write_text("")
    done = threading.Event()

    def observe_until_done() -> None:
        while not done.is_set():
            PidFile(path).observe()

    observer = threading.Thread(target=observe_until_done)
    observer.start()
    failures = 0
    try:
        for _ in range(2000):
            fd = os.open(path, os.O_RDWR)
            failures += not try_write_lock(fd)
            os.close(fd)
    finally:
        done.set()
        observer.join()
    assert failures == 0


def test_a_held_lock_is_observed_with_its_verified_pid(tmp_path: Path) -> None:
    from daemonkit import PidFile
    from daemonkit.pidfile import HolderState

    holder = PidFile(tmp_path / "y.pid")
    holder.acquire()
    try:
        seen = PidFile(tmp_path / "y.pid").observe()
        assert (seen.state, seen.pid) == (HolderState.VERIFIED, os.getpid())
    finally:
        holder.release()
    assert PidFile(tmp_path / "y.pid").observe().state is HolderState.NOBODY


def test_stop_deferred_by_a_failing_critical_block_is_not_lost(probe: Service) -> None:
    """A job loop that catches the job's exception and goes on must still stop."""
    assert probe.cli("start", "--critical-seconds", "0.5", "--critical-raises").returncode == 0
    probe.wait_event("begin 0")
    stopped = probe.cli("stop", "--stop-timeout", "5")
    assert "stopped" in stopped.stdout, stopped.stdout  # not "killed after 5s timeout"
    assert probe.events_seen()[-1] == "shutdown"


def test_interrupted_start_leaves_no_daemon(probe: Service) -> None:
    starting = subprocess.Popen(probe.argv("start", "--setup-sleep", "5"),
                                stderr=subprocess.PIPE, text=True)
    events = wait_for(lambda: [e for e in probe.events_seen() if e.startswith("setup uid")])
    daemon_pid = int(events[0].split("pid=")[1])
    starting.send_signal(signal.SIGTERM)  # an init script giving up on `start`
    _, err = starting.communicate(timeout=30)
    assert starting.returncode == 1
    assert "interrupted" in err
    wait_for(lambda: not pid_alive(daemon_pid), message="the orphaned daemon stopped")
    assert probe.cli("status").returncode in (1, 3)


def test_control_socket_hand_over_never_follows_a_symlink(tmp_path: Path) -> None:
    from daemonkit.control import ControlError, ControlServer

    victim = tmp_path / "root-only"
    victim.write_text("secret\n")
    server = ControlServer(str(tmp_path / "svc.ctl"), lambda request: {"ok": True})
    server.bind()
    try:
        os.unlink(tmp_path / "svc.ctl")
        (tmp_path / "svc.ctl").symlink_to(victim)  # what a hostile service user could do
        try:
            server.hand_over(65534, 65534)
            raise AssertionError("hand_over followed a symlink")
        except ControlError:
            pass
        assert victim.stat().st_uid == 0
    finally:
        server.close(unlink=False)


def test_refused_file_does_not_stay_locked(tmp_path: Path) -> None:
    from daemonkit import PidFile, PidfileError

    path = tmp_path / "notes.txt"
    path.write_text("not a pid\n")
    pidfile = PidFile(path)
    for _ in range(2):
        try:
            pidfile.acquire()
            raise AssertionError("acquired a non-pidfile")
        except PidfileError:
            pass
    from daemonkit.filelock import try_write_lock

    fd = os.open(path, os.O_RDWR)
    assert try_write_lock(fd)  # would fail if a refused lock leaked
    os.close(fd)


def test_option_notes_never_show_a_password() -> None:
    from daemonkit.commands import _shown

    assert _shown("postgresql://app:p@ss@db.example:5432/ingest") == (
        "postgresql://app:***@db.example:5432/ingest")
    assert _shown("mysql://app@h/db?password=s3cret&charset=utf8") == (
        "mysql://app@h/db?password=***&charset=utf8")
    assert _shown(["tcp://127.0.0.1:5555", "ipc:///run/x"]) == "tcp://127.0.0.1:5555 ipc:///run/x"
    assert (_shown(None), _shown(True), _shown(False)) == ("(default)", "on", "off")



def test_workers_forked_without_exec_never_hold_the_pidfile(probe: Service) -> None:
    """multiprocessing's fork workers outliving a daemon killed with -9 used to keep its lock
    (status 4, start and stop refused) until someone found and killed them."""
    assert probe.cli("start", "--fork-workers", "2").returncode == 0
    workers = [int(e.split("=")[1]) for e in probe.events_seen() if e.startswith("worker=")]
    assert len(workers) == 2
    probe.started_pids.update(workers)
    daemon = probe.pid()
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not pid_alive(daemon))
    assert all(pid_alive(worker) for worker in workers)  # orphans, still there
    status = probe.cli("status")
    assert status.returncode == 1 and "is not running, but pidfile" in status.stdout
    restarted = probe.cli("start")
    assert restarted.returncode == 0, restarted.stderr


def test_forked_children_get_their_own_signals_and_end_as_themselves(probe: Service) -> None:
    """Children forked without exec inherited the daemon's signal handling: a SIGTERM to a
    worker (multiprocessing's terminate()) stopped the daemon instead, a SIGHUP reloaded it,
    and a child's sys.exit() in setup() failed `start` (and in run(), ran shutdown())."""
    started = probe.cli("start", "--fork-workers", "2", "--fork-exit-in-setup",
                        "--fork-in-run")
    assert started.returncode == 0, started.stderr
    events = probe.wait_event("child status=3")  # a plain Python process's exit status
    assert "helper status=0" in events
    workers = [int(e.split("=")[1]) for e in events if e.startswith("worker=")]
    assert len(workers) == 3  # two from setup(), one forked inside a critical() block
    probe.started_pids.update(workers)
    for worker, signum in zip(workers, (signal.SIGHUP, signal.SIGTERM, signal.SIGTERM),
                              strict=True):
        os.kill(worker, signum)
        wait_for(lambda w=worker: not pid_alive(w), message=f"worker {worker} ends")
    status = json.loads(probe.cli("status", "--json").stdout)
    assert (status["state"], status["reloads"]) == ("running", 0), status
    assert "received SIGTERM" not in probe.log_text()
    assert "shutdown" not in probe.events_seen()  # no child ran the service's shutdown()
    assert probe.cli("stop").returncode == 0
    assert probe.events_seen().count("shutdown") == 1


def test_a_signal_between_fork_and_the_childs_reset_is_the_childs(probe: Service) -> None:
    """A SIGTERM that reached a child between fork() and the runtime's reset of its handlers
    ran the daemon's handler there, which told the daemon (the wakeup pipe they share) to
    stop. The daemon's signals are now blocked across that window and delivered after the
    reset: the child dies of it, as a fresh process would, and the daemon runs on."""
    assert probe.cli("start", "--term-at-fork").returncode == 0
    events = wait_for(lambda: [e for e in probe.events_seen()
                               if e.startswith("signalled child status=")],
                      message="the probe reaped its signalled child")
    assert events == [f"signalled child status={-signal.SIGTERM}"], events
    status = json.loads(probe.cli("status", "--json").stdout)
    assert status["state"] == "running", status
    assert "received SIGTERM" not in probe.log_text()
    assert probe.cli("stop").returncode == 0
    assert probe.events_seen().count("shutdown") == 1


@pytest.mark.parametrize("option", ["--term-in-fork", "--term-in-finalizer"])
def test_a_stop_that_cpython_would_drop_still_unwinds_run(probe: Service, option: str) -> None:
    """A SIGTERM handled where CPython drops what a handler raises lost its StopDaemon, and
    a run() that relies on it ran on (a second SIGTERM did not raise either). Such places:
    an at-fork hook (logging's, or the fork window's own restore when it ran in Python), the
    warning os.fork() gives a threaded process on Python 3.12+, a ``__del__``. The probe is
    signalled there, then loops naively: the stop must still reach run(), with shutdown()
    and nothing printed as ignored. (It may land in the probe's own code right after the
    fork or the ``del``, before the probe notes it: "run" is the mark that run() began.)"""
    assert probe.cli("start", option).returncode == 0
    wait_for(lambda: probe.cli("status").returncode == 3, 15,
             message="the daemon stopped by itself")
    events = probe.events_seen()
    assert "run" in events and "the stop was lost" not in events, events
    assert "shutdown" in events
    assert "received SIGTERM, stopping" in probe.log_text()
    assert "Exception ignored" not in probe.log_text()


def test_a_stop_deferred_by_a_critical_block_shows_as_stopping(probe: Service) -> None:
    """start during that stop used to say "already running", then nothing ran."""
    assert probe.cli("start", "--critical-seconds", "1.5").returncode == 0
    first = probe.pid()
    probe.wait_event("begin 0")
    stopping = subprocess.Popen(probe.argv("stop"), stdout=subprocess.PIPE, text=True)
    try:
        state = wait_for(lambda: (s := json.loads(probe.cli("status", "--json").stdout)["state"])
                         == "stopping" and s, message="status says stopping")
        assert state == "stopping"
        started = probe.cli("start")
    finally:
        stopping.communicate(timeout=30)
    assert started.returncode == 0 and "started (pid" in started.stdout, started.stdout
    assert probe.pid() not in (None, first)


def test_a_crash_in_c_leaves_its_traceback_and_a_kill_by_stop_is_recorded(
        probe: Service) -> None:
    assert probe.cli("start", "--segfault").returncode == 0
    wait_for(lambda: "Segmentation fault" in probe.log_text(), message="faulthandler's report")
    assert 'in run' in probe.log_text()
    assert probe.cli("start", "--ignore-term").returncode == 0
    pid = probe.pid()
    assert "killed after 1s" in probe.cli("stop", "--stop-timeout", "1").stdout
    status = probe.cli("status")
    assert (f"pid {pid} exited with status -9" in status.stdout
            and "killed with SIGKILL by stop after the 1s stop timeout" in status.stdout), (
        status.stdout)


def test_a_refused_pidfile_directory_gets_no_file(probe: Service, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    refused = probe.cli("start", "--pidfile", str(shared / "probe.pid"))
    assert refused.returncode == 1 and "may be written by other users" in refused.stderr
    assert list(shared.iterdir()) == []


def test_a_usage_error_is_one_line(probe: Service) -> None:
    result = probe.cli("start", "--umask", "8")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.rstrip().endswith("--help)")


def test_out_of_descriptors_the_control_socket_answers_and_recovers(probe: Service,
                                                                     tmp_path: Path) -> None:
    """A daemon at its descriptor limit: a client is told why at once, not left queued
    (the listener stayed readable and the control thread woke, failed and logged in a loop)."""
    import resource

    release = tmp_path / "release"
    assert probe.cli("start", "--reload-hogs-fds-until", str(release)).returncode == 0
    pid = probe.pid()
    assert pid is not None
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, 256))
    assert probe.cli("reload").returncode == 0
    probe.wait_event("fds exhausted", timeout=20)
    refused = probe.cli("reload", timeout=30)  # a command only the control socket answers
    assert refused.returncode != 0
    assert "out of file descriptors" in refused.stdout + refused.stderr
    assert pid_alive(pid)
    assert probe.cli("status").returncode == 0  # running, says the pidfile's lock
    release.touch()
    probe.wait_event("fds released", timeout=20)
    assert probe.cli("status").returncode == 0
    assert probe.cli("stop").returncode == 0


def test_escape_sequences_from_a_daemon_never_reach_the_terminal(probe: Service) -> None:
    """An exception's message can carry a peer's bytes: start's error, and status's note of
    how the daemon ended (read from its exit record), show them escaped."""
    hostile = "taken \x1b]0;owned\x07\x1b[2J \u202eevil"
    failed = probe.cli("start", "--setup-fail", hostile)
    assert failed.returncode == 1
    status = probe.cli("status")
    for output in (failed.stderr, status.stdout + status.stderr):
        assert "\x1b" not in output and "\u202e" not in output, output
        assert "taken \\x1b]0;owned\\x07\\x1b[2J \\u202eevil" in output, output
