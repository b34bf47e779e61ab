"""asyncio services end to end: async hooks on one loop, cancellation as the stop, critical()
blocks across tasks, reload on the loop, notify and watchdog, with real daemons."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SERVICES, FakeSystemd, Service, pid_alive, wait_for


@pytest.fixture
def aprobe(tmp_path: Path) -> Iterator[Service]:
    service = Service(SERVICES / "aprobe.py", tmp_path, "aprobe")
    yield service
    service.cleanup()


def setup_port(service: Service) -> int:
    line = next(e for e in service.events_seen() if e.startswith("setup pid="))
    return int(line.rsplit("port=", 1)[1])


def test_async_setup_is_awaited_and_its_loop_lives_on(aprobe: Service) -> None:
    started = aprobe.cli("start")
    assert started.returncode == 0, started.stderr
    pid = aprobe.pid()
    assert started.stdout.strip() == f"aprobe started (pid {pid})"
    assert "setup done" in aprobe.events_seen(), "start returned before setup() was awaited"
    # the server setup() created on the loop serves while run() runs
    with socket.create_connection(("127.0.0.1", setup_port(aprobe)), timeout=5) as client:
        assert client.makefile().readline() == "hello\n"
    status = json.loads(aprobe.cli("status", "--json").stdout)
    assert status["state"] == "running"
    assert status["connections"] == 1
    assert status["loop_running"] is True, "async status_info() runs on the daemon's loop"
    stopped = aprobe.cli("stop")
    assert stopped.stdout.strip() == f"aprobe stopped (pid {pid})"
    assert aprobe.events_seen()[-2:] == ["cancelled", "shutdown"]  # shutdown() used it too
    assert not aprobe.pidfile.exists()


def test_async_setup_failure_is_reported_like_a_sync_one(aprobe: Service) -> None:
    failed = aprobe.cli("start", "--setup-fail", "no database for you")
    assert failed.returncode == 1
    assert failed.stderr.strip() == "aprobe: ValueError: no database for you"
    assert "shutdown" not in aprobe.events_seen()
    assert not aprobe.pidfile.exists()
    assert not (aprobe.workdir / "aprobe.ctl").exists()
    status = aprobe.cli("status")
    assert status.returncode == 3
    assert "setup() failed: ValueError: no database for you" in status.stdout


def test_stop_during_async_setup_ends_the_start(aprobe: Service) -> None:
    starting = subprocess.Popen(aprobe.argv("start", "--setup-sleep", "30"),
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(e.startswith("setup pid=") for e in aprobe.events_seen()))
        pid = int(aprobe.events_seen()[0].split()[1].split("=")[1])
        os.kill(pid, signal.SIGTERM)
        _, err = starting.communicate(timeout=30)
    finally:
        if starting.poll() is None:
            starting.kill()
    assert starting.returncode == 1
    assert "stopped by SIGTERM during setup()" in err
    wait_for(lambda: not pid_alive(pid))


def test_a_stop_before_a_setup_that_never_suspends_ends_the_start(aprobe: Service) -> None:
    """A stop recorded before the loop's gate existed is replayed as a cancel of the task
    that runs setup(); a setup() that never awaited left that cancel pending, so the start
    was announced and the cancel then landed in shutdown() or ended the daemon without an
    exit status ("ended without a word")."""
    started = aprobe.cli("start", "--term-before-setup")
    assert started.returncode == 1, started
    assert "stopped by SIGTERM during setup()" in started.stderr, started.stderr
    assert "setup ran" in aprobe.events_seen() and "run" not in aprobe.events_seen()
    record = wait_for(lambda: (r := json.loads((aprobe.workdir / "aprobe.exit").read_text()))
                      .get("exit_status") is not None and r, message="the end recorded")
    assert (record["exit_status"], record.get("stopped_in_setup")) == (1, True), record
    assert aprobe.cli("status").returncode == 3


def test_naive_async_loop_is_cancelled_promptly(aprobe: Service) -> None:
    assert aprobe.cli("start", "--naive-loop").returncode == 0
    began = time.monotonic()
    stopped = aprobe.cli("stop", "--stop-timeout", "10")
    elapsed = time.monotonic() - began
    assert "stopped" in stopped.stdout, stopped.stdout
    assert elapsed < 3, "`while True: await asyncio.sleep(1)` must not wait for the timeout"
    assert aprobe.events_seen()[-2:] == ["cancelled", "shutdown"]


def test_stop_waits_for_the_async_critical_block(aprobe: Service) -> None:
    assert aprobe.cli("start", "--critical-seconds", "1.0").returncode == 0
    aprobe.wait_event("begin 0")
    stopped = aprobe.cli("stop")
    assert "stopped" in stopped.stdout, stopped.stdout
    events = aprobe.events_seen()
    begins = [e for e in events if e.startswith("begin")]
    ends = [e for e in events if e.startswith("end")]
    assert len(begins) == len(ends) == 1, events  # the block finished, no new one began
    assert events[-1] == "shutdown"


def test_async_reload_is_awaited_reports_and_shares_run_locks(aprobe: Service,
                                                             tmp_path: Path) -> None:
    fail_flag = tmp_path / "reload-fails"
    assert aprobe.cli("start", "--critical-seconds", "0.3",
                      "--reload-fail-file", str(fail_flag)).returncode == 0
    pid = aprobe.pid()
    aprobe.wait_event("begin 0")
    ok = aprobe.cli("reload")
    assert (ok.returncode, ok.stdout.strip()) == (0, f"aprobe reloaded (pid {pid})")
    events = aprobe.events_seen()
    # reload() took the lock run() holds inside its block: it waited, it did not deadlock
    reload_done = events.index("reload done 1")
    assert events[reload_done - 1].startswith(("end", "reload begin")), events
    fail_flag.touch()
    failed = aprobe.cli("reload")
    assert failed.returncode == 1
    assert failed.stderr.strip() == "aprobe: reload failed: ValueError: bad configuration in reload"
    status = json.loads(aprobe.cli("status", "--json").stdout)
    assert (status["pid"], status["reloads"]) == (pid, 1), "the failed reload kept the old state"
    os.kill(pid, signal.SIGHUP)  # by hand: the same hook
    fail_flag.unlink()
    aprobe.wait_event("reload done 2")


def test_sync_hooks_mix_with_async_ones(aprobe: Service) -> None:
    assert aprobe.cli("start", "--sync-reload").returncode == 0
    assert aprobe.cli("reload").returncode == 0
    assert "sync reload done 1" in aprobe.events_seen()
    assert aprobe.cli("reopen-logs").returncode == 0
    assert "reopen_logs" in aprobe.events_seen()  # an async reopen_logs() awaited


def test_stopping_can_be_awaited(aprobe: Service) -> None:
    assert aprobe.cli("start", "--wait-stopping").returncode == 0
    assert "stopped" in aprobe.cli("stop").stdout
    assert aprobe.events_seen()[-3:] == ["cancelled", "stopping awaited", "shutdown"]


def test_run_raising_and_returning(aprobe: Service) -> None:
    assert aprobe.cli("start", "--run-raises").returncode == 0
    wait_for(lambda: "shutdown" in aprobe.events_seen())
    status = wait_for(lambda: (s := aprobe.cli("status")).returncode == 3 and s)
    assert "exited with status 1" in status.stdout
    assert "run() raised RuntimeError: run exploded" in status.stdout
    assert "uncaught exception in run()" in aprobe.log_text()


def test_async_service_under_systemd_notify(aprobe: Service, fake_systemd: FakeSystemd,
                                            tmp_path: Path) -> None:
    unhealthy = tmp_path / "unhealthy"
    env = {**os.environ, "NOTIFY_SOCKET": fake_systemd.address, "WATCHDOG_USEC": "200000"}
    service = subprocess.Popen(aprobe.argv("run", "--unhealthy-file", str(unhealthy)), env=env,
                               cwd=aprobe.workdir)
    try:
        assert fake_systemd.wait_for_field("READY", "1").get("STATUS") == "aprobe running"
        fake_systemd.wait_for_field("WATCHDOG", "1")
        before = len(fake_systemd.collect())
        assert aprobe.cli("reload").returncode == 0
        reloading = fake_systemd.wait_for_field("RELOADING", "1", after=before)
        messages = fake_systemd.collect()
        assert {"READY": "1"} in messages[messages.index(reloading) + 1:]
        unhealthy.touch()  # async healthy() says False: the watchdog goes hungry
        time.sleep(0.25)  # a feed already under way may still land
        starved_at = len(fake_systemd.collect())
        time.sleep(0.5)  # five watchdog periods, an absence to watch: none may be fed
        fed = [m for m in fake_systemd.collect()[starved_at:] if m.get("WATCHDOG") == "1"]
        assert fed == [], "an unhealthy service fed the watchdog"
        unhealthy.unlink()
        fake_systemd.wait_for_field("WATCHDOG", "1", after=starved_at)
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
        fake_systemd.wait_for_field("STOPPING", "1")
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


def test_async_hello_example_as_the_tutorial_shows(tmp_path: Path) -> None:
    from helpers import ROOT

    hello = Service(ROOT / "examples" / "async_hello.py", tmp_path, "ahello",
                    events_option=False)
    greeting = tmp_path / "greeting"
    greeting.write_text("good morning\n")
    try:
        started = hello.cli("start", "--interval", "0.05", "--greeting-file", str(greeting))
        assert started.returncode == 0, started.stderr
        pid = hello.pid()
        wait_for(lambda: "good morning (#1)" in hello.log_text())
        greeting.write_text("")
        failed = hello.cli("reload")
        assert (failed.returncode, failed.stderr.strip()) == (
            1, f"ahello: reload failed: ValueError: {greeting} is empty")
        status = hello.cli("status")
        assert status.stdout.startswith(f"ahello is running (pid {pid}, up ")
        assert "  greeting: good morning" in status.stdout
        stopped = hello.cli("stop")
        assert stopped.stdout.strip() == f"ahello stopped (pid {pid})"
    finally:
        hello.cleanup()


def test_taskgroup_workers_never_have_a_block_cut(aprobe: Service) -> None:
    """The cancellation of run() reaches a TaskGroup's children: never inside a block."""
    for _ in range(3):
        assert aprobe.cli("start", "--workers", "4").returncode == 0
        wait_for(lambda: sum("end" in e for e in aprobe.events_seen()) > 20)
        assert "stopped" in aprobe.cli("stop").stdout
    events = aprobe.events_seen()
    assert not [e for e in events if "CUT IN HALF" in e]
    for number in range(4):
        mine = [e for e in events if e.startswith(f"worker {number} ")]
        assert mine.count(f"worker {number} begin") == mine.count(f"worker {number} end")


