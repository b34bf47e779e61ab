"""A hostile local user against the core: the control socket, the pidfile, the log file.

Each test is an attack found by an adversarial trial; the attacker runs as ``nobody`` where
the attack needs another user (``runuser``, with an interpreter ``nobody`` may run).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import Service, WorldRuntime, free_port, kill_all, pid_alive, read_pidfile, wait_for

NOBODY = 65534


def control_exchange(path: Path, payload: bytes, timeout: float = 10.0) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(payload)
        reply = sock.makefile("rb").readline()
    answer = json.loads(reply)
    assert isinstance(answer, dict)
    return answer


def test_malformed_control_requests_get_errors_and_the_socket_lives_on(probe: Service) -> None:
    assert probe.cli("start").returncode == 0
    control = probe.workdir / "probe.ctl"
    for payload in (b'{"cmd":"status","timeout":null}\n', b'{"cmd":"status","timeout":[1]}\n',
                    b'{"cmd":"reload","timeout":1e308}\n', b'{"cmd":"reload","timeout":Infinity}\n',
                    b'{"cmd":"wait-ready","timeout":1e10}\n', b"[" * 60000 + b"\n",
                    b'{"cmd":7}\n', b"\xff\xfe\n", b'{"cmd":"status","timeout":true}\n'):
        answer = control_exchange(control, payload)
        assert answer["ok"] is False and answer["error"], (payload[:40], answer)
    oversized = control_exchange(control, b'{"cmd":"status","pad":"' + b"x" * 70000)
    assert oversized == {"ok": False, "error": "request too large"}
    # the control thread is alive: status, reload and start on the running daemon all work
    assert control_exchange(control, b'{"cmd":"status"}\n')["ok"] is True
    assert probe.cli("reload").returncode == 0
    again = probe.cli("start")
    assert again.returncode == 0 and "already running" in again.stdout


def test_trickling_clients_never_hold_the_socket(probe: Service) -> None:
    """Three clients sending a byte every 2 s used to block status for everyone."""
    assert probe.cli("start").returncode == 0
    control = str(probe.workdir / "probe.ctl")
    answers: list[bytes] = []
    stop = threading.Event()

    def trickle() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(control)
            for byte in b'{"cmd":"status"}':
                if stop.wait(2.0):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    break
            sock.settimeout(5)
            answers.append(sock.recv(4096))

    tricklers = [threading.Thread(target=trickle) for _ in range(3)]
    for thread in tricklers:
        thread.start()
    try:
        began = time.monotonic()
        status = probe.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "running"
        assert time.monotonic() - began < 4, "status waited behind the slow clients"
    finally:
        for thread in tricklers:
            thread.join(20)
        stop.set()
    assert len(answers) == 3
    assert all(b"no complete request within 5s" in answer for answer in answers), answers


def test_a_flood_of_silent_clients_makes_room_for_status(probe: Service) -> None:
    assert probe.cli("start").returncode == 0
    control = str(probe.workdir / "probe.ctl")
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(100)]
    try:
        for sock in idle:  # far more than the socket reads at once
            sock.connect(control)
        status = probe.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "running"
        idle[0].settimeout(5)
        assert b"too many clients" in idle[0].recv(4096)  # the oldest made room
    finally:
        for sock in idle:
            sock.close()


def hostile(runtime: WorldRuntime, code: str, *args: str) -> subprocess.Popen[str]:
    """A Python process of user nobody; it prints 'ready' once its attack is in place."""
    process = subprocess.Popen(["runuser", "-u", "nobody", "--", runtime.python, "-c",
                                textwrap.dedent(code), *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=runtime.env)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


@contextmanager
def attacker(runtime: WorldRuntime, code: str, *args: str
             ) -> Iterator[subprocess.Popen[str]]:
    process = hostile(runtime, code, *args)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def probe_command(runtime: WorldRuntime, workdir: Path, pidfile: Path, *args: str
                  ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([runtime.python, str(runtime.root / "services" / "probe.py"), *args,
                           "--pidfile", str(pidfile), "--events", str(workdir / "events.log")],
                          capture_output=True, text=True, env=runtime.env, timeout=60,
                          check=False)


def test_a_pidfile_planted_by_another_user_is_refused(world_runtime: WorldRuntime,
                                                      world_tmp: Path) -> None:
    """In a shared directory, nobody creates the pidfile first, to write its own pid into it
    later (stop would then report success while the daemon runs)."""
    planted = world_tmp / "probe.pid"
    subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c",
                    f"touch {planted} && chmod 666 {planted}"], check=True)
    started = probe_command(world_runtime, world_tmp, planted, "start")
    assert started.returncode == 1
    assert started.stderr.strip() == (f"probe: {planted} belongs to uid {NOBODY}, not to this "
                                      "user (refused: its owner could write any pid into it)")
    assert planted.read_text() == ""
    open_dir = world_tmp / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # world-writable without the sticky bit: anyone may replace files
    refused = probe_command(world_runtime, world_tmp, open_dir / "probe.pid", "start")
    assert refused.returncode == 1
    assert "may be written by other users" in refused.stderr



FAKE_DAEMON = """
    import fcntl, os, socket, struct, sys, threading
    directory = sys.argv[1]
    if not os.path.isdir(directory):
        os.mkdir(directory, 0o755)  # /tmp/app, made before root's first start
    fd = os.open(directory + "/probe.pid", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
    os.write(fd, b"%d\\n" % os.getpid())
    server = socket.socket(socket.AF_UNIX)
    server.bind(directory + "/probe.ctl")
    os.chmod(directory + "/probe.ctl", 0o777)
    server.listen(8)
    def answer():
        while True:
            connection, _ = server.accept()
            connection.makefile("rb").readline()
            connection.sendall(b'{"ok": true, "state": "running"}\\n')
            connection.close()
    threading.Thread(target=answer, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("where", ["shared directory", "directory of the attacker"])
def test_a_daemon_faked_by_another_user_is_not_believed(world_runtime: WorldRuntime,
                                                        world_tmp: Path, where: str) -> None:
    """nobody creates the pidfile first (in /tmp, or in a /tmp/app of its own), locks it,
    writes its own pid and answers "running" on the control socket beside it: start used
    to say "already running" (exit 0, no daemon), and status and reload believed it."""
    directory = world_tmp if where == "shared directory" else world_tmp / "app"
    pidfile = directory / "probe.pid"
    if where == "shared directory":
        refusal = (f"{pidfile} belongs to uid {NOBODY}, not to this user (refused: its owner "
                   "could write any pid into it)")
    else:
        refusal = (f"{directory} belongs to uid {NOBODY}, not to this user (refused: its "
                   "owner could replace the pidfile); use a directory of your own")
    with attacker(world_runtime, FAKE_DAEMON, str(directory)):
        fake_pid = int(pidfile.read_text())
        try:
            if where == "shared directory":
                _refused_everywhere(world_runtime, world_tmp, pidfile, refusal)
            else:  # start's own rule; the others accept a directory of another user
                started = probe_command(world_runtime, world_tmp, pidfile, "start")
                assert started.returncode == 1, started.stdout
                assert started.stderr.strip() == f"probe: {refusal}"
            assert pid_alive(fake_pid)  # stop refused to signal it, too
            assert int(pidfile.read_text()) == fake_pid  # nothing of root's was written
        finally:
            os.kill(fake_pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(fake_pid))


def test_a_planted_successor_pidfile_never_blocks_stop(world_runtime: WorldRuntime,
                                                       world_tmp: Path) -> None:
    """``probe.next.pid`` is where a restart's second daemon waits; one nobody planted and
    locked there used to make root's stop fail while the daemon ran on."""
    pidfile = world_tmp / "probe.pid"
    plant = f"""
        import fcntl, os, struct, sys
        fd = os.open({str(world_tmp / "probe.next.pid")!r}, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
        os.write(fd, b"%d\\n" % os.getpid())
        print("ready", flush=True)
        sys.stdin.read()
    """
    assert probe_command(world_runtime, world_tmp, pidfile, "start").returncode == 0
    pid = int(pidfile.read_text())
    try:
        with attacker(world_runtime, plant):
            stopped = probe_command(world_runtime, world_tmp, pidfile, "stop")
            assert stopped.returncode == 0, stopped
            assert "warning: ignoring" in stopped.stderr
            assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(pid))


def test_a_daemon_of_its_service_user_is_seen_by_root_through_user(
        world_runtime: WorldRuntime, world_tmp: Path) -> None:
    """A daemon started as its service user, with its pidfile in that user's own directory
    (/run/svc), stays root's to see, stop and ask to reopen its logs (logrotate's
    postrotate), with or without --user; only start applies its directory rule."""
    own = world_tmp / "svc"
    own.mkdir(mode=0o755)
    os.chown(own, NOBODY, NOBODY)
    (world_tmp / "events.log").touch()
    (world_tmp / "events.log").chmod(0o666)
    pidfile = own / "probe.pid"
    as_nobody = ["runuser", "-u", "nobody", "--", world_runtime.python,
                 str(world_runtime.root / "services" / "probe.py"), "--pidfile", str(pidfile),
                 "--events", str(world_tmp / "events.log")]
    started = subprocess.run([*as_nobody, "start"], capture_output=True, text=True,
                             env=world_runtime.env, timeout=60, check=False)
    try:
        assert started.returncode == 0, started.stderr
        assert pidfile.stat().st_uid == NOBODY
        for extra in ((), ("--user", "nobody")):
            status = probe_command(world_runtime, world_tmp, pidfile, "status", *extra)
            assert status.returncode == 0 and "is running" in status.stdout, status
        reopened = probe_command(world_runtime, world_tmp, pidfile, "reopen-logs")
        assert reopened.returncode == 0, reopened
    finally:
        subprocess.run([*as_nobody, "stop"], capture_output=True, env=world_runtime.env,
                       timeout=60, check=False)
    assert not pidfile.exists()

def _refused_everywhere(runtime: WorldRuntime, workdir: Path, pidfile: Path,
                        refusal: str) -> None:
    started = probe_command(runtime, workdir, pidfile, "start")
    assert started.returncode == 1, started.stdout
    assert "already running" not in started.stdout
    assert started.stderr.strip() == f"probe: {refusal}"
    status = probe_command(runtime, workdir, pidfile, "status")
    assert status.returncode == 4, status.stdout
    assert refusal in status.stdout
    for command in ("reload", "stop"):
        refused = probe_command(runtime, workdir, pidfile, command)
        assert refused.returncode != 0 and refusal in refused.stderr, (command, refused)

def test_default_pidfile_of_a_user_is_private(world_runtime: WorldRuntime,
                                              world_tmp: Path) -> None:
    (world_tmp / "events.log").touch()
    (world_tmp / "events.log").chmod(0o666)
    env = {k: v for k, v in world_runtime.env.items() if k != "XDG_RUNTIME_DIR"}
    xdg = world_tmp / "xdg"  # a login shell's; cron's and sudo's have none: same pidfile
    xdg.mkdir(mode=0o700)
    os.chown(xdg, NOBODY, NOBODY)
    command = ["runuser", "-u", "nobody", "--", world_runtime.python,
               str(world_runtime.root / "services" / "probe.py"), "--events",
               str(world_tmp / "events.log")]
    private = Path(f"/tmp/daemonkit-{NOBODY}")
    started = subprocess.run([*command, "start"], capture_output=True, text=True, env=env,
                             timeout=60, check=False)
    try:
        assert started.returncode == 0, started.stderr
        info = private.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (NOBODY, 0o700)
        assert (private / "probe.pid").exists()
        for environment in (env, {**env, "XDG_RUNTIME_DIR": str(xdg)}):
            status = subprocess.run([*command, "status"], capture_output=True, text=True,
                                    env=environment, timeout=60, check=False)
            assert status.returncode == 0 and "is running" in status.stdout, status.stdout
    finally:
        subprocess.run([*command, "stop"], capture_output=True, env=env, timeout=60,
                       check=False)
    assert not (private / "probe.pid").exists()


def test_another_users_lock_on_a_leftover_pidfile_is_not_the_daemon(
        world_runtime: WorldRuntime, world_tmp: Path) -> None:
    """A reader of a left-over pidfile (mode 0644) locks it: status used to say running, and
    start failed. A reader can take a read lock at most, and that never counts."""
    run_dir = world_tmp / "run"
    run_dir.mkdir(mode=0o755)
    pidfile = run_dir / "probe.pid"
    pidfile.write_text("4242\n")  # left by a daemon killed with -9
    pidfile.chmod(0o644)
    attack = f"""
        import fcntl, os, struct, sys
        fd = os.open({str(pidfile)!r}, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)  # what worked against the flock pidfile
        lock = struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, 0, 0, 0)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)  # all a reader can take of an OFD lock
        print("ready", flush=True)
        sys.stdin.read()
    """
    with attacker(world_runtime, attack):
        status = probe_command(world_runtime, world_tmp, pidfile, "status")
        assert status.returncode == 1, status.stdout
        assert status.stdout.startswith("probe is not running, but pidfile")
        started = probe_command(world_runtime, world_tmp, pidfile, "start")
        assert started.returncode == 0, started.stderr
        pid = int(pidfile.read_text())
        try:
            assert pid != 4242 and pid_alive(pid)
            running = probe_command(world_runtime, world_tmp, pidfile, "status")
            assert running.returncode == 0 and f"pid {pid}" in running.stdout
            assert probe_command(world_runtime, world_tmp, pidfile, "stop").returncode == 0
            assert not pid_alive(pid)
        finally:
            if pid_alive(pid):
                os.kill(pid, 9)
                wait_for(lambda: not pid_alive(pid))
    assert not [name for name in os.listdir(run_dir) if name.endswith(".new")]


def test_a_fifo_as_log_file_is_refused_at_once(probe: Service) -> None:
    fifo = probe.workdir / "probe.log"
    os.mkfifo(fifo)
    began = time.monotonic()
    started = probe.cli("start", timeout=30)
    assert time.monotonic() - began < 10, "start hung on the FIFO"
    assert started.returncode == 1
    assert started.stderr.strip() == f"probe: cannot open log file {fifo}: is not a regular " \
                                     "file (refused)"
    assert probe.pid() is None


def test_a_log_file_planted_by_another_user_is_refused(world_runtime: WorldRuntime,
                                                       world_tmp: Path) -> None:
    """In /tmp, nobody creates the log file first: root's daemon used to append its output,
    tracebacks included, to a file nobody reads and rewrites. The service user's own file is
    still fine (unless anyone may write it), and so is root's (one name only: a second name
    may be a hard link)."""
    planted = world_tmp / "probe.log"
    subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c",
                    f"touch {planted} && chmod 666 {planted}"], check=True)
    events = world_tmp / "events.log"
    events.touch()
    events.chmod(0o666)
    pidfile = world_tmp / "probe.pid"
    try:
        refused = probe_command(world_runtime, world_tmp, pidfile, "start", "--log-file",
                                str(planted))
        assert refused.returncode == 4, refused
        assert refused.stderr.strip() == (
            f"probe: cannot open log file {planted}: belongs to uid {NOBODY}, in a directory "
            "others can write (refused: its owner would read and rewrite the log)")
        assert planted.read_text() == "" and not pidfile.exists()

        linked = world_tmp / "linked.log"
        linked.write_text("")
        os.link(linked, world_tmp / "second-name")
        refused = probe_command(world_runtime, world_tmp, pidfile, "start", "--log-file",
                                str(linked))
        assert refused.returncode == 4, refused
        assert "has 2 hard links, in a directory others can write" in refused.stderr

        refused = probe_command(world_runtime, world_tmp, pidfile, "start", "--log-file",
                                str(planted), "--user", "nobody")
        assert refused.returncode == 4, refused  # the service user's, but anyone may write it
        assert "is writable by every user" in refused.stderr
        own = world_tmp / "own.log"
        subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c",
                        f"touch {own} && chmod 640 {own}"], check=True)
        started = probe_command(world_runtime, world_tmp, pidfile, "start", "--log-file",
                                str(own), "--user", "nobody")
        assert started.returncode == 0, started.stderr
        wait_for(lambda: "ready" in own.read_text(), message="the service user's own log")
    finally:
        started_pid = read_pidfile(pidfile)  # a refusal that failed would have started one
        kill_all({started_pid} if started_pid else set())


