"""Nothing in a config, nor a hostile local user, wedges or crashes the supervisor (issue 14, 4).

Each test is an attack found by an adversarial trial, run against a real supervisor: bounds
that used to pass validation and then crash the loop, files that used to hang the reader,
and, as user ``nobody`` (``runuser``), links and FIFOs planted where a root supervisor
writes its children's logs.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest
from helpers import Sv, free_port, pid_alive, wait_for

from daemonkit.supervisor import limits
from daemonkit.supervisor.process import QUICK_EXIT_S

DURATION_KEYS = ("startsecs", "stopwaitsecs", "ready_timeout", "backoff_initial",
                 "backoff_max")



def as_nobody(*command: str) -> None:
    """Plant something as user nobody (ln, mkfifo, mkdir: what any local user may run)."""
    subprocess.run(["runuser", "-u", "nobody", "--", *command], check=True, timeout=10)


def one_line_refusal(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 6, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def spawn_times(path: Path) -> list[float]:
    try:
        return [float(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def respawn_latency(sv: Sv, name: str, spawns: Path) -> float:
    """Kill ``name`` with SIGKILL; seconds until its next spawn wrote its time. Each victim
    lives past QUICK_EXIT_S first: quicker exits back off (a crash loop), by design."""
    last = wait_for(lambda: spawn_times(spawns), 10, message=f"{name} spawned")[-1]
    wait_for(lambda: time.time() > last + QUICK_EXIT_S + 0.1, 5, message="a normal uptime")
    before = len(spawn_times(spawns))
    pid = sv.status()[name]["pid"]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    times = wait_for(lambda: spawn_times(spawns)[before:], 10, interval=0.002,
                     message=f"{name} respawned")
    return times[0] - killed_at


VICTIM = """
[program:victim]
command = sh -c 'date +%%s.%%N >> {spawns}; exec sleep 600'
startsecs = 0
autorestart = true
stdout_logfile = NONE
stderr_logfile = NONE
"""


# -- bounds ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e12", "2147484", "1000001"])
def test_every_duration_is_bounded_at_load(sv: Sv, value: str) -> None:
    """``stopwaitsecs = 1e12`` used to load, then ``stop`` crashed the whole supervisor
    (OverflowError in select) and every program stopped."""
    for key in DURATION_KEYS:
        extra = "backoff_max = 1000000\n" if key == "backoff_initial" else ""
        sv.write(f"[program:a]\ncommand = sleep 600\n{key} = {value}\n{extra}")
        one_line_refusal(sv.cli("check"), f"{sv.ini}: [program:a] {key}:")


def test_any_timeout_reaching_select_is_one_the_kernel_takes() -> None:
    """The loop's last guard: whatever arithmetic made a timeout, poll() is given one it
    accepts (a readable pipe makes each call return at once)."""
    import selectors

    read_end, write_end = os.pipe()
    selector = selectors.DefaultSelector()
    try:
        os.write(write_end, b"x")
        selector.register(read_end, selectors.EVENT_READ)
        with pytest.raises(OverflowError):
            selector.select(1e300)  # what stopwaitsecs = 1e300 used to become
        for timeout in (1e300, float("inf"), float("nan"), -1e300, 2.0**31):
            clamped = limits.select_timeout(timeout)
            assert clamped is not None and 0.0 <= clamped <= limits.MAX_SELECT_S
            assert len(selector.select(clamped)) == 1
        assert limits.select_timeout(None) is None
    finally:
        selector.close()
        os.close(read_end)
        os.close(write_end)


def test_backoff_after_thousands_of_quick_exits_stays_at_backoff_max(tmp_path: Path) -> None:
    """Quick exits count without end (a crash loop is never FATAL); after 1,025 of them
    ``backoff_initial * 2 ** n`` overflowed a float and the loop died with it."""
    from types import SimpleNamespace

    from daemonkit.supervisor import config
    from daemonkit.supervisor.process import Instance

    ini = tmp_path / "sv.ini"
    ini.write_text("[program:a]\ncommand = sleep 1\nbackoff_max = 30\n")
    program = config.load(str(ini)).programs["a"]
    holder = SimpleNamespace(program=program)  # all the delay reads of its instance
    for attempt in (1, 1025, 10**6):
        delay = Instance._backoff_delay(holder, attempt)  # type: ignore[arg-type]
        assert 0 < delay <= 30 * 1.1


def test_longest_stopwaitsecs_allowed_never_reaches_select_unclamped(sv: Sv) -> None:
    """At the bound, a stop that waits keeps the loop serving: another program respawns."""
    spawns = sv.dir / "spawns"
    sv.write(f"""
