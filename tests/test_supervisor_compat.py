"""supervisord's files and verbs with real processes, through daemonkit's own CLI.

What a file means at run time (inline comments, /dev/stdout logs, AUTO logs in the temp
dir, syslog, fcgi sockets, stopasgroup, SUPERVISOR_* variables) and the supervisorctl verbs
of ``daemonkit supervise`` (tail, signal, pid, clear, update, reread, avail, shutdown,
check, group:name addressing, ``control = PATH``, --help).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from helpers import ROOT, Sv, free_port, pid_alive, tagged_pids, wait_for


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_inline_comments_and_repeated_keys_run_what_supervisord_runs(sv: Sv) -> None:
    sv.write("""
        [program:worker]
        command = /bin/sleep 100 # the worker
        autorestart = true # restart if it crashes
        startsecs = 5
        startsecs = 0
        stdout_logfile = worker.log
        inherit = defaults
        """)
    started = sv.cli("start", check=True)
    assert "[program:worker] inherit: unknown key, ignored" in started.stderr  # on the terminal
    worker = sv.wait_state("worker", "RUNNING", timeout=3)  # startsecs: the last one, 0
    assert cmdline(worker["pid"]) == ["/bin/sleep", "100"]
    sv.ini.write_text(sv.ini.read_text() + "[program:other]\ncommand = sleep 9\nshade = 1\n")
    reloaded = sv.cli("reload", check=True)
    assert "[program:other] shade: unknown key, ignored" in reloaded.stderr  # the new one
    assert "inherit" not in reloaded.stderr  # known since the start: not repeated
    strict = sv.cli("restart", "--strict")
    assert strict.returncode == 6 and "refused: --strict" in strict.stderr
    assert sv.status()["worker"]["pid"] == worker["pid"]  # the refusal changed nothing


def test_check_reports_and_exits_like_nginx_t(sv: Sv, monkeypatch: pytest.MonkeyPatch) -> None:
    sv.write("""
        [program:api]
        process_name = %(program_name)s_%(process_num)s
        command = /usr/bin/env python3 -m http.server %(ENV_CHECK_PORT)s
        numprocs = 2
        environment = MODE="check"
        user = nobody
        stopsignal = INT
        colour = blue
        """)
    env = {**sv.env, "CHECK_PORT": "8123"}
    text = sv.cli("check", env=env)
    assert text.returncode == 0, text.stderr
    assert "[program:api] colour: unknown key" in text.stderr
    report = json.loads(sv.cli("check", "--json", env=env).stdout)
    assert report["ok"] is True and len(report["warnings"]) == 1
    first = report["instances"][0]
    assert {k: first[k] for k in ("name", "argv", "user", "environment", "autostart",
                                  "autorestart", "exitcodes", "startsecs", "startretries",
                                  "stopsignal", "stopwaitsecs", "priority", "redirect_stderr",
                                  "directory")} == {
        "name": "api_0", "argv": ["/usr/bin/env", "python3", "-m", "http.server", "8123"],
        "user": "nobody", "environment": {"MODE": "check"}, "autostart": True,
        "autorestart": "unexpected", "exitcodes": [0], "startsecs": 1.0, "startretries": 3,
        "stopsignal": "SIGINT", "stopwaitsecs": 10.0, "priority": 999,
        "redirect_stderr": False, "directory": None}
    assert first["stdout_logfile"].endswith("/api_0-stdout---supervisor.log")
    broken = sv.cli("check", env={k: v for k, v in env.items() if k != "CHECK_PORT"})
    assert broken.returncode == 6 and "ENV_CHECK_PORT" in broken.stderr
    assert json.loads(sv.cli("check", "--json", env=sv.env).stdout)["ok"] is False
    assert sv.cli("check", "--strict", env=env).returncode == 6
    assert sv.supervisor_pids() == []  # check starts nothing


def test_help_without_a_config(sv: Sv) -> None:
    for command in ([sys.executable, "-m", "daemonkit", "--help"],
                    [sys.executable, "-m", "daemonkit", "supervise", "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, env=sv.env,
                                check=False, timeout=30)
        assert result.returncode == 0, result.stderr
        for verb in ("tail [-f]", "signal SIG NAME", "pid [NAME", "clear NAME", "reread",
                     "avail", "update [GROUP", "shutdown", "check [--json]", "group:*"):
            assert verb in result.stdout, (command, verb)
    bare = subprocess.run([sys.executable, "-m", "daemonkit", "supervise"],
                          capture_output=True, text=True, env=sv.env, check=False, timeout=30)
    assert bare.returncode == 2 and "usage:" in bare.stderr


def test_verbs_of_our_cli(sv: Sv) -> None:
    sv.write(f"""
        [program:w]
        process_name = %(program_name)s_%(process_num)02d
        command = sh -c 'trap "echo hup >> {sv.dir}/hups" HUP; while :; do echo tick; \
            sleep 0.1; done'
        numprocs = 2
        startsecs = 0
        stdout_logfile = %(program_name)s_%(process_num)02d.log

        [program:idle]
        command = sleep 1000
        autostart = false
        """)
    sv.cli("start", check=True)
    sv.wait_state("w_01", "RUNNING")
    assert sv.cli("stop", "w:w_00", check=True).stdout.split()[:2] == ["w_00:", "STOPPED"]
    assert sv.status()["w_01"]["state"] == "RUNNING"
    assert sv.cli("status", "w:*").returncode == 3
    assert sv.cli("start", "w:*", check=True).returncode == 0
    pids = sv.cli("pid", "w:*", check=True).stdout.split()
    assert [int(p) for p in pids] == [sv.status()[n]["pid"] for n in ("w_00", "w_01")]
    assert sv.cli("pid", "idle").returncode == 7
    assert int(sv.cli("pid", check=True).stdout) == sv.supervisor_pid()
    assert sv.cli("signal", "HUP", "w_01", check=True).stdout.strip() == "w_01: signalled"
    wait_for((sv.dir / "hups").exists, 5)
    bad = sv.cli("signal", "NOPE", "w_01")
    assert bad.returncode == 1 and "BAD_SIGNAL" in bad.stderr
    wait_for(lambda: "tick" in sv.cli("tail", "w_00").stdout, 5)
    follow = subprocess.Popen([sys.executable, "-m", "daemonkit", "supervise", "-c",
                               str(sv.ini), "tail", "-f", "w_00"], stdout=subprocess.PIPE,
                              text=True, env=sv.env)
    try:
        assert follow.stdout is not None
        lines = [follow.stdout.readline() for _ in range(15)]
        assert lines.count("tick\n") >= 10
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(10)
    assert sv.cli("clear", "w_00", check=True).stdout.strip() == "w_00: cleared"
    assert (sv.dir / "w_00.log").stat().st_size < 64
    assert sv.cli("tail", "nope").returncode == 3
    # reread / avail / update, with a group named
    sv.write("""
        [program:w]
        process_name = %(program_name)s_%(process_num)02d
        command = sh -c 'while :; do echo tock; sleep 0.1; done'
        numprocs = 2
        startsecs = 0

        [program:new]
        command = sleep 1001
        startsecs = 0
        """)
    assert sv.cli("reread", check=True).stdout.splitlines() == [
        "idle: disappeared", "new: available", "w: changed"]
    avail = sv.cli("avail", check=True).stdout
    assert re.search(r"^new\s+avail\s+auto\s+999:999$", avail, re.MULTILINE), avail
    before = sv.status()["w_00"]["pid"]
    only_new = sv.cli("update", "new", check=True).stdout.splitlines()
    assert only_new[0] == "added: new"
    assert set(sv.status()) == {"w_00", "w_01", "idle", "new"}
    assert sv.status()["w_00"]["pid"] == before  # w was not named: unchanged
    rest = sv.cli("update", check=True).stdout.splitlines()
    assert rest[:3] == ["added: -", "changed: w", "removed: idle"]
    assert set(sv.status()) == {"w_00", "w_01", "new"}
    assert sv.cli("update", "nope").returncode == 3
    supervisor = sv.supervisor_pid()
    assert sv.cli("shutdown", check=True).returncode == 0
    assert not pid_alive(supervisor)


def test_exit_column_shows_signal_names(sv: Sv) -> None:
    sv.write("""
        [program:victim]
        command = sleep 1000
        startsecs = 0
        autorestart = false
        """)
    sv.cli("start", check=True)
    pid = sv.wait_state("victim", "RUNNING")["pid"]
    os.kill(pid, signal.SIGKILL)
    sv.wait_state("victim", "EXITED")
    row = sv.cli("status", "victim").stdout.splitlines()[1].split()
    assert (row[0], row[1], row[-1]) == ("victim", "EXITED", "SIGKILL")


def test_control_socket_where_the_config_says(sv: Sv) -> None:
    short = Path(tempfile.mkdtemp(prefix="dk-c-", dir="/tmp"))
    try:
        sv.write("[program:a]\ncommand = sleep 600\nstartsecs = 0\n",
                 header=f"control = {short}/ctl.sock")
        sv.cli("start", check=True)
        sock = short / "ctl.sock"
        assert sock.is_socket() and (sock.stat().st_mode & 0o777) == 0o600
        status = sv.cli("status", "a", check=True)
        assert status.stdout.splitlines()[1].split()[:2] == ["a", "RUNNING"]
        from daemonkit.supervisor.client import Client

        reply = Client(str(sock)).ask({"cmd": "supervisor-status"})
        assert reply["ok"] and reply["programs"][0]["name"] == "a"
        sv.cli("stop", check=True)
        assert not sock.exists()
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_docker_pattern_logs_to_stdout_and_auto_logs_in_the_temp_dir(sv: Sv) -> None:
    tmpdir = sv.dir / "tmpdir"
    tmpdir.mkdir()
    sv.ini.write_text(textwrap.dedent(f"""
        [supervisord]
        nodaemon = true
        logfile = /dev/null
        logfile_maxbytes = 0
        pidfile = {sv.dir}/sv.pid

        [program:quiet]
        command = sh -c 'echo to-auto; exec sleep 600'
        startsecs = 0

        [program:loud]
        command = sh -c 'echo to-stdout; exec sleep 600'
        stdout_logfile = /dev/stdout
        stdout_logfile_maxbytes = 0
        redirect_stderr = true
        startsecs = 0
        """))
    env = {**sv.env, "TMPDIR": str(tmpdir)}
    foreground = subprocess.Popen(
        [sys.executable, "-m", "daemonkit", "supervise", "-c", str(sv.ini), "run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert foreground.stdout is not None
        wait_for(lambda: "to-stdout" in foreground.stdout.readline(), 10,
                 message="the child's line on the supervisor's stdout")
        auto = tmpdir / "quiet-stdout---supervisor.log"
        wait_for(lambda: auto.exists() and auto.read_text() == "to-auto\n", 5)
        assert not Path("/dev/quiet-stdout---supervisor.log").exists()
    finally:
        foreground.terminate()
        foreground.wait(30)


def test_default_rotation_is_50mb_times_10(sv: Sv) -> None:
    from daemonkit.supervisor import config

    sv.write("[program:p]\ncommand = x\n")
    spec = config.load(str(sv.ini)).programs["p"].instance(0)
    assert (spec.stdout.maxbytes, spec.stdout.backups) == (50 * 1024 * 1024, 10)
    assert spec.stderr is not None and spec.stderr.maxbytes == 50 * 1024 * 1024
    sv.write("""
        [program:chatty]
        command = sh -c 'while :; do printf "%%0100d\\n" 0; done'
        stdout_logfile = chatty.log
        stdout_logfile_maxbytes = 64KB
        stdout_logfile_backups = 2
        startsecs = 0
        """)
    sv.cli("start", check=True)
    wait_for((sv.dir / "chatty.log.2").exists, 10, message="two rotations")
    sv.cli("stop", "chatty", check=True)
    assert not (sv.dir / "chatty.log.3").exists()
    for path in (sv.dir / "chatty.log", sv.dir / "chatty.log.1", sv.dir / "chatty.log.2"):
        assert path.stat().st_size <= 64 * 1024


def test_children_get_supervisord_variables_and_a_stdin_pipe(sv: Sv) -> None:
    sock = Path(tempfile.mkdtemp(prefix="dk-s-", dir="/tmp")) / "s.sock"
    try:
        sv.write(f"""
            [unix_http_server]
            file = {sock}

            [program:env]
            command = sh -c 'env | grep ^SUPERVISOR_ | sort; exec sleep 600'
            stdout_logfile = env.log
            startsecs = 0

            [program:reader]
            command = sh -c 'read line; echo "stdin closed or got: $line"; exec sleep 600'
            stdout_logfile = reader.log
            startsecs = 0

            [group:grp]
            programs = reader
            """)
        sv.cli("start", check=True)
        log = sv.dir / "env.log"
        wait_for(lambda: log.exists() and log.read_text().count("\n") == 4, 5)
        assert log.read_text().splitlines() == [
            "SUPERVISOR_ENABLED=1", "SUPERVISOR_GROUP_NAME=env", "SUPERVISOR_PROCESS_NAME=env",
            f"SUPERVISOR_SERVER_URL=unix://{sock}"]
        reader = sv.wait_state("reader", "RUNNING")["pid"]
        # supervisord's children read a pipe that stays open: `read` waits, it sees no EOF
        assert os.readlink(f"/proc/{reader}/fd/0").startswith("pipe:")
        wait_for(lambda: "pipe" in Path(f"/proc/{reader}/wchan").read_text(), 5,
                 message="blocked reading its stdin")
        assert not (sv.dir / "reader.log").exists() or (sv.dir / "reader.log").read_text() == ""
    finally:
        shutil.rmtree(sock.parent, ignore_errors=True)


def test_stop_signals_the_process_unless_stopasgroup(sv: Sv) -> None:
    """stopasgroup = false (supervisord's default): the stop signal goes to the process,
    which decides what its children get; what is left of the group is stopped after it."""
    order = sv.dir / "order"
    (sv.dir / "child.sh").write_text(
        f'trap "echo child >> {order}; exit 0" TERM\nwhile :; do sleep 0.05; done\n')
    (sv.dir / "leader.sh").write_text(
        f'trap \'echo leader >> {order}; kill $c; wait $c; exit 0\' TERM\n'
        f"sh {sv.dir}/child.sh & c=$!\nwhile :; do wait $c; done\n")
    sv.write(f"""
        [program:polite]
        command = sh {sv.dir}/leader.sh
        startsecs = 0
        stopwaitsecs = 5

        [program:orphaner]
        command = sh -c '(trap "" TERM; exec sleep 1000) & exec sleep 1000'
        startsecs = 0
        stopwaitsecs = 0.5
        """)
    sv.cli("start", check=True)
    leader = sv.wait_state("polite", "RUNNING")["pid"]
    wait_for(lambda: len([p for p in tagged_pids(sv.tag) if os.getpgid(p) == leader]) >= 3, 5,
             message="leader, child and its sleep")
    sv.cli("stop", "polite", check=True)
    assert order.read_text() == "leader\nchild\n"
    orphaner = sv.wait_state("orphaner", "RUNNING")["pid"]
    sv.cli("stop", "orphaner", check=True)
    assert not pid_alive(orphaner)
    assert [p for p in tagged_pids(sv.tag) if _pgid(p) == orphaner] == []


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_fcgi_program_children_share_the_supervisors_socket(sv: Sv) -> None:
    port = free_port()
    serve = ("import os, socket; s = socket.socket(fileno=0); "
             "[(c := s.accept()[0], c.sendall(str(os.getpid()).encode()), c.close()) "
             "for _ in iter(int, 1)]")
    sv.write(f"""
        [fcgi-program:app]
        socket = tcp://127.0.0.1:{port}
        command = {sys.executable} -c "{serve}"
        process_name = %(program_name)s_%(process_num)s
        numprocs = 2
        startsecs = 0
        """)
    sv.cli("start", check=True)
    sv.wait_state("app_1", "RUNNING")
    children = {sv.status()[n]["pid"] for n in ("app_0", "app_1")}
    answered = set()
    for _ in range(200):  # both children accept on the one socket the supervisor made
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            answered.add(int(conn.recv(32)))
        if answered == children:
            break
    assert answered == children
    sv.cli("restart", "app_0", check=True)  # the socket stays: no connection is refused
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        assert int(conn.recv(32)) in {sv.status()[n]["pid"] for n in ("app_0", "app_1")}
    sv.cli("stop", check=True)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_stdout_syslog_sends_lines_to_the_syslog_socket(sv: Sv) -> None:
    short = Path(tempfile.mkdtemp(prefix="dk-l-", dir="/tmp"))
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        receiver.bind(str(short / "log"))
        receiver.settimeout(10)
        sv.write("""
            [program:legacy]
            command = sh -c 'echo "hello syslog"; exec sleep 600'
            stdout_logfile = syslog
            startsecs = 0
            """)
        started = sv.cli("start", "--syslog-socket", str(short / "log"), check=True)
        assert "stdout_logfile = syslog is deprecated" in started.stderr
        message = receiver.recv(4096).decode()
        assert re.fullmatch(r"<14>daemonkit-supervisor\[\d+\]: legacy hello syslog", message)
    finally:
        receiver.close()
        shutil.rmtree(short, ignore_errors=True)


def test_example_runs_without_an_activated_virtualenv(sv: Sv, tmp_path: Path) -> None:
    example = (ROOT / "examples" / "supervisor" / "supervisor.ini").read_text()
    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples, ignore=shutil.ignore_patterns("*.db*"))
    short = Path(tempfile.mkdtemp(prefix="dk-e-", dir="/tmp"))
    try:
        text = example.replace("/tmp/", f"{short}/").replace("7865", str(free_port()))
        sv.ini = examples / "supervisor" / "supervisor.ini"
        sv.ini.write_text(text)
        # PATH without the virtualenv: python3 there cannot import daemonkit
        env = {**sv.env, "PATH": "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"}
        env.pop("VIRTUAL_ENV", None)
        env.pop("DAEMONKIT_PYTHON", None)
        sv.env = env
        sv.cli("start", check=True)
        sv.wait_state("greeter:0", "RUNNING", timeout=20)
        sv.wait_state("greeter:1", "RUNNING", timeout=20)
        ctl = subprocess.run([str(Path(sys.executable).with_name("supervisorctl")), "-c",
                              str(sv.ini), "status", "greeter:*"], capture_output=True,
                             text=True, env=env, check=False, timeout=30)
        assert ctl.stdout.count("RUNNING") == 2, ctl.stdout
        sv.cli("stop", check=True)
    finally:
        shutil.rmtree(short, ignore_errors=True)