def test_sys_exit_in_async_run_ends_the_daemon_with_its_status(aprobe: Service) -> None:
    assert aprobe.cli("start", "--sys-exit", "3").returncode == 0
    wait_for(lambda: "shutdown" in aprobe.events_seen(), message="shutdown() ran")
    status = wait_for(lambda: (s := aprobe.cli("status")).returncode == 3 and s)
    assert "exited with status 3" in status.stdout and "sys.exit(3)" in status.stdout
    assert not aprobe.pidfile.exists()


def test_a_thread_stuck_forever_does_not_turn_a_stop_into_a_kill(aprobe: Service) -> None:
    assert aprobe.cli("start", "--stuck-thread").returncode == 0
    stopped = aprobe.cli("stop", "--stop-timeout", "5")
    assert "stopped (pid" in stopped.stdout, stopped.stdout
    assert aprobe.cli("status").stdout.strip() == "aprobe is not running"


def test_a_consumer_that_begins_its_next_block_at_once_is_not_cut(aprobe: Service) -> None:
    """A consumer of a queue with a backlog opens its next block as the last one closes,
    before the wait for open blocks resumed: shutdown() used to run inside that block."""
    assert aprobe.cli("start", "--queue-consumer", "0.3").returncode == 0
    aprobe.wait_event("item begin 1")
    assert "stopped" in aprobe.cli("stop").stdout
    events = aprobe.events_seen()
    shutdown = events.index("shutdown begins")
    begun = [e.split()[-1] for e in events if e.startswith("item begin")]
    ended = [e.split()[-1] for e in events[:shutdown] if e.startswith("item end")]
    assert begun == ended == ["0", "1", "2", "3"], events  # all ended before shutdown()
    assert not [e for e in events[shutdown:] if e.startswith("item")], events


def test_shutdown_waits_for_a_handler_inside_its_block(aprobe: Service) -> None:
    """A task that is not run()'s (a server's handler) inside critical(): shutdown() is called
    only once its block is done, so it never closes what the handler is using."""
    assert aprobe.cli("start", "--handler-block", "1.0").returncode == 0
    aprobe.wait_event("handler begin 0")
    assert "stopped" in aprobe.cli("stop").stdout
    events = aprobe.events_seen()
    assert events.index("handler end 0") < events.index("shutdown begins"), events