[program:stubborn]
command = sh -c 'trap "" TERM; exec sleep 600'
startsecs = 0
stopwaitsecs = {int(limits.MAX_DURATION_S)}
{VICTIM.format(spawns=spawns)}""")
    sv.cli("start", check=True)
    stubborn = sv.wait_state("stubborn", "RUNNING")["pid"]
    sv.wait_state("victim", "RUNNING")
    stopping = subprocess.Popen(
        [sys.executable, "-m", "daemonkit", "supervise", "-c", str(sv.ini), "stop",
         "stubborn"], cwd=sv.dir, env=sv.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sv.wait_state("stubborn", "STOPPING")
        assert respawn_latency(sv, "victim", spawns) < 0.5
        assert pid_alive(sv.supervisor_pid())
        sv.ini.write_text(sv.ini.read_text().replace(
            f"stopwaitsecs = {int(limits.MAX_DURATION_S)}", "stopwaitsecs = 1e12"))
        refused = sv.cli("reload")
        assert refused.returncode != 0 and "stopwaitsecs: out of range" in refused.stderr
        os.kill(stubborn, signal.SIGKILL)  # ends the stop
        assert stopping.wait(20) == 0, stopping.communicate()
    finally:
        if stopping.poll() is None:
            stopping.kill()
            stopping.wait()
    assert sv.status()["stubborn"]["state"] == "STOPPED"
    sv.cli("stop", check=True)


def test_huge_counts_are_refused_at_once(sv: Sv) -> None:
    """numprocs = 10**20 used to spin for minutes at 657 MB; minfds = 10**23 crashed start."""
    cases = {
        "[program:a]\ncommand = sleep 1\nnumprocs = 99999999999999999999\n"
        "process_name = a%(process_num)s\n": "[program:a] numprocs: out of range",
        f"[program:a]\ncommand = sleep 1\nnumprocs = {limits.MAX_NUMPROCS + 1}\n"
        "process_name = a%(process_num)s\n": "[program:a] numprocs: out of range",
        "[program:a]\ncommand = sleep 1\nnumprocs = 6000\nprocess_name = a%(process_num)s\n"
        "[program:b]\ncommand = sleep 1\nnumprocs = 6000\nprocess_name = b%(process_num)s\n":
            "processes in all (the limit)",
        "[program:a]\ncommand = sleep 1\nstartretries = 10000000000\n":
            "[program:a] startretries: out of range",
        "[program:a]\ncommand = sleep 1\nstdout_logfile_backups = 10000000000\n":
            "stdout_logfile_backups: out of range",
        "[program:a]\ncommand = sleep %(process_num)0999999999d\n": "field width",
    }
    for programs, expected in cases.items():
        sv.write(programs)
        began = time.monotonic()
        one_line_refusal(sv.cli("check"), expected)
        assert time.monotonic() - began < 5
    sv.write("[program:a]\ncommand = sleep 1\n", header="minfds = 99999999999999999999999")
    one_line_refusal(sv.cli("start"), "[supervisor] minfds: out of range")


def test_files_that_never_end_or_never_open_are_refused(sv: Sv) -> None:
    """``[include] files = /dev/zero`` read without end (also in status); an included FIFO
    hung start and stop; a 100 MB value took 120 s."""
    fifo = sv.dir / "more.conf"
    os.mkfifo(fifo)
    big = sv.dir / "big.conf"
    with big.open("w") as handle:
        handle.write("[program:big]\ncommand = sleep 1\nenvironment = A=")
        handle.write("x" * (100 * 1024 * 1024))
    long_value = sv.dir / "long.conf"
    long_value.write_text("[program:long]\ncommand = sleep " + "x" * 100_000 + "\n")
    for include, expected in (("/dev/zero", "/dev/zero: cannot read: not a regular file"),
                              (str(fifo), "more.conf: cannot read: not a regular file"),
                              (str(big), "big.conf: cannot read: larger than"),
                              (str(long_value), "[program:long] command: value longer than")):
        sv.write(f"[include]\nfiles = {include}\n[program:a]\ncommand = sleep 600\n")
        began = time.monotonic()
        one_line_refusal(sv.cli("start"), expected)
        assert time.monotonic() - began < 10
    # a running supervisor whose file now includes /dev/zero, then the FIFO: status, reload
    # and stop answer at once
    sv.write("[program:a]\ncommand = sleep 600\nstartsecs = 0\n")
    sv.cli("start", check=True)
    pid = sv.wait_state("a", "RUNNING")["pid"]
    for include in ("/dev/zero", str(fifo)):
        sv.write(f"[include]\nfiles = {include}\n[program:a]\ncommand = sleep 600\n"
                 "startsecs = 0\n")
        began = time.monotonic()
        assert sv.status()["a"]["pid"] == pid
        reload = sv.cli("reload")
        assert reload.returncode != 0 and "not a regular file" in reload.stderr
        assert time.monotonic() - began < 10
    began = time.monotonic()
    sv.cli("stop", check=True)
    assert time.monotonic() - began < 15


def test_non_utf8_and_nul_are_one_line_errors(sv: Sv) -> None:
    sv.write("[program:a]\ncommand = sleep 600\nstartsecs = 0\n")
    good = sv.ini.read_bytes()
    sv.ini.write_bytes(good.replace(b"sleep 600", b"sleep 600 \xff\xfe"))
    one_line_refusal(sv.cli("start"), f"{sv.ini}: line 6: not UTF-8 text")
    sv.ini.write_bytes(good.replace(b"sleep 600", b"sleep 600\x00"))
    one_line_refusal(sv.cli("check"), f"{sv.ini}: line 6: NUL character")
    # and on a running supervisor, reload and SIGHUP refuse both; it keeps running
    sv.ini.write_bytes(good)
    sv.cli("start", check=True)
    pid = sv.wait_state("a", "RUNNING")["pid"]
    for bad in (b"sleep 600 \xff", b"sleep 600\x00"):
        sv.ini.write_bytes(good.replace(b"sleep 600", bad))
        refused = sv.cli("reload")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused
    os.kill(sv.supervisor_pid(), signal.SIGHUP)
    wait_for(lambda: "reload failed, keeping the old state" in sv.log(), 10)
    assert sv.status()["a"]["pid"] == pid
    sv.cli("stop", check=True)


def test_sighup_reload_of_a_big_config_keeps_respawns_fast(sv: Sv) -> None:
    """The file is read and validated in a thread; the loop keeps respawning meanwhile
    (a reload to numprocs = 100000 used to hold a respawn 9.8 s)."""
    spawns = sv.dir / "spawns"
    victim = VICTIM.format(spawns=spawns)
    sv.write(victim)
    sv.cli("start", check=True)
    sv.wait_state("victim", "RUNNING")
    quiet = [respawn_latency(sv, "victim", spawns) for _ in range(3)]
    # 9,000 instances, each with an environment that takes time to split: seconds of
    # validation, all within the limits
    environment = ",".join(f"K{n}=v{n}" for n in range(60))
    sv.write(victim + f"""
