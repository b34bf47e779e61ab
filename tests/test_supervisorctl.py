"""The real supervisorctl (from the supervisor package) against ``daemonkit supervise``.

Each test runs supervisorctl as a subprocess, on the [unix_http_server] or the
[inet_http_server] of the supervisor's own file, and checks both what supervisorctl prints
(and exits with) and what happened to the processes. The XML-RPC contract beyond
supervisorctl (fault codes and texts, struct shapes, multicall, introspection) is checked with
supervisor's own transport, against a real supervisord where the shape matters.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Sv, free_port, pid_alive, tagged_pids, wait_for

SUPERVISORCTL = str(Path(sys.executable).with_name("supervisorctl"))
SUPERVISORD = str(Path(sys.executable).with_name("supervisord"))
USER, PASSWORD = "admin", "s3cret-pass"

PROGRAMS = """
[program:web]
command = sh -c 'echo "web up"; echo "web err" >&2; while :; do echo tick; sleep 0.2; done'
startsecs = 0
stopwaitsecs = 3

[program:once]
command = sh -c 'echo once ran'
startsecs = 0
autorestart = false

[program:worker]
process_name = %(program_name)s_%(process_num)02d
command = sleep 1000
numprocs = 2
startsecs = 1

[program:trapper]
command = sh -c 'trap "echo got-usr1 >> {dir}/signals" USR1; while :; do sleep 0.1; done'
startsecs = 0

[program:cat]
command = cat
startsecs = 0

[program:idle]
command = sleep 1000
autostart = false