def test_reopen_logs_keeps_the_old_file_when_one_was_planted(world_runtime: WorldRuntime,
                                                             world_tmp: Path) -> None:
    """logrotate renames the log; before reopen-logs, nobody plants a file at the path."""
    log = world_tmp / "probe.log"
    events = world_tmp / "events.log"
    events.touch()
    events.chmod(0o666)
    pidfile = world_tmp / "probe.pid"
    started = probe_command(world_runtime, world_tmp, pidfile, "start", "--log-file", str(log))
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        rotated = world_tmp / "probe.log.1"
        log.rename(rotated)
        subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c",
                        f"touch {log} && chmod 666 {log}"], check=True)
        reopened = probe_command(world_runtime, world_tmp, pidfile, "reopen-logs",
                                 "--log-file", str(log))
        assert reopened.returncode != 0, reopened
        assert f"belongs to uid {NOBODY}" in reopened.stderr
        assert probe_command(world_runtime, world_tmp, pidfile, "status").returncode == 0
        wait_for(lambda: "still writing to the old file" in rotated.read_text(),
                 message="the refusal in the old log")
        assert log.read_text() == ""
    finally:
        kill_all({pid})


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_descriptors_sent_with_requests_never_pile_up(probe: Service) -> None:
    """SCM_RIGHTS on rejected requests (too large, too slow, malformed) used to stay open in
    the daemon: a client could fill its descriptor table."""
    assert probe.cli("start").returncode == 0
    pid = probe.pid()
    assert pid is not None
    before = fd_count(pid)
    control = str(probe.workdir / "probe.ctl")
    junk = [os.open("/dev/null", os.O_RDONLY) for _ in range(16)]
    try:
        for payload in (b'{"cmd":"status","pad":"' + b"x" * 70000, b"not json\n",
                        b'{"cmd":"take-over"}\n', b'{"cmd":"status"}\n'):
            for _ in range(5):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(10)
                    sock.connect(control)
                    socket.send_fds(sock, [payload[:60000]], junk)
                    if len(payload) > 60000:
                        sock.sendall(payload[60000:])
                    sock.makefile("rb").readline()
    finally:
        for fd in junk:
            os.close(fd)
    wait_for(lambda: fd_count(pid) <= before, message="the daemon's descriptors back to "
                                                      f"{before}")