[program:pool]
command = sleep 600
numprocs = 9000
process_name = pool%(process_num)s
autostart = false
environment = {environment}
stdout_logfile = NONE
stderr_logfile = NONE
""")
    os.kill(sv.supervisor_pid(), signal.SIGHUP)
    during = []
    deadline = time.monotonic() + 60
    while f"reloaded {sv.ini}:" not in sv.log():
        during.append(respawn_latency(sv, "victim", spawns))
        assert time.monotonic() < deadline, sv.log()
    assert len(sv.status()) == 9001
    print(f"respawn latency: quiet {max(quiet) * 1000:.1f} ms, during the reload "
          f"{max(during) * 1000:.1f} ms max of {len(during)}")
    assert during and max(during) < 0.5, during
    # the same through the control socket (`reload`), to a changed pool: 9,000 instances
    # replaced, the file read in the child meanwhile
    sv.ini.write_text(sv.ini.read_text().replace("K0=v0", "K0=changed"))
    reloading = subprocess.Popen(
        [sys.executable, "-m", "daemonkit", "supervise", "-c", str(sv.ini), "reload"],
        cwd=sv.dir, env=sv.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    by_control = []
    try:
        while reloading.poll() is None:
            by_control.append(respawn_latency(sv, "victim", spawns))
            assert time.monotonic() < deadline + 60, sv.log()
        assert reloading.wait() == 0, reloading.communicate()
    finally:
        if reloading.poll() is None:
            reloading.kill()
            reloading.wait()
    print(f"during `reload`: {max(by_control) * 1000:.1f} ms max of {len(by_control)}")
    assert by_control and max(by_control) < 0.5, by_control
    sv.cli("stop", check=True)


# -- a hostile local user against the children's logs ---------------------------------------
# The supervisor runs as root; nobody plants in a sticky world-writable directory (world_tmp,
# as /tmp is). secret is a root-only file nobody must get child output appended to.

@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("root only\n")
    path.chmod(0o600)
    return path


def talker(name: str, line: str, log: str) -> str:
    return (f"[program:{name}]\ncommand = sh -c 'echo {line}; exec sleep 600'\n"
            f"startsecs = 0\nstdout_logfile = {log}\nredirect_stderr = true\n")


def test_a_planted_symlink_at_a_log_path_is_never_followed(sv: Sv, world_tmp: Path,
                                                           secret: Path) -> None:
    """A symlink nobody planted at a log's path made the root supervisor append child output
    to a root-only file (and tail / the web page served that file)."""
    planted = world_tmp / "app.log"
    as_nobody("ln", "-s", str(secret), str(planted))
    spawns = sv.dir / "spawns"
    port = free_port()
    sv.write(talker("app", "hello-app", str(planted)) + VICTIM.format(spawns=spawns),
             header=f"[inet_http_server]\nport = 127.0.0.1:{port}\n[supervisor]")
    sv.cli("start", check=True)
    sv.wait_state("app", "RUNNING")
    wait_for(lambda: "app: log file:" in sv.log(), 10, message="the refusal in the log")
    assert f"{planted}: a symlink owned by uid 65534" in sv.log()
    assert secret.read_text() == "root only\n"
    assert planted.is_symlink()
    tail = sv.cli("tail", "app")
    assert tail.returncode != 0 and "root only" not in tail.stdout, tail
    assert "a symlink owned by uid 65534" in tail.stderr
    # nor through supervisord's XML-RPC (supervisorctl tail) or its /logtail/ stream
    rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2").supervisor
    with pytest.raises(xmlrpc.client.Fault) as fault:
        rpc.readProcessStdoutLog("app", 0, 100)
    assert fault.value.faultString == "FAILED"
    assert rpc.tailProcessStdoutLog("app", 0, 100) == ["", 0, False]  # supervisord's answer
    # to a log it cannot read
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/logtail/app", timeout=10)
    assert http_error.value.code == 404
    # the supervisor serves on: a killed program respawns at once
    assert respawn_latency(sv, "victim", spawns) < 0.5
    sv.cli("stop", check=True)
    assert secret.read_text() == "root only\n"


def test_auto_logs_in_a_shared_dir_go_to_a_private_one(sv: Sv, world_tmp: Path,
                                                       secret: Path) -> None:
    """AUTO names in /tmp were predictable: nobody planted them as symlinks beforehand."""
    for channel in ("stdout", "stderr"):
        as_nobody("ln", "-s", str(secret), str(world_tmp / f"app-{channel}---supervisor.log"))
    sv.write("[program:app]\ncommand = sh -c 'echo out; echo err >&2; exec sleep 600'\n"
             "startsecs = 0\n", header=f"childlogdir = {world_tmp}")
    sv.cli("start", check=True)
    sv.wait_state("app", "RUNNING")
    private = world_tmp / f"daemonkit-supervisor-{os.geteuid()}"
    out, err = (private / "app-stdout---supervisor.log", private / "app-stderr---supervisor.log")
    wait_for(lambda: out.exists() and out.read_text() == "out\n", 10, message="stdout log")
    wait_for(lambda: err.exists() and err.read_text() == "err\n", 10, message="stderr log")
    info = private.lstat()
    assert info.st_uid == os.geteuid() and (info.st_mode & 0o777) == 0o700
    assert secret.read_text() == "root only\n"
    assert "out" in sv.cli("tail", "app", check=True).stdout
    sv.cli("stop", check=True)


def test_a_squatted_private_log_dir_is_refused_and_the_supervisor_runs_on(
        sv: Sv, world_tmp: Path, secret: Path) -> None:
    """nobody creates the private directory's name first (a symlink to a directory of
    theirs): the logs are refused with one line; the program and the supervisor run."""
    theirs = world_tmp / "theirs"
    as_nobody("mkdir", str(theirs))
    private = world_tmp / f"daemonkit-supervisor-{os.geteuid()}"
    as_nobody("ln", "-s", str(theirs), str(private))
    spawns = sv.dir / "spawns"
    sv.write("[program:app]\ncommand = sh -c 'echo out; exec sleep 600'\nstartsecs = 0\n"
             + VICTIM.format(spawns=spawns), header=f"childlogdir = {world_tmp}")
    sv.cli("start", check=True)
    sv.wait_state("app", "RUNNING")
    wait_for(lambda: f"{private}: not a directory (planted?)" in sv.log(), 10,
             message="the refusal")
    assert list(theirs.iterdir()) == []
    assert respawn_latency(sv, "victim", spawns) < 0.5
    sv.cli("stop", check=True)


def test_a_planted_fifo_or_file_is_refused_without_blocking(sv: Sv, world_tmp: Path) -> None:
    """A FIFO nobody planted (and holds open, never reading) used to block the loop: no
    respawns, status failed. A regular file of theirs would hand them the output."""
    fifo = world_tmp / "fifo.log"
    as_nobody("mkfifo", str(fifo))
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open, never read: a writer
    # would fill the pipe and wait (who holds it does not matter; nobody owns the FIFO)
    theirs = world_tmp / "theirs.log"
    as_nobody("touch", str(theirs))
    spawns = sv.dir / "spawns"
    try:
        piped = talker("piped", "$(head -c 200000 /dev/zero | tr \\\\0 x)", str(fifo))
        sv.write(piped + talker("handed", "private", str(theirs)) + VICTIM.format(spawns=spawns))
        sv.cli("start", check=True)
        for name in ("piped", "handed"):
            sv.wait_state(name, "RUNNING")
        wait_for(lambda: f"{fifo}: owned by uid 65534" in sv.log()
                 and f"{theirs}: owned by uid 65534" in sv.log(), 10, message="refusals")
        assert theirs.read_text() == ""
        began = time.monotonic()
        assert len(sv.status()) == 3
        assert time.monotonic() - began < 5
        assert respawn_latency(sv, "victim", spawns) < 0.5
        sv.cli("stop", check=True)
    finally:
        os.close(reader)


@pytest.mark.parametrize("planted", ["symlinks", "directory"])
def test_rotation_never_follows_a_planted_backup_name(sv: Sv, world_tmp: Path, secret: Path,
                                                      planted: str) -> None:
    """Rotation renames app.log to app.log.1: nobody planted app.log.1 and .2 as symlinks to
    a root-only file. A rename never follows (the links are replaced); one that cannot be
    done (a directory of theirs in the way) truncates instead: the log stays bounded."""
    log = world_tmp / "app.log"
    for index in (1, 2):
        if planted == "symlinks":
            as_nobody("ln", "-s", str(secret), f"{log}.{index}")
        else:
            as_nobody("mkdir", f"{log}.{index}")
    sv.write("[program:app]\ncommand = sh -c 'while :; do echo 0123456789abcdef; "
             "sleep 0.005; done'\nstartsecs = 0\n"
             f"stdout_logfile = {log}\nstdout_logfile_maxbytes = 1KB\n"
             "stdout_logfile_backups = 2\n")
    sv.cli("start", check=True)
    sv.wait_state("app", "RUNNING")
    backups = [Path(f"{log}.{index}") for index in (1, 2)]
    if planted == "symlinks":
        wait_for(lambda: all(p.exists() and not p.is_symlink() for p in backups), 20,
                 message="two rotations")
        for backup in backups:
            info = backup.lstat()
            assert stat.S_ISREG(info.st_mode) and info.st_uid == 0
            assert 0 < info.st_size <= 1024
    else:
        wait_for(lambda: "rotation failed: truncated instead" in sv.log(), 20,
                 message="a rotation refused")
        assert Path(f"{log}.2").is_dir()  # .1 moved over it once; then .1 (ours) cannot
    wait_for(lambda: log.exists() and 0 < log.stat().st_size <= 1024, 10, message="writing on")
    assert secret.read_text() == "root only\n"
    sv.cli("stop", check=True)


FAKE_SUPERVISOR = """
import os, socket, sys, threading
path = sys.argv[1]
server = socket.socket(socket.AF_UNIX)
server.bind(path)
os.chmod(path, 0o777)
server.listen(8)
def answer():
    while True:
        connection, _ = server.accept()
        connection.makefile("rb").readline()
        connection.sendall(b'{"ok": true, "pid": 1, "programs": [{"name": "evil", '
                           b'"group": "evil", "state": "RUNNING", "pid": 1}], "selected": '
                           b'["evil"]}\\n')
        connection.close()
