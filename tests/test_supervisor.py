"""The supervisor with real processes: respawn, backoff, stop, reload, pdeathsig, control.

Every supervisor here runs with a unique DAEMONKIT_TEST_TAG in its environment, which its
children inherit: cleanup finds every process of the test by that tag (in /proc/PID/environ)
and kills it by pid.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Sv, WorldRuntime, pid_alive, tagged_pids, wait_for

from daemonkit.supervisor.client import PROG


def test_status_env_and_respawn_after_kill9(sv: Sv) -> None:
    sv.write("""
        [program:echo]
        command = sh -c 'echo "$DAEMONKIT_PROGRAM $DAEMONKIT_PROCESS_NUM $GREETING"; exec sleep 600'
        environment = GREETING="hello, world"
        startsecs = 0.2
        stdout_logfile = echo.log
        """)
    sv.cli("start", check=True)
    first = sv.wait_state("echo", "RUNNING")
    assert (sv.dir / "echo.log").read_text() == "echo 0 hello, world\n"
    table = sv.cli("status", check=True).stdout.splitlines()
    assert table[0].startswith(f"daemonkit-supervisor is running (pid {sv.supervisor_pid()}")
    assert table[1].split() == ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "EXIT"]
    assert table[2].split()[:3] == ["echo", "RUNNING", str(first["pid"])]
    one = sv.cli("status", "echo", check=True).stdout.splitlines()
    assert one[1].split()[:2] == ["echo", "RUNNING"]
    assert sv.cli("status", "nope").returncode == 3
    with open(f"/proc/{sv.supervisor_pid()}/cmdline", "rb") as cmdline:
        assert str(sv.ini).encode() in cmdline.read()  # the title shows the config

    killed_at = time.monotonic()
    os.kill(first["pid"], signal.SIGKILL)
    second = wait_for(lambda: (p := sv.status()["echo"])["pid"] not in (None, first["pid"])
                      and p, 5, interval=0.005, message="respawn")
    assert time.monotonic() - killed_at < 1.0  # measured well under 100 ms, CLI included
    assert second["restarts"] == 1
    assert second["exit_status"] == -signal.SIGKILL
    assert not os.path.exists(f"/proc/{first['pid']}")  # reaped at once: no zombie
    sv.cli("stop", check=True)
    assert not pid_alive(second["pid"])


def test_backoff_then_fatal_then_start_again(sv: Sv) -> None:
    attempts = sv.dir / "attempts"
    sv.write(f"""
        [program:crash]
        command = sh -c 'date +%%s.%%N >> {attempts}; exit 3'
        startsecs = 1
        startretries = 3
        backoff_initial = 0.2
        backoff_max = 0.4
        """)
    sv.cli("start", check=True)
    fatal = sv.wait_state("crash", "FATAL", timeout=10)
    times = [float(line) for line in attempts.read_text().split()]
    assert len(times) == 4  # the first try + startretries
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # the delays chosen: 0.2, 0.4, then 0.4 (capped; 0.8 uncapped), each +-10% jitter
    delays = [float(d) for d in re.findall(r"retry \d/3 in ([\d.]+)s", sv.log())]
    assert len(delays) == 3
    assert 0.18 <= delays[0] <= 0.22
    assert 0.36 <= delays[1] <= 0.44
    assert 0.36 <= delays[2] <= 0.44
    # and kept: never early; late only by one spawn of sh (slow on a loaded machine)
    for gap, delay in zip(gaps, delays, strict=True):
        assert delay - 0.01 <= gap < delay + 0.5
    assert fatal["exit_status"] == 3
    # FATAL is not forever: `start NAME` tries again (and reports the failure)
    again = sv.cli("start", "crash")
    assert again.returncode == 1
    assert "crash FATAL" in again.stderr
    assert len(attempts.read_text().split()) == 8


def write_stubborn_program(directory: Path) -> tuple[Path, Path]:
    """A program that ignores SIGTERM and has a child that does too; it writes both pids."""
    pids = directory / "pids"
    script = directory / "stubborn.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        with open({str(pids)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(600)
        """))
    return script, pids


def test_stop_kills_group_that_ignores_sigterm(sv: Sv) -> None:
    script, pids = write_stubborn_program(sv.dir)
    sv.write(f"""
        [program:stubborn]
        command = {sys.executable} {script}
        startsecs = 0
        stopwaitsecs = 0.5
        """)
    sv.cli("start", check=True)
    leader, grandchild = map(int, wait_for(lambda: pids.exists() and pids.read_text().split(),
                                           10, message="pids written"))
    started = time.monotonic()
    result = sv.cli("stop", "stubborn", check=True)
    elapsed = time.monotonic() - started
    assert "stubborn: STOPPED" in result.stdout
    assert 0.5 <= elapsed < 3.0
    assert not pid_alive(leader)
    wait_for(lambda: not pid_alive(grandchild), 2, message="grandchild killed")
    assert "sending SIGKILL" in sv.log()


