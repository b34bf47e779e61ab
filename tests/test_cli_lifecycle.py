"""The CLI end to end with real daemons: start, stop, restart, status, reload, run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import SERVICES, Service, WorldRuntime, pid_alive, proc_status, wait_for


def test_start_status_stop(probe: Service) -> None:
    started = probe.cli("start")
    assert started.returncode == 0, started.stderr
    pid = probe.pid()
    assert pid is not None and pid_alive(pid)
    assert started.stdout.strip() == f"probe started (pid {pid})"
    assert f"setup uid=0 pid={pid}" in probe.events_seen()  # ready means setup() finished

    status = probe.cli("status")
    assert status.returncode == 0
    assert status.stdout.startswith(f"probe is running (pid {pid}, up ")

    stopped = probe.cli("stop")
    assert stopped.returncode == 0
    assert stopped.stdout.strip() == f"probe stopped (pid {pid})"
    assert not pid_alive(pid)
    assert not probe.pidfile.exists()
    assert probe.events_seen()[-1] == "shutdown"

    after = probe.cli("status")
    assert (after.returncode, after.stdout.strip()) == (3, "probe is not running")
    again = probe.cli("stop")
    assert (again.returncode, again.stdout.strip()) == (0, "probe is not running")


def test_detached_process_shape(probe: Service) -> None:
    """Double fork + setsid, cwd /, umask, no controlling tty, stdio redirected, few fds."""
    assert probe.cli("start", "--umask", "027").returncode == 0
    pid = probe.pid()
    assert pid is not None
    with open(f"/proc/{pid}/stat") as stat_file:
        fields = stat_file.read().rsplit(")", 1)[1].split()
    ppid, session, tty = int(fields[1]), int(fields[3]), int(fields[4])
    assert session != pid, "second fork: not a session leader, can never get a tty back"
    assert tty == 0
    assert ppid != os.getpid()
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert proc_status(pid)["Umask"] == "0027"
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == str(probe.log_file)
    assert os.readlink(f"/proc/{pid}/fd/2") == str(probe.log_file)
    targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert str(probe.pidfile) in targets
    # stdio, pidfile, log, exit record, control socket and its epoll, signal pipe: nothing
    # inherited from the test
    assert len(os.listdir(f"/proc/{pid}/fd")) <= 11, targets
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        assert cmdline.read().startswith(b"probe: main")


def test_kill_9_then_start(probe: Service) -> None:
    assert probe.cli("start").returncode == 0
    old_pid = probe.pid()
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(old_pid), message="killed daemon gone")
    assert probe.pidfile.exists(), "SIGKILL leaves the file behind..."
    status = probe.cli("status")
    assert status.returncode == 1
    assert status.stdout.startswith(f"probe is not running, but pidfile {probe.pidfile} exists "
                                    f"(last run: pid {old_pid}, started ")
    assert "ended without a word (killed by a signal such as SIGKILL" in status.stdout
    started = probe.cli("start")  # ...but never a stale lock
    assert started.returncode == 0, started.stderr
    assert probe.pid() not in (None, old_pid)


def test_ten_concurrent_starts_give_one_daemon(probe: Service) -> None:
    probe.extra = ["--setup-sleep", "0.3"]  # widen the window in which a second one could slip
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: probe.cli("start"), range(10)))
    assert [r.returncode for r in results] == [0] * 10, [r.stderr for r in results]
    pid = probe.pid()
    started = [r for r in results if "started" in r.stdout]
    running = [r for r in results if "already running" in r.stdout]
    assert len(started) == 1
    assert len(running) == 9
    assert {r.stdout.strip() for r in running} == {f"probe is already running (pid {pid})"}
    setups = [e for e in probe.events_seen() if e.startswith("setup uid")]
    assert len(setups) == 1, setups


def test_setup_failure_is_reported_and_nothing_is_left(probe: Service) -> None:
    result = probe.cli("start", "--setup-fail", "port 8080 is taken")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "probe: ValueError: port 8080 is taken"
    setup_pid = int(next(e for e in probe.events_seen() if e.startswith("setup")).split("=")[-1])
    wait_for(lambda: not pid_alive(setup_pid), message="failed daemon gone")
    assert probe.cli("status").returncode == 3
    assert "ValueError: port 8080 is taken" in probe.log_text()  # traceback in the log too


def test_daemon_dying_in_setup_is_reported(probe: Service) -> None:
    result = probe.cli("start", "--setup-exit")
    assert result.returncode == 1
    assert "exited during startup" in result.stderr
    assert probe.cli("status").returncode in (1, 3)
    assert probe.cli("start").returncode == 0  # and the next start is not blocked


def test_start_timeout_kills_the_slow_daemon(probe: Service) -> None:
    began = time.monotonic()
    result = probe.cli("start", "--setup-sleep", "30", "--start-timeout", "1")
    assert time.monotonic() - began < 10
    assert result.returncode == 1
    assert "not ready after 1s" in result.stderr
    setup_pid = int(next(e for e in probe.events_seen() if e.startswith("setup")).split("=")[-1])
    assert not pid_alive(setup_pid)
    assert probe.cli("status").returncode == 3


def test_already_running_while_still_in_setup(probe: Service) -> None:
    first = subprocess.Popen(probe.argv("start", "--setup-sleep", "1.5"),
                             stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(e.startswith("setup uid") for e in probe.events_seen()))
        second = probe.cli("start")
        assert second.returncode == 0
        assert second.stdout.startswith("probe is already running (pid ")
    finally:
        out, _ = first.communicate(timeout=30)
    assert first.returncode == 0 and "started" in out


def test_stop_during_setup_is_no_failure_to_warn_about(probe: Service) -> None:
    """`stop` warned that the daemon had failed ("exited with status 1 ... setup() failed:
    stopped by SIGTERM during setup()") for the stop it had asked for itself. The start
    fails and says why, `status` keeps saying it (a start timeout ends the same way), and
    the stop is a plain stop."""
    starting = subprocess.Popen(probe.argv("start", "--setup-sleep", "30"),
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(e.startswith("setup uid") for e in probe.events_seen()))
        pid = probe.pid()
        stopped = probe.cli("stop")
        _, start_err = starting.communicate(timeout=30)
    finally:
        if starting.poll() is None:
            starting.kill()
    assert (stopped.returncode, stopped.stdout.strip(), stopped.stderr) == (
        0, f"probe stopped (pid {pid})", "")
    assert starting.returncode == 1 and "stopped by SIGTERM during setup()" in start_err
    status = probe.cli("status")
    assert status.returncode == 3
    assert "stopped by SIGTERM during setup()" in status.stdout + status.stderr, status


def test_stop_kills_a_daemon_that_ignores_sigterm(probe: Service) -> None:
    assert probe.cli("start", "--ignore-term").returncode == 0
    pid = probe.pid()
    assert pid is not None
    stopped = probe.cli("stop", "--stop-timeout", "1")
    assert stopped.returncode == 0
    assert stopped.stdout.strip() == f"probe killed after 1s timeout (pid {pid})"
    assert not pid_alive(pid)
    assert not probe.pidfile.exists()


def test_naive_sleep_loop_stops_promptly(probe: Service) -> None:
    assert probe.cli("start", "--naive-loop").returncode == 0
    began = time.monotonic()
    stopped = probe.cli("stop", "--stop-timeout", "10")
    elapsed = time.monotonic() - began
    assert "stopped" in stopped.stdout, stopped.stdout
    assert elapsed < 3, "a `while True: sleep(1)` loop must not wait for the stop timeout"
    assert probe.events_seen()[-1] == "shutdown"


def test_sigterm_never_cuts_a_critical_block(probe: Service) -> None:
    assert probe.cli("start", "--critical-seconds", "1.0").returncode == 0
    probe.wait_event("begin 0")
    stopped = probe.cli("stop")
    assert "stopped" in stopped.stdout
    events = probe.events_seen()
    begins = [e for e in events if e.startswith("begin")]
    ends = [e for e in events if e.startswith("end")]
    assert len(begins) == len(ends), events  # every unit of work finished
    assert events[-1] == "shutdown"
    assert len(begins) == 1, "no new block starts after the stop request"


def test_reload_success_and_failure(probe: Service, tmp_path: Path) -> None:
    fail_flag = tmp_path / "reload-fails"
    assert probe.cli("start", "--reload-fail-file", str(fail_flag)).returncode == 0
    pid = probe.pid()
    ok = probe.cli("reload")
    assert (ok.returncode, ok.stdout.strip()) == (0, f"probe reloaded (pid {pid})")
    fail_flag.touch()
    failed = probe.cli("reload")
    assert failed.returncode == 1
    assert failed.stderr.strip() == "probe: reload failed: ValueError: bad configuration in reload"
    status = json.loads(probe.cli("status", "--json").stdout)
    assert status["running"] is True and status["pid"] == pid
    assert status["reloads"] == 1, "the failed reload kept the old state"


def test_sighup_by_hand_runs_the_same_hook(probe: Service) -> None:
    assert probe.cli("start").returncode == 0
    pid = probe.pid()
    assert pid is not None
    os.kill(pid, signal.SIGHUP)
    probe.wait_event("reload done 1")
    assert json.loads(probe.cli("status", "--json").stdout)["reloads"] == 1


def test_reload_waits_for_the_critical_block(probe: Service) -> None:
    assert probe.cli("start", "--critical-seconds", "0.5").returncode == 0
    probe.wait_event("begin 0")
    assert probe.cli("reload").returncode == 0
    events = probe.events_seen()
    reload_at = events.index("reload begin")
    before = events[:reload_at]
    assert before[-1].startswith("end"), f"reload ran inside a block: {events}"


def test_reload_not_running_is_7(probe: Service) -> None:
    result = probe.cli("reload")
    assert result.returncode == 7
    assert result.stderr.strip() == "probe: cannot reload: not running"


def test_restart_gives_a_new_process(probe: Service) -> None:
    assert probe.cli("start").returncode == 0
    old_pid = probe.pid()
    assert old_pid is not None
    restarted = probe.cli("restart")
    assert restarted.returncode == 0, restarted.stderr
    new_pid = probe.pid()
    assert new_pid is not None and new_pid != old_pid
    assert not pid_alive(old_pid)
    assert restarted.stdout.splitlines() == [f"probe stopped (pid {old_pid})",
                                             f"probe started (pid {new_pid})"]


def test_restart_with_a_bad_option_leaves_the_daemon_running(probe: Service) -> None:
    """What start can check is checked before the stop: a typo does not take it down."""
    assert probe.cli("start").returncode == 0
    pid = probe.pid()
    assert pid is not None
    refused = probe.cli("restart", "--user", "no-such-user-xyz")
    assert refused.returncode == 6, refused.stderr
    assert refused.stderr.strip() == "probe: unknown user 'no-such-user-xyz'"
    assert refused.stdout == ""  # nothing was stopped
    assert probe.pid() == pid and pid_alive(pid)
    assert probe.cli("status").returncode == 0


def test_restart_names_the_options_that_change(probe: Service) -> None:
    assert probe.cli("start", "--stop-timeout", "7").returncode == 0
    old_pid = probe.pid()
    restarted = probe.cli("restart", "--stop-timeout", "5")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stderr.strip() == (
        "probe: note: restarting with other options than the running daemon's: "
        "--stop-timeout 7.0 -> 5.0")
    assert probe.pid() not in (None, old_pid)
    same = probe.cli("restart", "--stop-timeout", "5")
    assert same.returncode == 0 and same.stderr == ""
    again = probe.cli("start")  # LSB: 0, but the options given are not the ones in force
    assert again.returncode == 0
    assert again.stderr.strip() == ("probe: note: it runs with other options than these "
                                    "(--stop-timeout 5.0 -> 10.0): restart applies them")


def test_status_json(probe: Service) -> None:
    stopped = json.loads(probe.cli("status", "--json").stdout)
    assert stopped == {"name": "probe", "running": False, "pid": None, "uptime_s": None,
                       "pidfile": str(probe.pidfile), "state": "stopped"}
    assert probe.cli("start").returncode == 0
    running = json.loads(probe.cli("status", "--json").stdout)
    assert running["running"] is True
    assert running["pid"] == probe.pid()
    assert 0 <= running["uptime_s"] < 60


def test_status_4_when_it_cannot_tell(probe: Service, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.pid").write_text("1\n")
    probe.pidfile.symlink_to(tmp_path / "elsewhere.pid")
    result = probe.cli("status")
    assert result.returncode == 4
    assert "symbolic link" in result.stdout


def test_uncaught_exception_in_run(probe: Service) -> None:
    assert probe.cli("start", "--run-raises").returncode == 0
    wait_for(lambda: "shutdown" in probe.events_seen(), message="shutdown after crash")
    wait_for(lambda: probe.cli("status").returncode == 3, message="pidfile released")
    log = probe.log_text()
    assert "Traceback" in log and "RuntimeError: run exploded" in log
    assert "exiting with status 1" in log
    # status says more than "not running": how it ended, when, and where the log is
    status = probe.cli("status")
    assert re.fullmatch(
        rf"probe is not running \(last run: pid \d+ exited with status 1 at "
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ: run\(\) raised RuntimeError: run exploded; "
        rf"log: {re.escape(str(probe.log_file))}\)", status.stdout.strip()), status.stdout
    report = json.loads(probe.cli("status", "--json").stdout)
    assert report["last_exit"]["exit_status"] == 1
    # a clean stop afterwards is not worth a note
    assert probe.cli("start").returncode == 0 and probe.cli("stop").returncode == 0
    assert probe.cli("status").stdout.strip() == "probe is not running"


def test_stop_says_when_the_daemon_failed_on_its_way_out(probe: Service) -> None:
    assert probe.cli("start", "--shutdown-raises").returncode == 0
    pid = probe.pid()
    stopped = probe.cli("stop")
    # stopped is stopped (LSB: 0), but the failure is told, not left for `status` to find
    assert (stopped.returncode, stopped.stdout.strip()) == (0, f"probe stopped (pid {pid})")
    assert re.fullmatch(
        rf"probe: warning: pid {pid} exited with status 1 at \S+: stopped by SIGTERM; "
        rf"shutdown\(\) raised RuntimeError: could not flush the queue; "
        rf"log: {re.escape(str(probe.log_file))}", stopped.stderr.strip()), stopped.stderr
    # a clean stop says nothing more: the next start rewrote the record, which ends in 0
    assert probe.cli("start").returncode == 0
    clean = probe.cli("stop")
    assert (clean.returncode, clean.stderr) == (0, "")


def test_run_returning_ends_the_daemon_cleanly(probe: Service) -> None:
    assert probe.cli("start", "--run-returns").returncode == 0
    wait_for(lambda: probe.cli("status").returncode == 3, message="daemon ended")
    assert "exiting with status 0" in probe.log_text()


def test_bad_command_lines_exit_2(probe: Service) -> None:
    assert probe.cli("frobnicate").returncode == 2
    assert probe.cli("status", "--no-such-option").returncode == 2
    typo = probe.cli("--stop-timeot", "8000", "start")  # the value once became the "action"
    assert typo.returncode == 2
    assert typo.stderr.strip() == ("probe.py: unknown option --stop-timeot (did you mean "
                                   "--stop-timeout?) (see probe.py --help)"), typo.stderr
    assert probe.cli("--pid", "x.pid", "status").returncode == 2, "no silent abbreviations"
    zero_umask = probe.cli("start", "--umask", "0")
    assert zero_umask.returncode == 2 and "umask" in zero_umask.stderr


def test_missing_pidfile_directory_is_one_line_exit_1(probe: Service, tmp_path: Path) -> None:
    probe.pidfile = tmp_path / "no" / "such" / "dir" / "probe.pid"
    result = probe.cli("start")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "directory does not exist" in result.stderr
    assert not any(e.startswith("setup") for e in probe.events_seen())
    probe.pidfile = Path("/proc/probe.pid")  # the directory is there; the file cannot be
    result = probe.cli("start")
    assert (result.returncode, result.stderr.strip()) == (
        1, "probe: cannot open pidfile /proc/probe.pid: cannot be created in that directory")


def test_unwritable_pidfile_directory_is_exit_4(world_runtime: WorldRuntime,
                                               world_tmp: Path) -> None:
    locked_dir = world_tmp / "root-only"
    locked_dir.mkdir(mode=0o755)
    pidfile = locked_dir / "probe.pid"
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", world_runtime.python,
         str(world_runtime.root / "services" / "probe.py"), "start", "--pidfile", str(pidfile),
         "--events", str(world_tmp / "events.log")],
        capture_output=True, text=True, env=world_runtime.env, timeout=30, check=False)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip() == f"probe: cannot open pidfile {pidfile}: Permission denied"
    assert not (world_tmp / "events.log").exists(), "nothing was started"


def test_relative_paths_resolve_against_the_callers_directory(tmp_path: Path) -> None:
    service = Service(SERVICES / "probe.py", tmp_path, "probe")
    command = [sys.executable, str(service.script), "start", "--pidfile", "rel.pid",
               "--log-file", "rel.log", "--events", "rel-events.log"]
    try:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                                timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        service.pidfile = tmp_path / "rel.pid"
        service.remember_pid()
        assert (tmp_path / "rel.log").exists()
        assert (tmp_path / "rel-events.log").exists()
    finally:
        service.cleanup()


def test_run_foreground_stops_on_sigterm(probe: Service) -> None:
    process = subprocess.Popen(probe.argv("run"), cwd=probe.workdir)
    try:
        probe.wait_event("run")
        assert probe.pid() == process.pid, "run does not fork"
        assert probe.cli("status").returncode == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert probe.events_seen()[-1] == "shutdown"
        assert probe.cli("status").returncode == 3
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_refuses_a_second_instance(probe: Service) -> None:
    assert probe.cli("start").returncode == 0
    second = probe.cli("run")
    assert second.returncode == 1
    assert "already running" in second.stderr


def test_reload_names_the_options_it_cannot_apply(probe: Service) -> None:
    assert probe.cli("start", "--critical-seconds", "0.2").returncode == 0
    plain = probe.cli("reload")  # options of start not repeated: nothing to say
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    other = probe.cli("reload", "--stop-timeout", "3")
    assert other.returncode == 0
    assert other.stderr.strip() == ("probe: note: reload keeps the running daemon's options "
                                    "(--stop-timeout 10.0 -> 3.0): restart applies them")


def test_a_command_still_runs_the_exit_handlers_of_configure(probe: Service,
                                                              tmp_path: Path) -> None:
    """Commands skip the interpreter's teardown (15-20 ms), not the atexit handlers."""
    marker = tmp_path / "atexit"
    result = probe.cli("start", "--atexit-file", str(marker))
    assert result.returncode == 0, result.stderr
    daemon_pid = probe.pid()
    assert probe.cli("stop").returncode == 0
    written = marker.read_text().split()
    assert len(written) == 1 and int(written[0]) != daemon_pid  # the command's, only