def test_the_service_user_may_not_take_the_sockets_or_block_restarts(
        world_runtime: WorldRuntime, world_tmp: Path) -> None:
    """handover passes the listening sockets: only root or who started the daemon may ask."""
    run_dir = world_tmp / "run"
    run_dir.mkdir(mode=0o755)
    port = free_port()
    command = [world_runtime.python, str(world_runtime.root / "examples" / "echo.py"),
               "--pidfile", str(run_dir / "echo.pid"), "--listen", f"tcp://127.0.0.1:{port}",
               "--user", "nobody"]
    assert subprocess.run([*command, "start"], env=world_runtime.env, capture_output=True,
                          timeout=60, check=False).returncode == 0
    pid = int((run_dir / "echo.pid").read_text())
    try:
        attack = f"""
            from daemonkit.control import exchange
            reply, fds = exchange({str(run_dir / "echo.ctl")!r}, {{"cmd": "handover"}})
            print("ready", flush=True)
            print(reply, len(fds), flush=True)
        """
        with attacker(world_runtime, attack) as process:
            assert process.stdout is not None
            line = process.stdout.readline()
        assert "may not handover" in line and line.strip().endswith(" 0"), line
        restarted = subprocess.run([*command, "restart"], env=world_runtime.env,
                                   capture_output=True, text=True, timeout=60, check=False)
        assert restarted.returncode == 0, restarted.stderr
        pid = int((run_dir / "echo.pid").read_text())
    finally:
        subprocess.run([*command, "stop"], env=world_runtime.env, capture_output=True,
                       timeout=60, check=False)
    assert not pid_alive(pid)