def test_a_member_whose_main_thread_ended_still_holds_the_stop(sv: Sv) -> None:
    """/proc shows a process whose main thread called pthread_exit as a zombie (Z) while its
    other threads run: the stop must not take it for an exited one and leave it behind."""
    member_pid = sv.dir / "member.pid"
    member = sv.dir / "member.py"
    member.write_text(textwrap.dedent(f"""
        import ctypes, os, signal, threading, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        threading.Thread(target=time.sleep, args=(600,)).start()
        with open({str(member_pid)!r}, "w") as f:
            f.write(str(os.getpid()))
        ctypes.CDLL(None).pthread_exit(None)  # the main thread goes; the process runs on
        """))
    sv.write(f"""
        [program:threads]
        command = sh -c '{sys.executable} {member} & sleep 600'
        startsecs = 0
        stopwaitsecs = 1
        """)
    sv.cli("start", check=True)
    pid = int(wait_for(lambda: member_pid.exists() and member_pid.read_text(), 10,
                       message="member started"))
    try:
        wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                 == "Z", 10, message="its main thread gone")
        result = sv.cli("stop", "threads", check=True)
        assert "threads: STOPPED" in result.stdout
        assert not threads_run(pid), "the stop left a running member of the group"
        assert "sending SIGKILL" in sv.log()  # it ignores SIGTERM: the stop waited for it
    finally:
        if threads_run(pid):
            os.kill(pid, signal.SIGKILL)