[group:pool]
programs = worker
"""


class Ctl:
    """A daemonkit supervisor with both XML-RPC servers, and supervisorctl to drive it."""

    def __init__(self, sv: Sv, sockdir: Path) -> None:
        self.sv = sv
        self.sock = sockdir / "sv.sock"
        self.port = free_port()

    def write(self, programs: str = PROGRAMS, unix_auth: str = "") -> None:
        header = [
            "[supervisord]", "pidfile = %(here)s/sv.pid", "logfile = %(here)s/sv.log",
            "childlogdir = %(here)s/logs",
            "[unix_http_server]", f"file = {self.sock}", unix_auth,
            "[inet_http_server]", f"port = 127.0.0.1:{self.port}", f"username = {USER}",
            f"password = {PASSWORD}",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]", f"serverurl = unix://{self.sock}"]
        self.sv.ini.write_text("\n".join(header) + "\n" + textwrap.dedent(programs).replace(
            "{dir}", str(self.sv.dir)))

    def start(self) -> None:
        self.sv.cli("start", check=True)

    def ctl(self, *args: str, url: str | None = None, user: str | None = None,
            password: str | None = None, timeout: float = 60.0
            ) -> subprocess.CompletedProcess[str]:
        command = [SUPERVISORCTL, "-c", str(self.sv.ini)]
        if url:
            command += ["-s", url]
        if user is not None:
            command += ["-u", user]
        if password is not None:
            command += ["-p", password]
        return subprocess.run([*command, *args], capture_output=True, text=True,
                              timeout=timeout, env=self.sv.env, cwd=self.sv.dir, check=False)

    def inet(self, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        return self.ctl(*args, url=f"http://127.0.0.1:{self.port}", user=USER,
                        password=password)

    def status_lines(self) -> dict[str, tuple[str, str]]:
        result = self.ctl("status")
        rows = {}
        for line in result.stdout.splitlines():
            name, state, *rest = line.split(None, 2)
            rows[name] = (state, rest[0] if rest else "")
        return rows

    def state(self, namespec: str) -> str:
        return self.status_lines()[namespec][0]

    def pid(self, namespec: str) -> int:
        return int(self.ctl("pid", namespec).stdout.strip())

    def proxy(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for sockets: sun_path holds 108 bytes, pytest's paths are long."""
    path = Path(tempfile.mkdtemp(prefix="dk-ctl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ctl(tmp_path: Path, sockdir: Path) -> Iterator[Ctl]:
    sv = Sv(tmp_path)
    controller = Ctl(sv, sockdir)
    yield controller
    sv.cleanup()
    assert sv.supervisor_pids() == []
    assert tagged_pids(sv.tag) == []


@pytest.fixture
def running(ctl: Ctl) -> Ctl:
    ctl.write()
    ctl.start()
    wait_for(lambda: ctl.status_lines().get("pool:worker_01", ("",))[0] == "RUNNING", 10,
             message="all up")
    return ctl


def test_status_names_and_exit_codes(running: Ctl) -> None:
    rows = running.status_lines()
    assert set(rows) == {"web", "once", "pool:worker_00", "pool:worker_01", "trapper", "cat",
                         "idle"}
    assert rows["web"][0] == "RUNNING"
    assert re.fullmatch(r"pid \d+, uptime 0:00:\d\d", rows["web"][1])
    assert rows["once"][0] == "EXITED"
    assert rows["idle"] == ("STOPPED", "Not started")
    full = running.ctl("status")
    assert full.returncode == 3  # something is not running, as supervisorctl says
    named = running.ctl("status", "web", "pool:*")
    assert named.returncode == 0
    assert [line.split()[0] for line in named.stdout.splitlines()] == [
        "web", "pool:worker_00", "pool:worker_01"]
    assert running.ctl("status", "idle").returncode == 3
    unknown = running.ctl("status", "nope")
    assert "nope: ERROR (no such process)" in unknown.stdout or (
        "nope: ERROR (no such group)" in unknown.stdout)
    assert unknown.returncode == 4
    # our CLI sees the same processes, under its names
    ours = running.sv.status()
    assert ours["worker_00"]["pid"] == running.pid("pool:worker_00")


def test_start_stop_restart_by_name_group_and_all(running: Ctl) -> None:
    web = running.pid("web")
    stopped = running.ctl("stop", "web")
    assert (stopped.returncode, stopped.stdout.strip()) == (0, "web: stopped")
    assert not pid_alive(web)
    assert running.ctl("stop", "web").stdout.strip() == "web: ERROR (not running)"
    started = running.ctl("start", "web")
    assert (started.returncode, started.stdout.strip()) == (0, "web: started")
    assert running.ctl("start", "web").stdout.strip() == "web: ERROR (already started)"
    workers = [running.pid("pool:worker_00"), running.pid("pool:worker_01")]
    group = running.ctl("restart", "pool:*")
    assert group.stdout.splitlines() == ["pool:worker_00: stopped", "pool:worker_01: stopped",
                                         "pool:worker_00: started", "pool:worker_01: started"]
    assert not any(pid_alive(p) for p in workers)
    assert running.state("pool:worker_00") == "RUNNING"
    one = running.ctl("restart", "pool:worker_01")
    assert one.stdout.splitlines() == ["pool:worker_01: stopped", "pool:worker_01: started"]
    everything = running.ctl("stop", "all")
    assert everything.returncode == 0
    assert all(state in ("STOPPED", "EXITED") for state, _ in running.status_lines().values())
    # start all: `once` (startsecs = 0, autorestart = false) exits 0 at once, as it should
    started_all = running.ctl("start", "all")
    assert started_all.returncode == 0, started_all.stdout
    assert "once: started" in started_all.stdout.splitlines()
    assert "idle: started" in started_all.stdout.splitlines()
    assert running.ctl("start", "nope").stdout.strip() == "nope: ERROR (no such process)"
    assert running.ctl("start", "pool:nope").stdout.strip() == (
        "pool:nope: ERROR (no such process)")
    # our own CLI: start all too, and succeeds although `once` exits again
    ours = running.sv.cli("start", "all")
    assert ours.returncode == 0, ours.stderr


def test_spawn_errors_are_supervisords_faults(ctl: Ctl) -> None:
    ctl.write("""
        [program:missing]
        command = /nonexistent/daemon
        autostart = false

        [program:quick]
        command = sh -c 'exit 3'
        startsecs = 1
        startretries = 0
        autostart = false
        """)
    ctl.start()
    missing = ctl.ctl("start", "missing")
    assert (missing.stdout.strip(), missing.returncode) == ("missing: ERROR (no such file)", 1)
    quick = ctl.ctl("start", "quick")
    assert (quick.stdout.strip(), quick.returncode) == ("quick: ERROR (spawn error)", 7)
    assert wait_for(lambda: ctl.status_lines()["quick"][0] == "FATAL", 5)
    assert ctl.status_lines()["quick"][1] == "Exited too quickly (process log may have details)"


def test_pid_and_signal(running: Ctl) -> None:
    supervisor_pid = int(running.ctl("pid").stdout)
    assert supervisor_pid == running.sv.supervisor_pid()
    pids = running.ctl("pid", "all").stdout.split()
    assert len(pids) == 7 and "0" in pids  # idle has no process
    assert running.ctl("pid", "idle").returncode == 7
    signalled = running.ctl("signal", "USR1", "trapper")
    assert signalled.stdout.strip() == "trapper: signalled"
    wait_for(lambda: (running.sv.dir / "signals").exists()
             and "got-usr1" in (running.sv.dir / "signals").read_text(), 5)
    assert running.ctl("signal", "NOPE", "trapper").stdout.strip() == (
        "trapper: ERROR (bad signal name)")
    assert running.ctl("signal", "HUP", "idle").stdout.strip() == "idle: ERROR (not running)"
    group = running.ctl("signal", "STOP", "pool:*")
    assert group.stdout.splitlines() == ["pool:worker_00: signalled", "pool:worker_01: signalled"]
    worker = running.pid("pool:worker_00")
    stat = Path(f"/proc/{worker}/stat")
    wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", 5)
    running.ctl("signal", "CONT", "pool:*")
    # our CLI: the same verbs
    assert running.sv.cli("pid", "web").stdout.strip() == str(running.pid("web"))
    ours = running.sv.cli("signal", "USR1", "trapper")
    assert (ours.returncode, ours.stdout.strip()) == (0, "trapper: signalled")
    wait_for(lambda: (running.sv.dir / "signals").read_text().count("got-usr1") == 2, 5)


def test_tail_tail_f_clear_and_maintail(running: Ctl) -> None:
    wait_for(lambda: "tick" in running.ctl("tail", "web").stdout, 5)
    assert "web err" in running.ctl("tail", "web", "stderr").stdout
    assert len(running.ctl("tail", "-5", "web").stdout) <= 5 + 1
    with subprocess.Popen([SUPERVISORCTL, "-c", str(running.sv.ini), "tail", "-f", "web"],
                          stdout=subprocess.PIPE, text=True, env=running.sv.env) as follow:
        try:
            assert follow.stdout is not None
            seen = [follow.stdout.readline() for _ in range(6)]
            assert sum("tick" in line for line in seen) >= 4, seen
        finally:
            follow.send_signal(signal.SIGINT)
            follow.wait(10)
    cleared = running.ctl("clear", "web")
    assert cleared.stdout.strip() == "web: cleared"
    log = Path(running.sv.dir / "logs" / "web-stdout---supervisor.log")
    assert log.stat().st_size < 64  # emptied, the loop writes again right away
    assert "ready" in running.ctl("maintail").stdout
    with subprocess.Popen([SUPERVISORCTL, "-c", str(running.sv.ini), "maintail", "-f"],
                          stdout=subprocess.PIPE, text=True, env=running.sv.env) as follow:
        try:
            running.ctl("restart", "cat")  # writes state changes into the main log
            assert follow.stdout is not None
            wait_for(lambda: "cat: STARTING -> RUNNING" in follow.stdout.readline(), 10)
        finally:
            follow.send_signal(signal.SIGINT)
            follow.wait(10)
    # our CLI's tail
    ours = running.sv.cli("tail", "web")
    assert ours.returncode == 0 and "tick" in ours.stdout


def test_reread_avail_update(running: Ctl) -> None:
    web, cat = running.pid("web"), running.pid("cat")
    programs = PROGRAMS.replace("numprocs = 2", "numprocs = 3").replace(
        "[program:cat]\ncommand = cat", "[program:cat]\ncommand = cat -u") + textwrap.dedent("""
        [program:extra]
        command = sleep 999
        startsecs = 0
        frobnicate = yes
        """)
    programs = programs.replace("[program:idle]\ncommand = sleep 1000\nautostart = false\n", "")
    running.write(programs)
    assert running.ctl("reread").stdout.splitlines() == [
        "cat: changed", "extra: available", "idle: disappeared", "pool: changed"]
    # supervisorctl shows no warnings: the log has it, as a reload would put it there
    assert "[program:extra] frobnicate: unknown key" in running.sv.log()
    avail = running.ctl("avail").stdout.splitlines()
    assert any(re.match(r"^extra\s+avail\s+auto\s+999:999$", row) for row in avail)
    assert any(re.match(r"^pool:worker_02\s+in use\s+auto\s+999:999$", row) for row in avail)
    assert running.pid("cat") == cat  # reread changes nothing
    update = running.ctl("update")
    assert update.stdout.splitlines() == [
        "idle: stopped", "idle: removed process group",
        "cat: stopped", "cat: updated process group",
        "pool: stopped", "pool: updated process group",
        "extra: added process group"]
    rows = running.status_lines()
    assert "idle" not in rows and "pool:worker_02" in rows
    wait_for(lambda: running.state("extra") == "RUNNING", 5)
    assert running.pid("web") == web and running.pid("cat") != cat
    assert running.ctl("reread").stdout.strip() == "No config updates to processes"
    # said once, not at every read of the same file (update reads it again)
    assert (running.sv.dir / "sv.log").read_text().count("frobnicate: unknown key") == 1
    # our CLI: reread/avail/update answer too
    assert "No config updates" in running.sv.cli("reread").stdout
    assert "extra" in running.sv.cli("avail").stdout


def test_shutdown(running: Ctl) -> None:
    supervisor = running.sv.supervisor_pid()
    children = [running.pid("web"), running.pid("pool:worker_00")]
    shut = running.ctl("shutdown")
    assert (shut.returncode, shut.stdout.strip()) == (0, "Shut down")
    wait_for(lambda: not pid_alive(supervisor), 15, message="supervisor gone")
    assert not any(pid_alive(p) for p in children)
    assert not running.sock.exists()
    gone = running.ctl("status")
    assert "no such file" in gone.stdout and gone.returncode == 4


def test_inet_server_and_wrong_password(running: Ctl) -> None:
    ok = running.inet("status", "web")
    assert ok.returncode == 0 and ok.stdout.startswith("web ")
    assert running.inet("stop", "web").stdout.strip() == "web: stopped"
    refused = running.inet("status", password="wrong")
    assert refused.returncode == 1
    assert "Server requires authentication" in refused.stdout
    assert running.state("web") == "STOPPED"  # nothing was done by the refused client
    raw = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    raw.request("POST", "/RPC2", body=xmlrpc.client.dumps((), "supervisor.shutdown"))
    assert raw.getresponse().status == 401
    raw.close()
    assert running.inet("start", "web").stdout.strip() == "web: started"
    follow = subprocess.Popen(
        [SUPERVISORCTL, "-c", str(running.sv.ini), "-s", f"http://127.0.0.1:{running.port}",
         "-u", USER, "-p", PASSWORD, "tail", "-f", "web"],
        stdout=subprocess.PIPE, text=True, env=running.sv.env)
    try:
        assert follow.stdout is not None
        assert sum("tick" in follow.stdout.readline() for _ in range(6)) >= 4
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(10)


def test_reload_restarts_every_process_with_the_file_read_again(running: Ctl) -> None:
    supervisor = running.sv.supervisor_pid()
    web = running.pid("web")
    running.write(PROGRAMS.replace("startsecs = 0\nstopwaitsecs = 3", "startsecs = 0\n"
                                   "stopwaitsecs = 2") + "\n[program:late]\ncommand = sleep 99\n"
                  "startsecs = 0\n")
    reloaded = running.ctl("reload")
    assert (reloaded.returncode, reloaded.stdout.strip()) == (0, "Restarted supervisord")
    wait_for(lambda: running.status_lines().get("late", ("",))[0] == "RUNNING", 10)
    assert not pid_alive(web) and running.pid("web") != web
    assert running.sv.supervisor_pid() == supervisor  # the supervisor process itself stays
    running.sv.ini.write_text(running.sv.ini.read_text() + "\n[program:bad]\nnumprocs = x\n")
    refused = running.ctl("reload")
    assert refused.returncode == 1 and "FAILED" in refused.stdout
    assert running.state("late") == "RUNNING"  # a file that does not load changes nothing


def test_a_reload_applies_new_credentials_at_once(running: Ctl) -> None:
    """A password taken out of the file must stop working at the reload, as with supervisord
    (whose reload restarts the whole daemon), not at some later restart."""
    supervisor = running.sv.supervisor_pid()
    running.sv.ini.write_text(running.sv.ini.read_text().replace(
        f"password = {PASSWORD}", "password = the-new-one"))
    for command in (running.ctl, running.sv.cli):  # supervisorctl, then ours
        assert command("reload").returncode == 0
        revoked = running.inet("status", "web")
        assert revoked.returncode == 1 and "Server requires authentication" in revoked.stdout
        renewed = running.inet("status", "web", password="the-new-one")
        assert renewed.returncode == 0 and renewed.stdout.startswith("web "), renewed.stdout
    assert running.sv.supervisor_pid() == supervisor
    # taking the credentials out does not open the server: that waits for the restart
    running.sv.ini.write_text(running.sv.ini.read_text().replace(
        f"username = {USER}\npassword = the-new-one\n", ""))
    opened = running.sv.cli("reload")
    assert "servers changed: restart the supervisor to apply" in opened.stdout, opened
    assert running.inet("status", "web", password="the-new-one").returncode == 0
    assert running.inet("status", "web", password="anything").returncode == 1
    moved = running.sv.ini.read_text().replace(f"port = 127.0.0.1:{running.port}",
                                               f"port = 127.0.0.1:{free_port()}")
    running.sv.ini.write_text(moved)
    for _ in range(2):  # what a reload cannot apply is said every time, until the restart
        reload = running.sv.cli("reload")
        assert "servers changed: restart the supervisor to apply" in reload.stdout, reload

def test_unix_server_with_credentials_and_socket_mode(ctl: Ctl) -> None:
    ctl.write(unix_auth=f"chmod = 0770\nchown = root:nogroup\nusername = {USER}\n"
                        "password = {SHA}" + __import__("hashlib").sha1(
                            PASSWORD.encode()).hexdigest())
    ctl.start()
    info = ctl.sock.stat()
    assert oct(info.st_mode & 0o777) == oct(0o770)
    import grp

    assert info.st_gid == grp.getgrnam("nogroup").gr_gid
    # 0 once web is RUNNING (startsecs may not have passed on a loaded machine)
    wait_for(lambda: ctl.ctl("status", "web", user=USER, password=PASSWORD).returncode == 0,
             30.0, message="supervisorctl status web with the right password")
    denied = ctl.ctl("status", "web", user=USER, password="nope")
    assert "Server requires authentication" in denied.stdout


def test_xmlrpc_faults_shapes_and_multicall(running: Ctl) -> None:
    proxy = running.proxy()
    supervisor = proxy.supervisor
    assert supervisor.getAPIVersion() == "3.0"
    assert supervisor.getState() == {"statecode": 1, "statename": "RUNNING"}
    with pytest.raises(xmlrpc.client.Fault) as bad:
        supervisor.getProcessInfo("nope")
    assert (bad.value.faultCode, bad.value.faultString) == (10, "BAD_NAME: nope")
    with pytest.raises(xmlrpc.client.Fault) as unknown:
        proxy.supervisor._update("x")
    assert (unknown.value.faultCode, unknown.value.faultString) == (1, "UNKNOWN_METHOD")
    with pytest.raises(xmlrpc.client.Fault) as traversal:
        getattr(proxy, "supervisor.supervisord.options")()
    assert traversal.value.faultCode == 1
    with pytest.raises(xmlrpc.client.Fault) as params:
        supervisor.getProcessInfo()
    assert (params.value.faultCode, params.value.faultString) == (2, "INCORRECT_PARAMETERS")
    with pytest.raises(xmlrpc.client.Fault) as arguments:
        supervisor.readLog(-10, 5)
    assert arguments.value.faultString == "BAD_ARGUMENTS"
    with pytest.raises(xmlrpc.client.Fault) as group_info:
        supervisor.getProcessInfo("pool")
    assert group_info.value.faultString == "BAD_NAME: pool"
    results = proxy.system.multicall([
        {"methodName": "supervisor.getPID", "params": []},
        {"methodName": "supervisor.getProcessInfo", "params": ["nope"]},
        {"methodName": "system.multicall", "params": [[]]},
        {"params": []}])
    assert results[0] == running.sv.supervisor_pid()
    assert results[1] == {"faultCode": 10, "faultString": "BAD_NAME: nope"}
    assert results[2] == {"faultCode": 2,
                          "faultString": "INCORRECT_PARAMETERS: Recursive system.multicall "
                                         "forbidden"}
    assert results[3] == {"faultCode": 2, "faultString": "INCORRECT_PARAMETERS: No methodName"}
    methods = proxy.system.listMethods()
    assert {"supervisor.startProcess", "supervisor.tailProcessStdoutLog", "system.multicall",
            "supervisor.sendProcessStdin", "supervisor.reloadConfig"} <= set(methods)
    assert proxy.system.methodSignature("supervisor.startProcess") == [
        "boolean", "string", "boolean"]
    info = supervisor.getProcessInfo("pool:worker_00")
    assert (info["name"], info["group"], info["statename"], info["state"]) == (
        "worker_00", "pool", "RUNNING", 20)
    assert supervisor.sendProcessStdin("cat", "hello through stdin\n") is True
    log = running.sv.dir / "logs" / "cat-stdout---supervisor.log"
    wait_for(lambda: log.exists() and "hello through stdin" in log.read_text(), 5)
    text, offset, overflow = supervisor.tailProcessStdoutLog("cat", 0, 5)
    assert (text, overflow) == ("tdin\n", True) and offset == log.stat().st_size
    with pytest.raises(xmlrpc.client.Fault) as no_stdin:
        supervisor.sendProcessStdin("idle", "x")
    assert no_stdin.value.faultString == "NOT_RUNNING: idle"
    stopped = supervisor.stopProcessGroup("pool")
    assert stopped == [{"name": "worker_00", "group": "pool", "status": 80,
                        "description": "OK"},
                       {"name": "worker_01", "group": "pool", "status": 80,
                        "description": "OK"}]
    assert supervisor.stopProcessGroup("pool") == []  # nothing running: nothing to report
    with pytest.raises(xmlrpc.client.Fault) as still:
        supervisor.removeProcessGroup("web")
    assert still.value.faultString == "STILL_RUNNING: web"
    assert supervisor.removeProcessGroup("pool") is True
    with pytest.raises(xmlrpc.client.Fault) as added:
        supervisor.addProcessGroup("web")
    assert added.value.faultString == "ALREADY_ADDED: web"
    assert supervisor.addProcessGroup("pool") is True


@contextlib.contextmanager
def real_supervisord(running: Ctl, sockdir: Path) -> Iterator[tuple[Path, Any]]:
    """supervisord itself on a copy of ``running``'s file (its own socket and port): the
    socket's path, and a proxy of its ``supervisor.`` namespace."""
    theirs_dir = sockdir / "real"
    theirs_dir.mkdir()
    ini = theirs_dir / "supervisord.conf"
    sock = theirs_dir / "s.sock"
    text = running.sv.ini.read_text().replace(str(running.sock), str(sock))
    text = text.replace(f"127.0.0.1:{running.port}", f"127.0.0.1:{free_port()}")
    ini.write_text(text.replace("childlogdir = %(here)s/logs", "childlogdir = %(here)s"))
    (theirs_dir / "signals").touch()
    with open(theirs_dir / "err", "w") as errors:
        real = subprocess.Popen([SUPERVISORD, "-n", "-c", str(ini)], env=running.sv.env,
                                stdout=subprocess.DEVNULL, stderr=errors)
    try:
        from supervisor.xmlrpc import SupervisorTransport

        def connect() -> Any:
            transport = SupervisorTransport(None, None, f"unix://{sock}")
            return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

        wait_for(lambda: _answers(connect()) or real.poll() is not None, 20, interval=0.1,
                 message="supervisord up")
        assert real.poll() is None, (theirs_dir / "err").read_text()
        yield sock, connect()
    finally:
        if real.poll() is None:
            real.terminate()
        real.wait(20)


def test_struct_shapes_match_a_real_supervisord(running: Ctl, sockdir: Path) -> None:
    """The same file under supervisord itself: the structs clients read have the same keys
    and value types."""
    ours = running.proxy().supervisor
    with real_supervisord(running, sockdir) as (_sock, theirs):
        wait_for(lambda: theirs.getProcessInfo("web")["statename"] == "RUNNING", 10)

        def shape(struct: dict[str, Any]) -> dict[str, type]:
            return {key: type(value) for key, value in struct.items()}

        for name in ("web", "pool:worker_00", "idle", "once"):
            assert shape(ours.getProcessInfo(name)) == shape(theirs.getProcessInfo(name)), name
        ours_config = {row["name"]: row for row in ours.getAllConfigInfo()}
        theirs_config = {row["name"]: row for row in theirs.getAllConfigInfo()}
        assert set(ours_config) == set(theirs_config)
        for name, row in theirs_config.items():
            assert set(ours_config[name]) == set(row), name
            for key in ("command", "group", "group_prio", "process_prio", "autostart",
                        "exitcodes", "startretries", "stopsignal", "killasgroup", "inuse",
                        "redirect_stderr", "startsecs", "stopwaitsecs"):
                assert ours_config[name][key] == row[key], (name, key)
        assert ours.reloadConfig() == theirs.reloadConfig() == [[[], [], []]]
        assert [(r["name"], r["status"]) for r in ours.startProcessGroup("pool")] == [
            (r["name"], r["status"]) for r in theirs.startProcessGroup("pool")]
        for call in (lambda s: s.startProcess("web"), lambda s: s.stopProcess("idle"),
                     lambda s: s.signalProcess("web", "NOPE"),
                     lambda s: s.readProcessStdoutLog("web", -1, 5),
                     lambda s: s.startProcess("pool:nope")):
            faults = []
            for server in (ours, theirs):
                with pytest.raises(xmlrpc.client.Fault) as fault:
                    call(server)
                faults.append((fault.value.faultCode, fault.value.faultString))
            assert faults[0] == faults[1]


#: ignores SIGTERM and ends once the file RELEASE exists (replaced by the test's path)
SLOW_TO_STOP = """
[program:slow]
command = sh -c 'trap "" TERM; while [ ! -e RELEASE ]; do sleep 0.05; done'
startsecs = 0
stopwaitsecs = 60
"""


def test_during_a_shutdown_supervisorctl_hears_what_supervisord_says(ctl: Ctl,
                                                                     sockdir: Path) -> None:
    """While its programs stop, supervisord still answers: SHUTDOWN_STATE for every call
    (supervisorctl shows the fault, and says "already shutting down" to a second shutdown).
    Before, daemonkit's socket went first and supervisorctl said "no such file"."""
    release = sockdir / "release"
    ctl.write(SLOW_TO_STOP.replace("RELEASE", str(release)))
    ctl.start()
    wait_for(lambda: ctl.status_lines().get("slow", ("",))[0] == "RUNNING", 10)
    supervisor = ctl.sv.supervisor_pid()
    slow = ctl.pid("slow")
    with real_supervisord(ctl, sockdir) as (sock, theirs):
        wait_for(lambda: theirs.getProcessInfo("slow")["statename"] == "RUNNING", 10)
        heard = []
        try:
            for url in (f"unix://{ctl.sock}", f"unix://{sock}"):
                shut = ctl.ctl("shutdown", url=url)
                assert (shut.returncode, shut.stdout.strip()) == (0, "Shut down"), shut.stdout
                status = ctl.ctl("status", url=url)
                again = ctl.ctl("shutdown", url=url)
                heard.append([(status.returncode, status.stdout.replace(url, "URL")),
                              (again.returncode, again.stdout)])
        finally:
            release.touch()  # both shutdowns end
        assert "SHUTDOWN_STATE" in heard[0][0][1], heard
        assert heard[0][1][1] == "ERROR: already shutting down\n", heard
        assert heard[0] == heard[1]
    wait_for(lambda: not pid_alive(supervisor), 20, message="supervisor gone")
    assert not pid_alive(slow)
    assert not ctl.sock.exists()


def _answers(proxy: Any) -> bool:
    with contextlib.suppress(OSError, xmlrpc.client.Error):
        return bool(proxy.getPID())
    return False


def test_hostile_clients_never_delay_a_respawn(running: Ctl) -> None:
    """Clients that connect and trickle, send oversized or malformed requests, or open
    connections without end: the loop still respawns a killed child at once."""
    hostile: list[socket.socket] = []
    try:
        for _ in range(20):  # trickling half a request, holding their threads
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(running.sock))
            sock.sendall(b"POST /RPC2 HTTP/1.1\r\nContent-Length: 1000\r\n\r\n<?xml")
            hostile.append(sock)
        big = socket.socket(socket.AF_UNIX)
        big.connect(str(running.sock))
        big.sendall(b"POST /RPC2 HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
        assert b" 413 " in big.recv(200)
        big.close()
        bad = socket.socket(socket.AF_UNIX)
        bad.connect(str(running.sock))
        body = b"<methodCall><methodName>x</methodName><params><param><value><int>1</int>" * 3
        bad.sendall(b"POST /RPC2 HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert b" 400 " in bad.recv(200)
        bad.close()
        from daemonkit.supervisor.client import Client

        control = Client(str(running.sv.dir / "sv.ctl"))

        def web_pid() -> int | None:
            programs = control.ask({"cmd": "supervisor-status"})["programs"]
            return next(p["pid"] for p in programs if p["name"] == "web")

        for flood in (b"GET / HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n",
                      b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 200 + b"\r\n"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(running.sock))
                sock.sendall(flood)
                assert b" 431 " in sock.recv(200)
        before = web_pid()
        assert before is not None
        killed_at = time.monotonic()
        os.kill(before, signal.SIGKILL)
        after = wait_for(lambda: (p := web_pid()) not in (None, before) and p, 5,
                         interval=0.005)
        assert time.monotonic() - killed_at < 0.5  # supervisord takes ~1 s with nobody around
        assert pid_alive(after)
        assert running.ctl("status", "web").returncode == 0  # and the server still answers
    finally:
        for sock in hostile:
            sock.close()


def test_non_loopback_inet_without_credentials_is_served_on_loopback(ctl: Ctl) -> None:
    port = free_port()
    ctl.sv.ini.write_text(textwrap.dedent(f"""
        [supervisord]
        pidfile = %(here)s/sv.pid
        logfile = %(here)s/sv.log
        [inet_http_server]
        port = *:{port}
        [supervisorctl]
        [program:web]
        command = sleep 1000
        startsecs = 0
        """))
    started = ctl.sv.cli("start", check=True)
    assert f"port = *:{port} without username and password: served on 127.0.0.1:{port}" in (
        started.stderr)
    answer = ctl.ctl("status", url=f"http://127.0.0.1:{port}")
    assert answer.returncode == 0 and answer.stdout.startswith("web ")
    import psutil

    listening = [c.laddr for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    assert [address.ip for address in listening] == ["127.0.0.1"]