def test_a_hard_linked_exit_record_is_not_written_through(world_runtime: WorldRuntime,
                                                          world_tmp: Path) -> None:
    run_dir = world_tmp / "run"
    run_dir.mkdir()
    victim = world_tmp / "root-only"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    os.link(victim, run_dir / "probe.exit")  # what the owner of the directory could plant
    (world_tmp / "events.log").touch()
    (world_tmp / "events.log").chmod(0o666)
    started = probe_command(world_runtime, world_tmp, run_dir / "probe.pid", "start")
    assert started.returncode == 0, started.stderr
    assert probe_command(world_runtime, world_tmp, run_dir / "probe.pid", "stop").returncode == 0
    assert victim.read_text() == "precious\n"


def test_a_stop_right_after_the_pid_appears_is_not_fatal_silence(tmp_path: Path) -> None:
    """From the moment the pid is in the pidfile, SIGTERM is recorded and acted on: start
    says the daemon was stopped during setup, and the exit record has an end. An asyncio
    service sets its loop up after the pid is written: the window is widest there."""
    from helpers import SERVICES

    aprobe = Service(SERVICES / "aprobe.py", tmp_path, "aprobe")
    try:
        starting = subprocess.Popen(aprobe.argv("start", "--setup-sleep", "5"),
                                    stderr=subprocess.PIPE, text=True)
        pid = wait_for(aprobe.pid, interval=0.0005)
        os.kill(pid, signal.SIGTERM)
        _, err = starting.communicate(timeout=30)
        assert starting.returncode == 1
        assert "stopped by SIGTERM during setup()" in err, err
        record = json.loads((aprobe.workdir / "aprobe.exit").read_text())
        assert record["pid"] == pid and "stopped by SIGTERM" in record["reason"]
    finally:
        aprobe.cleanup()


def test_a_long_start_timeout_on_a_running_daemon(probe: Service) -> None:
    assert probe.cli("start").returncode == 0
    again = probe.cli("start", "--start-timeout", "4000", timeout=30)
    assert again.returncode == 0 and "already running" in again.stdout
    assert probe.cli("reload", "--start-timeout", "4000").returncode == 0