def threads_run(pid: int) -> bool:
    """Any thread of ``pid`` runs (pid_alive looks at the main thread only)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            state = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1]
        except FileNotFoundError:
            continue
        if state.split()[0] not in ("Z", "X"):
            return True
    return False


def test_reload_applies_only_the_difference(sv: Sv) -> None:
    base = textwrap.dedent("""
        [program:keep]
        command = sleep 601
        startsecs = 0

        [program:change]
        command = sleep 602
        startsecs = 0

        [program:gone]
        command = sleep 603
        startsecs = 0

        [program:pool]
        command = sleep 604
        numprocs = 2
        startsecs = 0
        """)
    sv.write(base)
    sv.cli("start", check=True)
    wait_for(lambda: all(p["state"] == "RUNNING" for p in sv.status().values()), 10,
             message="all running")
    before = sv.status()
    assert set(before) == {"keep", "change", "gone", "pool:0", "pool:1"}

    sv.write(base.replace("sleep 602", "sleep 612")
             .replace("[program:gone]\ncommand = sleep 603\nstartsecs = 0\n", "")
             .replace("numprocs = 2", "numprocs = 3")
             + "\n[program:added]\ncommand = sleep 605\nstartsecs = 0\n")
    result = sv.cli("reload", check=True)
    assert result.stdout.splitlines() == ["added: added", "changed: change", "removed: gone",
                                          "scaled: pool 2->3"]
    after = wait_for(lambda: (s := sv.status()) and all(p["state"] == "RUNNING"
                                                        for p in s.values()) and s, 10)
    assert set(after) == {"keep", "change", "added", "pool:0", "pool:1", "pool:2"}
    assert after["keep"]["pid"] == before["keep"]["pid"]
    assert after["pool:0"]["pid"] == before["pool:0"]["pid"]
    assert after["pool:1"]["pid"] == before["pool:1"]["pid"]
    assert after["change"]["pid"] != before["change"]["pid"]
    assert not pid_alive(before["change"]["pid"])
    assert not pid_alive(before["gone"]["pid"])

    # scale down in place via SIGHUP: the highest instances go, pool:0 stays (now "pool":
    # the default name of a single instance)
    sv.ini.write_text(sv.ini.read_text().replace("numprocs = 3", "numprocs = 1"))
    os.kill(sv.supervisor_pid(), signal.SIGHUP)
    wait_for(lambda: set(sv.status()) == {"keep", "change", "added", "pool"}, 10,
             message="pool scaled to 1")
    assert sv.status()["pool"]["pid"] == before["pool:0"]["pid"]
    assert not pid_alive(after["pool:1"]["pid"])
    assert not pid_alive(after["pool:2"]["pid"])


def test_invalid_config_on_reload_keeps_old_one(sv: Sv) -> None:
    sv.write("[program:a]\ncommand = sleep 600\nstartsecs = 0\n")
    sv.cli("start", check=True)
    pid = sv.wait_state("a", "RUNNING")["pid"]
    sv.ini.write_text(sv.ini.read_text().replace("sv.log", "other.log"))
    noted = sv.cli("reload", check=True).stdout.splitlines()
    assert noted[-1] == "note: [supervisor] logfile changed: restart the supervisor to apply"
    sv.ini.write_text(sv.ini.read_text() + "[program:b]\ncommand = x\nstartsecs = soon\n")
    result = sv.cli("reload")
    assert result.returncode == 1
    assert f"{sv.ini}: [program:b] startsecs: 'soon' is not a number" in result.stderr
    os.kill(sv.supervisor_pid(), signal.SIGHUP)  # the signal path refuses it too
    wait_for(lambda: "reload failed, keeping the old state" in sv.log(), 5)
    assert set(sv.status()) == {"a"}
    assert sv.status()["a"]["pid"] == pid
    # and `start` refuses such a file outright (LSB 6)
    sv.cli("stop", check=True)
    refused = sv.cli("start")
    assert refused.returncode == 6
    assert "[program:b] startsecs" in refused.stderr


def test_sigkilled_supervisor_leaves_no_children(sv: Sv) -> None:
    sv.write("""
        [program:w]
        command = sleep 600
        numprocs = 3
        startsecs = 0
        """)
    sv.cli("start", check=True)
    wait_for(lambda: all(p["state"] == "RUNNING" for p in sv.status().values()), 10)
    children = [p["pid"] for p in sv.status().values()]
    supervisor = sv.supervisor_pid()
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(pid) for pid in children), 5,
             message="children got PR_SET_PDEATHSIG")
    assert tagged_pids(sv.tag) == []
    sv.cli("start", check=True)  # the stale pidfile is not a problem
    assert len(sv.status()) == 3
    sv.cli("stop", check=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs children as nobody)")


@needs_root
def test_control_socket_refuses_another_uid(sv: Sv, world_runtime: WorldRuntime,
                                            world_tmp: Path) -> None:
    sv.dir = world_tmp
    sv.ini = world_tmp / "sv.ini"
    sv.write("[program:a]\ncommand = sleep 600\nstartsecs = 0\n")
    sv.ini.chmod(0o644)
    sv.cli("start", check=True)
    socket_path = world_tmp / "sv.ctl"
    assert (socket_path.stat().st_mode & 0o777) == 0o600
    env = {**world_runtime.env, "DAEMONKIT_TEST_TAG": sv.tag}
    refused = sv.cli("status", "a", python=world_runtime.python, user="nobody", env=env)
    assert refused.returncode == 4, refused
    assert "permission denied" in refused.stderr
    # even with the file mode opened up, the peer uid check refuses nobody
    socket_path.chmod(0o666)
    refused = sv.cli("stop", "a", python=world_runtime.python, user="nobody", env=env)
    assert refused.returncode != 0, refused
    # the core answers the refusal without reading the request, so the client may see its
    # own send fail (EPIPE) before it reads the answer: either way, nothing was done
    assert "may not control" in refused.stderr or "Broken pipe" in refused.stderr
    assert sv.status()["a"]["state"] == "RUNNING"
    sv.cli("stop", check=True)


def test_not_running_is_a_clear_error(sv: Sv) -> None:
    sv.write("[program:a]\ncommand = sleep 600\n")
    result = sv.cli("stop", "a")
    assert result.returncode == 7
    assert "is not running" in result.stderr
    assert sv.cli("status").returncode == 3


def test_notify_ready_gates_running(sv: Sv) -> None:
    go = sv.dir / "go"
    script = sv.dir / "notify.py"
    script.write_text(textwrap.dedent(f"""
        import os, socket, time
        for _ in range(6000):  # until the test says so (at most 60 s)
            if os.path.exists({str(go)!r}):
                break
            time.sleep(0.01)
        address = os.environ["NOTIFY_SOCKET"]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.sendto(b"READY=1", "\\0" + address[1:])
        time.sleep(600)
        """))
    sv.write(f"""
        [program:n]
        command = {sys.executable} {script}
        notify = true
        startsecs = 0.05
        """)
    sv.cli("start", check=True)
    starting = sv.status()["n"]
    assert starting["state"] == "STARTING"  # startsecs passed, but no READY=1 yet
    assert starting["uptime_s"] > 0.05
    go.touch()
    running = sv.wait_state("n", "RUNNING", timeout=5)
    assert running["pid"] == starting["pid"]


def test_logs_reopen_on_sigusr1(sv: Sv) -> None:
    sv.write("""
        [program:talk]
        command = sh -c 'echo started; exec sleep 600'
        startsecs = 0
        stdout_logfile = talk.log
        """)
    sv.cli("start", check=True)
    log = sv.dir / "talk.log"
    wait_for(lambda: log.exists() and log.read_text() == "started\n", 5)
    log.rename(sv.dir / "talk.log.1")  # what logrotate does
    os.kill(sv.supervisor_pid(), signal.SIGUSR1)
    wait_for(lambda: "reopened the log files of 1 instances" in sv.log(), 5)
    sv.cli("restart", "talk", check=True)
    wait_for(lambda: log.exists() and log.read_text() == "started\n", 5,
             message="output in a fresh talk.log")
    assert (sv.dir / "talk.log.1").read_text() == "started\n"


def test_idle_supervisor_sleeps(sv: Sv) -> None:
    sv.write("[program:a]\ncommand = sleep 600\nstartsecs = 0\nnumprocs = 3\n")
    sv.cli("start", check=True)
    wait_for(lambda: all(p["state"] == "RUNNING" for p in sv.status().values()), 10)
    pid = sv.supervisor_pid()

    def switches() -> int:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt")):
                        total += int(line.split()[1])
        return total

    before = switches()
    time.sleep(1.5)  # measuring idleness over a fixed span, not synchronising
    assert switches() - before <= 2  # no tick: every thread sleeps until something happens


def test_two_hundred_programs(sv: Sv) -> None:
    sv.write("".join(f"[program:p{n}]\ncommand = sleep 600\nstartsecs = 0\n\n"
                     for n in range(200)))
    started = time.monotonic()
    sv.cli("start", check=True)
    status = wait_for(lambda: (s := sv.status()) and all(p["state"] == "RUNNING"
                                                          for p in s.values()) and s, 30)
    assert len(status) == 200
    pids = [p["pid"] for p in status.values()]
    sv.cli("stop", check=True, timeout=60)
    assert time.monotonic() - started < 30
    assert not any(pid_alive(pid) for pid in pids)
    assert tagged_pids(sv.tag) == []


def test_crash_loop_backs_off_without_slowing_a_normal_respawn(sv: Sv) -> None:
    spawns = sv.dir / "spawns"
    sv.write(f"""
        [program:loop]
        command = sh -c 'echo x >> {spawns}; exit 1'
        startsecs = 0
        autorestart = true
        backoff_initial = 0.1
        backoff_max = 0.4
        """)
    sv.cli("start", check=True)
    wait_for(lambda: "crash loop" in sv.log(), 5, message="crash loop detected")
    window_start = len(spawns.read_text().split())
    time.sleep(1.5)  # a fixed observation window: how many spawns happen in it
    in_window = len(spawns.read_text().split()) - window_start
    assert 2 <= in_window <= 8  # backing off (0.1, 0.2, 0.4, 0.4 ...), not hundreds
    assert sv.status()["loop"]["state"] in ("BACKOFF", "RUNNING", "EXITED")


def test_new_supervisor_kills_strays_of_a_sigkilled_one(sv: Sv) -> None:
    pids = sv.dir / "pids"
    script = sv.dir / "forker.py"
    script.write_text(textwrap.dedent(f"""
        import os, subprocess, sys, time
        helper = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        with open({str(pids)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{helper.pid}}")
        time.sleep(600)
        """))
    sv.write(f"[program:f]\ncommand = {sys.executable} {script}\nstartsecs = 0\n")
    sv.cli("start", check=True)
    leader, helper = map(int, wait_for(lambda: pids.exists() and pids.read_text().split(),
                                       10, message="pids written"))
    pids.unlink()
    os.kill(sv.supervisor_pid(), signal.SIGKILL)
    wait_for(lambda: not pid_alive(leader), 5, message="leader got PR_SET_PDEATHSIG")
    assert pid_alive(helper)  # the helper ignores SIGTERM and had no death signal
    sv.cli("start", check=True)
    assert not pid_alive(helper)
    assert "left by a previous supervisor" in sv.log()
    new_leader = int(wait_for(lambda: pids.exists() and pids.read_text().split(), 10)[0])
    assert new_leader != leader


def test_size_rotation(tmp_path: Path) -> None:
    from daemonkit.supervisor.logfile import LogFile

    log = LogFile(str(tmp_path / "out.log"), maxbytes=10, backups=2)
    for chunk in (b"aaaaaaaa\n", b"bbbbbbbb\n", b"cccccccc\n", b"dddddddd\n"):
        log.write(chunk)
    log.close()
    assert (tmp_path / "out.log").read_bytes() == b"dddddddd\n"
    assert (tmp_path / "out.log.1").read_bytes() == b"cccccccc\n"
    assert (tmp_path / "out.log.2").read_bytes() == b"bbbbbbbb\n"
    assert not (tmp_path / "out.log.3").exists()


def test_web_page_serves_the_supervisor_api(sv: Sv) -> None:
    import socket
    import urllib.request

    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    sv.write("[program:a]\ncommand = sleep 600\nstartsecs = 0\n",
             header=f"[web]\nlisten = 127.0.0.1:{port}\n")
    sv.cli("start", check=True)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as reply:
        status = json.loads(reply.read())
    assert status["pid"] == sv.supervisor_pid()
    assert [p["name"] for p in status["programs"]] == ["a"]
    sv.cli("stop", check=True)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2)


def test_spawn_error_is_reported_and_fatal(sv: Sv) -> None:
    sv.write("""
        [program:missing]
        command = /nonexistent/daemon --flag
        startretries = 1
        backoff_initial = 0.05
        """)
    sv.cli("start", check=True)  # the supervisor itself starts; the program cannot
    fatal = sv.wait_state("missing", "FATAL", timeout=5)
    assert fatal["error"] == "spawn error: can't find command '/nonexistent/daemon'"
    assert fatal["pid"] is None
    result = sv.cli("start", "missing")
    assert result.returncode == 1
    assert "spawn error" in result.stderr


@needs_root
def test_user_directory_umask_and_own_session(sv: Sv, world_tmp: Path) -> None:
    workdir = world_tmp / "work"  # nobody may enter it (pytest's own tmp is root's alone)
    workdir.mkdir()
    sv.write(f"""
        [program:as_nobody]
        command = sleep 600
        user = nobody
        directory = {workdir}
        umask = 027
        startsecs = 0
        """)
    sv.cli("start", check=True)
    pid = sv.wait_state("as_nobody", "RUNNING")["pid"]
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert fields["Uid"].split()[0] == nobody
    assert fields["Umask"] == "0027"
    assert int(fields["SigIgn"], 16) == 0  # no ignored signal leaks from the daemon
    assert int(fields["SigBlk"], 16) == 0
    assert os.readlink(f"/proc/{pid}/cwd") == str(workdir)
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid  # own session and group
    with open(f"/proc/{pid}/environ", "rb") as environ:
        env = dict(item.split(b"=", 1) for item in environ.read().split(b"\0") if b"=" in item)
    assert env[b"USER"] == b"nobody"
    assert env[b"DAEMONKIT_PROGRAM"] == b"as_nobody"
    assert env[b"DAEMONKIT_PROCESS_NUM"] == b"0"



@needs_root
def test_a_directory_the_user_may_not_enter_fails_the_start(sv: Sv) -> None:
    """supervisord changes user first, then directory; subprocess does it the other way
    round, which let a program as nobody run in root's private directory."""
    private = sv.dir / "private"
    private.mkdir(mode=0o700)
    sv.write(f"""
        [program:locked_out]
        command = sleep 600
        user = nobody
        directory = {private}
        startretries = 1
        backoff_initial = 0.05
        """)
    sv.cli("start", check=True)
    fatal = sv.wait_state("locked_out", "FATAL", timeout=5)
    assert fatal["error"] == f"spawn error: couldn't chdir to {private}: EACCES"
    assert fatal["pid"] is None

def test_may_enter_walks_every_directory_and_every_link(world_tmp: Path) -> None:
    """As the kernel does for a chdir: each directory on the path, the path as written and
    the one its symlinks lead to (a private parent or a link in a private directory)."""
    from daemonkit.supervisor.process import may_enter

    nobody = 65534
    open_dir = world_tmp / "open"
    open_dir.mkdir(mode=0o755)
    private = world_tmp / "private"
    private.mkdir(mode=0o700)
    (private / "inner").mkdir(mode=0o755)
    (private / "link").symlink_to(open_dir)
    (open_dir / "to-private").symlink_to(private / "inner")
    assert may_enter(str(open_dir), nobody, {nobody})
    assert not may_enter(str(private / "inner"), nobody, {nobody})  # the parent's bits
    assert not may_enter(str(private / "link"), nobody, {nobody})  # reached through private
    assert not may_enter(str(open_dir / "to-private"), nobody, {nobody})  # leads into it
    assert may_enter(str(private / "inner"), os.geteuid(), {os.getegid()})  # its owner

def until_released(release: Path) -> str:
    """A program's command that ignores SIGTERM and runs until ``release`` exists: it stops
    when the test is done looking at it, not after a number of seconds."""
    return f"sh -c 'trap \"\" TERM; while [ ! -e {release} ]; do sleep 0.05; done'"


def test_status_while_the_supervisor_stops_is_running_lsb_0(sv: Sv) -> None:
    """The README's table: status exits 0 while stopping; it used to exit 4 ("cannot
    supervisor-status: stopping") for as long as a program took to stop. A change asked
    meanwhile is refused in words, not as "cannot supervisor-reload: stopping"."""
    release = sv.dir / "release"  # the program ignores SIGTERM, and ends once this exists
    sv.write(f"""
        [program:stubborn]
        command = {until_released(release)}
        startsecs = 0
        stopwaitsecs = 60
        """)
    sv.cli("start", check=True)
    sv.wait_state("stubborn", "RUNNING")
    stopping = subprocess.Popen([sys.executable, "-m", "daemonkit", "supervise", "-c",
                                 str(sv.ini), "stop"], cwd=sv.dir, env=sv.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen: list[subprocess.CompletedProcess[str]] = []

        def stopping_seen() -> bool:
            seen.append(sv.cli("status"))
            return "stopping" in seen[-1].stdout

        wait_for(stopping_seen, 10, message="status never said stopping")
        assert seen[-1].returncode == 0, seen[-1]
        named = sv.cli("status", "stubborn")
        assert named.returncode == 3, named  # its programs are being stopped: not RUNNING
        assert all(result.returncode in (0, 3) for result in seen), seen
        refusals = {verb: sv.cli(*verb.split()) for verb in ("reload", "start stubborn",
                                                             "update")}
        assert {verb: (r.returncode, r.stderr) for verb, r in refusals.items()} == {
            "reload": (1, f"{PROG}: reload failed: the supervisor is shutting down\n"),
            "start stubborn": (1, f"{PROG}: the supervisor is shutting down\n"),
            "update": (1, f"{PROG}: SHUTDOWN_STATE: the supervisor is shutting down\n")}
        assert stopping.poll() is None  # all of it while the program was stopping
    finally:
        release.touch()
        try:
            assert stopping.wait(30) == 0
        finally:
            stopping.kill()  # a no-op once it has exited
            stopping.wait()

def test_status_shows_a_removed_program_until_it_has_stopped(sv: Sv) -> None:
    """A reload removed a program that takes its stopwaitsecs to stop: status showed only
    the programs of the new file, as if it were gone, while it still ran (found in a
    black-box trial)."""
    keep = """
        [program:keep]
        command = sleep 1000
        startsecs = 0
        """
    release = sv.dir / "release"  # the program ignores SIGTERM, and ends once this exists
    sv.write(keep + f"""
        [program:stubborn]
        command = {until_released(release)}
        startsecs = 0
        stopwaitsecs = 60
        """)
    sv.cli("start", check=True)
    stubborn = sv.wait_state("stubborn", "RUNNING")["pid"]
    sv.write(keep)
    try:
        assert "removed: stubborn" in sv.cli("reload", check=True).stdout
        shown = sv.cli("status", check=True).stdout.splitlines()
        assert any(line.split()[:3] == ["stubborn", "STOPPING", str(stubborn)]
                   for line in shown), shown
        assert shown[-1] == "stubborn: removed, stopping", shown
        as_json = json.loads(sv.cli("status", "--json", check=True).stdout)
        assert [(p["name"], p["state"]) for p in as_json["removed"]] == [
            ("stubborn", "STOPPING")]
        assert [p["name"] for p in as_json["programs"]] == ["keep"]
    finally:
        release.touch()
    wait_for(lambda: not pid_alive(stubborn), 15, message="stubborn ended")
    wait_for(lambda: json.loads(sv.cli("status", "--json", check=True).stdout)["removed"] == [],
             5, message="no longer shown once it exited")
    assert "stubborn" not in sv.cli("status", check=True).stdout


def test_notify_program_without_ready_fails_its_start(sv: Sv) -> None:
    spawns = sv.dir / "spawns"
    sv.write(f"""
        [program:mute]
        command = sh -c 'echo x >> {spawns}; exec sleep 600'
        notify = true
        ready_timeout = 0.3
        startretries = 1
        backoff_initial = 0.05
        stopwaitsecs = 1
        """)
    sv.cli("start", check=True)
    fatal = sv.wait_state("mute", "FATAL", timeout=10)
    assert len(spawns.read_text().split()) == 2
    assert fatal["pid"] is None
    assert "no READY=1 within ready_timeout=0.3s" in sv.log()


def test_supervisor_stop_takes_stubborn_groups_down(sv: Sv) -> None:
    script, pids = write_stubborn_program(sv.dir)
    sv.write(f"""
        [program:stubborn]
        command = {sys.executable} {script}
        startsecs = 0
        stopwaitsecs = 0.5

        [program:polite]
        command = sleep 600
        startsecs = 0
        """)
    sv.cli("start", check=True)
    leader, grandchild = map(int, wait_for(lambda: pids.exists() and pids.read_text().split(),
                                           10, message="pids written"))
    polite = sv.wait_state("polite", "RUNNING")["pid"]
    supervisor = sv.supervisor_pid()
    sv.cli("stop", check=True)
    assert not pid_alive(supervisor)
    assert not any(pid_alive(pid) for pid in (leader, grandchild, polite))
    assert tagged_pids(sv.tag) == []


def test_auto_logs_environment_and_warnings(sv: Sv) -> None:
    """A supervisord file: output goes to AUTO files in childlogdir (stderr too when only
    stdout_logfile is set), [supervisord] environment reaches the children, ignored keys are
    warned once."""
    sv.ini.write_text(textwrap.dedent("""
        [supervisord]
        pidfile = %(here)s/sv.pid
        logfile = sv.log
        childlogdir = %(here)s/children
        loglevel = debug
        nodaemon = true
        environment = SHARED="s",OVERRIDE="global"

        [program:a]
        command = sh -c 'echo "out $SHARED $OVERRIDE"; echo "err a" >&2; exec sleep 600'
        environment = OVERRIDE="own"
        startsecs = 0

        [program:b]
        command = sh -c 'echo "err b" >&2; exec sleep 600'
        stdout_logfile = b.log
        startsecs = 0

        """))
    sv.cli("start", check=True)
    sv.wait_state("a", "RUNNING")
    sv.wait_state("b", "RUNNING")
    children = sv.dir / "children"
    wait_for(lambda: (children / "a-stdout---supervisor.log").exists()
             and (children / "b-stderr---supervisor.log").exists()
             and (children / "a-stderr---supervisor.log").exists(), 5, message="AUTO logs")
    wait_for(lambda: (children / "b-stderr---supervisor.log").read_text() == "err b\n", 5)
    assert (children / "a-stdout---supervisor.log").read_text() == "out s own\n"
    wait_for(lambda: (children / "a-stderr---supervisor.log").read_text() == "err a\n", 5)
    log = sv.log()
    assert log.count("[supervisord] nodaemon: accepted and ignored") == 1
    assert " DEBUG " in log  # loglevel = debug is the supervisor's log level


def test_groups_take_supervisorctl_names(sv: Sv) -> None:
    sv.write("""
        [program:a]
        command = sleep 600
        startsecs = 0

        [program:b]
        command = sleep 601
        startsecs = 0

        [program:other]
        command = sleep 602
        startsecs = 0

        [group:g]
        programs = a,b
        """)
    sv.cli("start", check=True)
    sv.wait_state("b", "RUNNING")
    assert sv.cli("stop", "g:a", check=True).stdout.split()[:2] == ["a:", "STOPPED"]
    assert sv.status()["b"]["state"] == "RUNNING"
    assert sv.cli("status", "g").returncode == 3  # a is stopped
    assert sv.cli("start", "g:*", check=True).returncode == 0
    grouped = sv.cli("status", "--json", "g", check=True)
    assert {p["state"] for p in json.loads(grouped.stdout)["programs"]} == {"RUNNING"}
    assert sv.cli("stop", "g", check=True).returncode == 0
    states = {name: p["state"] for name, p in sv.status().items()}
    assert states == {"a": "STOPPED", "b": "STOPPED", "other": "RUNNING"}
    assert sv.cli("start", "g:nope").returncode == 1


def test_start_after_reload_waits_for_the_old_process(sv: Sv) -> None:
    """The old config's process, still inside stopwaitsecs, shows as STOPPING with its pid,
    and `start NAME` spawns the new one only once the old one is gone."""
    sv.write("""
        [program:w]
        command = sh -c "trap '' TERM; exec sleep 600"
        startsecs = 0
        stopwaitsecs = 1.5
        """)
    sv.cli("start", check=True)
    old = sv.wait_state("w", "RUNNING")["pid"]
    # the new command records whether the old process was still alive when it started
    sv.write(f"""
        [program:w]
        command = sh -c "kill -0 {old} 2>/dev/null && touch {sv.dir}/overlap; exec sleep 601"
        startsecs = 0
        stopwaitsecs = 1.5
        """)
    assert sv.cli("reload", check=True).stdout.splitlines()[1] == "changed: w"
    shown = sv.status()["w"]
    assert (shown["state"], shown["pid"]) == ("STOPPING", old)
    table = sv.cli("status", "w").stdout.splitlines()
    assert table[1].split()[:3] == ["w", "STOPPING", str(old)]
    started = sv.cli("start", "w", check=True)
    assert started.stdout.startswith("w: RUNNING (pid ")
    assert not pid_alive(old)
    assert not (sv.dir / "overlap").exists()
    assert sv.status()["w"]["pid"] != old


def scale(sv: Sv, program: str, delta: int) -> dict[str, Any]:
    from daemonkit.control import control_path_for, request

    answer: dict[str, Any] = request(
        control_path_for(str(sv.dir / "sv.pid")),
        {"cmd": "supervisor-scale", "program": program, "delta": delta}, 30.0)
    return answer


def test_reload_restores_numprocs_after_runtime_scale(sv: Sv) -> None:
    sv.write("[program:w]\ncommand = sleep 600\nstartsecs = 0\n")
    sv.cli("start", check=True)
    first = sv.wait_state("w", "RUNNING")["pid"]
    assert scale(sv, "w", 2)["error"] == "delta must be 1 or -1, got 2"
    assert scale(sv, "w", 1)["ok"]
    sv.wait_state("w:1", "RUNNING")
    reloaded = sv.cli("reload", check=True).stdout.splitlines()
    assert "scaled: w 2->1" in reloaded
    assert set(sv.status()) == {"w"}
    assert sv.status()["w"]["pid"] == first
    # scaled to zero, the program stays known: no instances, status NAME exits 3
    assert scale(sv, "w", -1)["ok"]
    empty = sv.cli("status", "w")
    assert empty.returncode == 3, empty.stderr
    assert "w: no instances (scaled to 0)" in empty.stdout
    assert json.loads(sv.cli("status", "--json", "w").stdout)["programs"] == []
    assert not pid_alive(first)


def test_status_exit_codes_spawn_error_line_and_stopped_json(sv: Sv) -> None:
    """A failed chdir or exec is told in supervisord's words, in the status and where
    supervisord's child writes it: the program's stderr log (its stdout log when redirected).
    (A command spawned through setpriv fails its exec there: setpriv says why in the same log,
    and the start fails as supervisord's does, "Exited too quickly".)"""
    no_shebang = sv.dir / "no-shebang"
    no_shebang.write_text("#!/nonexistent/interpreter\n")
    no_shebang.chmod(0o755)
    sv.write(f"""
        [program:up]
        command = sleep 600
        startsecs = 0

        [program:idle]
        command = sleep 600
        autostart = false

        [program:nodir]
        command = sleep 600
        directory = /nonexistent-dir
        startretries = 0
        stderr_logfile = nodir.err

        [program:noexec]
        command = {no_shebang}
        directory = {sv.dir}
        startretries = 0
        redirect_stderr = true
        stdout_logfile = noexec.log
        """)
    stopped = sv.cli("status", "--json")
    assert stopped.returncode == 3
    shape = json.loads(stopped.stdout)
    assert (shape["pid"], shape["programs"], shape["running"]) == (None, [], False)
    sv.cli("start", check=True)
    sv.wait_state("nodir", "FATAL")
    sv.wait_state("noexec", "FATAL")
    assert (sv.dir / "nodir.err").read_text() == (
        "supervisor: couldn't chdir to /nonexistent-dir: ENOENT\n")
    assert (sv.dir / "noexec.log").read_text() == (
        f"supervisor: couldn't exec {no_shebang}: ENOENT\n")
    running = json.loads(sv.cli("status", "--json", check=True).stdout)
    assert set(shape) >= set(running)  # the same keys, stopped or running
    assert sv.cli("status", "up").returncode == 0
    assert sv.cli("status", "idle").returncode == 3
    assert sv.cli("status", "up", "idle").returncode == 3
    text = sv.cli("status").stdout
    assert re.search(r"^nodir: spawn error: couldn't chdir to /nonexistent-dir: ENOENT$", text,
                     re.MULTILINE), text


def test_stop_and_status_without_the_config_file_say_so(sv: Sv) -> None:
    """With its file moved away, stop and status looked for the supervisor at the default
    pidfile and said "is not running" (stop exiting 0) while it ran on (found in a
    black-box trial). They now say they cannot read the file, exit 6, and touch nothing."""
    sv.write("[program:sleeper]\ncommand = sleep 1000\nstartsecs = 0\n")
    sv.cli("start", check=True)
    supervisor = sv.supervisor_pid()
    assert supervisor is not None
    moved = sv.ini.with_name("sv.ini.away")
    sv.ini.rename(moved)
    try:
        for action in ("stop", "status", "pid"):
            result = sv.cli(action)
            assert result.returncode == 6, (action, result)
            assert f"cannot read {sv.ini}: No such file or directory" in result.stderr, result
            assert "not running" not in result.stdout + result.stderr
        assert pid_alive(supervisor)
    finally:
        moved.rename(sv.ini)
    assert sv.cli("stop").returncode == 0
    assert not pid_alive(supervisor)