threading.Thread(target=answer, daemon=True).start()
print("ready", os.getpid(), flush=True)
sys.stdin.read()
"""


def test_a_socket_planted_at_a_stopped_supervisors_control_path_is_not_believed(
        sv: Sv, world_tmp: Path) -> None:
    """With its pidfile in /tmp (supervisord's default is /tmp/supervisord.pid), a stopped
    supervisor's control path is free for anyone: status and the verbs used to ask
    whatever listened there, before looking at the pidfile."""
    sv.ini.write_text(f"[supervisor]\npidfile = {world_tmp}/sv.pid\nlogfile = sv.log\n"
                      "[program:x]\ncommand = sleep 60\n")
    fake = subprocess.Popen(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c",
                             FAKE_SUPERVISOR, str(world_tmp / "sv.ctl")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    word, fake_pid = fake.stdout.readline().split()
    try:
        assert word == "ready"
        status = sv.cli("status")
        assert status.returncode == 3 and "evil" not in status.stdout, status
        named = sv.cli("status", "x")
        assert named.returncode == 3 and "evil" not in named.stdout, named
        pid = sv.cli("pid", "evil")
        assert pid.returncode == 7 and "not running" in pid.stderr, pid
    finally:
        os.kill(int(fake_pid), signal.SIGKILL)  # the Python under runuser, then runuser
        fake.kill()
        fake.wait()
        wait_for(lambda: not pid_alive(int(fake_pid)))
