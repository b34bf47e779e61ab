"""The web page end to end: a real ``daemonkit supervise`` with a ``[web]`` section.

Every supervisor runs with a unique DAEMONKIT_TEST_TAG in its environment, which its children
inherit; cleanup finds every process of the test by that tag and kills it by pid. The page's
address is read from the supervisor's log (it listens on port 0).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, pid_alive, wait_for

from daemonkit.supervisor.strays import pids_with_environment

PROGRAMS = """
[program:worker]
command = sh -c 'echo "worker up $$"; while :; do echo "worker tick $$"; sleep 0.2; done'
stdout_logfile = worker.log
startsecs = 0.3
stopwaitsecs = 3

[program:cron]
command = sleep 1000
stdout_logfile = NONE
numprocs = 2
process_name = %(program_name)s:%(process_num)d
startsecs = 0.3
stopwaitsecs = 3
"""


def tagged_pids(tag: str) -> list[int]:
    """Live processes started by this test (they carry DAEMONKIT_TEST_TAG=tag)."""
    return [pid for pid in pids_with_environment("DAEMONKIT_TEST_TAG", tag) if pid_alive(pid)]


class RunningSupervisor:
    """A supervisor started through its CLI, its page's address, and an HTTP client."""

    def __init__(self, workdir: Path, programs: str = PROGRAMS,
                 web: str = "listen = 127.0.0.1:0") -> None:
        self.dir = workdir
        self.ini = workdir / "sv.ini"
        self.tag = uuid.uuid4().hex
        self.env = {**os.environ, "DAEMONKIT_TEST_TAG": self.tag, "PYTHONPATH": str(ROOT)}
        self.env.pop("NOTIFY_SOCKET", None)
        self.ini.write_text("[supervisor]\npidfile = sv.pid\nlogfile = sv.log\n\n"
                            f"[web]\n{web}\n" + textwrap.dedent(programs))
        self.host = ""
        self.port = 0
        self.csrf = ""
        self.token: str | None = None  # sent as a Bearer token when set

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemonkit", "supervise", "-c",
                               str(self.ini), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=self.dir, env=self.env, check=False)

    def start(self) -> None:
        result = self.cli("start")
        assert result.returncode == 0, (result.stdout, result.stderr, self.log())
        found = re.search(r"web: status page on http://(\S+):(\d+)", self.log())
        assert found, self.log()
        self.host, self.port = found.group(1), int(found.group(2))
        self.csrf = self.get("/api/csrf")[1]["csrf_token"]

    def pid(self) -> int:
        return int((self.dir / "sv.pid").read_text())

    def log(self) -> str:
        try:
            return (self.dir / "sv.log").read_text()
        except FileNotFoundError:
            return ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        headers = dict(headers or {})
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else None
        finally:
            connection.close()

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, csrf: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if csrf:
            headers["X-CSRF-Token"] = self.csrf
        return self.request("POST", path, json.dumps(body).encode() if body else None, headers)

    def instances(self) -> dict[str, dict[str, Any]]:
        status, document = self.get("/api/status")
        assert status == 200
        return {p["name"]: p for p in document["programs"]}

    def wait_state(self, name: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            instance = self.instances().get(name)
            return instance if instance and instance["state"] == state else None

        found: dict[str, Any] = wait_for(reached, timeout, interval=0.05,
                                         message=f"{name} {state}")
        return found

    def cleanup(self) -> None:
        if (self.dir / "sv.pid").exists():
            self.cli("stop", timeout=60)
        for pid in tagged_pids(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not tagged_pids(self.tag), 10, message="test processes gone")


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[RunningSupervisor]:
    running = RunningSupervisor(tmp_path)
    try:
        running.start()
        for name in ("worker", "cron:0", "cron:1"):
            running.wait_state(name, "RUNNING")
        yield running
    finally:
        running.cleanup()


def test_status_matches_the_supervisor(supervisor: RunningSupervisor) -> None:
    status, document = supervisor.get("/api/status")
    assert status == 200
    assert document["pid"] == supervisor.pid()
    assert document["config"] == str(supervisor.ini)
    instances = {p["name"]: p for p in document["programs"]}
    assert set(instances) == {"worker", "cron:0", "cron:1"}
    for instance in instances.values():
        assert pid_alive(instance["pid"]) and instance["memory_rss"] > 0
    assert document["program_names"] == ["cron", "worker"]


#: a program that ignores SIGTERM and ends once the file "release" exists beside the config
#: (see release()): it stops when the test is done looking at it
STUBBORN = """
[program:stubborn]
command = sh -c 'trap "" TERM; while [ ! -e release ]; do sleep 0.05; done'
directory = %(here)s
startsecs = 0
stopwaitsecs = 60
"""


def release(running: RunningSupervisor) -> None:
    (running.dir / "release").touch()


def reload_without_stubborn(running: RunningSupervisor) -> int:
    """Remove the stubborn program from the running supervisor's file and reload: its pid,
    still stopping."""
    stubborn = running.wait_state("stubborn", "RUNNING")["pid"]
    running.ini.write_text(running.ini.read_text().replace(STUBBORN, ""))
    reloaded = running.cli("reload")
    assert reloaded.returncode == 0 and "removed: stubborn" in reloaded.stdout, reloaded
    return int(stubborn)


def test_a_removed_program_is_listed_until_it_has_stopped(tmp_path: Path) -> None:
    running = RunningSupervisor(tmp_path, PROGRAMS + STUBBORN)
    try:
        running.start()
        stubborn = reload_without_stubborn(running)
        status, document = running.get("/api/status")
        release(running)
        assert status == 200
        assert "stubborn" not in {p["name"] for p in document["programs"]}
        [removed] = document["removed"]
        assert (removed["name"], removed["state"], removed["pid"]) == (
            "stubborn", "STOPPING", stubborn)
        assert removed["memory_rss"] > 0
        wait_for(lambda: running.get("/api/status")[1]["removed"] == [], 15,
                 message="no longer listed once it exited")
        assert not pid_alive(stubborn)
    finally:
        release(running)
        running.cleanup()


def test_the_page_answers_during_a_shutdown_and_changes_nothing(tmp_path: Path) -> None:
    """The page stays up while the programs stop (as supervisord's servers do); a scale-up
    asked meanwhile used to start an instance the shutdown no longer waited for, which
    outlived the supervisor."""
    running = RunningSupervisor(tmp_path, PROGRAMS + STUBBORN)
    try:
        running.start()
        running.wait_state("stubborn", "RUNNING")
        stopping = subprocess.Popen([sys.executable, "-m", "daemonkit", "supervise", "-c",
                                     str(running.ini), "stop"], cwd=running.dir,
                                    env=running.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        try:
            running.wait_state("stubborn", "STOPPING")
            status, answer = running.post("/api/programs/cron/scale", {"delta": 1})
            assert (status, answer) == (409, {"ok": False,
                                              "error": "the supervisor is stopping"}), answer
            assert "cron:2" not in running.instances()
        finally:
            release(running)
            _, err = stopping.communicate(timeout=60)
        assert stopping.returncode == 0, err
        assert tagged_pids(running.tag) == []  # nothing outlived the supervisor
    finally:
        release(running)
        running.cleanup()


def test_restart_stop_start_through_the_api(supervisor: RunningSupervisor) -> None:
    before = supervisor.instances()["worker"]["pid"]
    status, answer = supervisor.post("/api/programs/worker/restart")
    assert status == 200 and answer["ok"] is True, answer
    after = supervisor.wait_state("worker", "RUNNING")["pid"]
    assert after != before and not pid_alive(before)

    status, answer = supervisor.post("/api/programs/cron%3A0/stop")
    assert status == 200, answer
    stopped = supervisor.instances()["cron:0"]
    assert stopped["state"] == "STOPPED" and stopped["pid"] is None
    assert supervisor.instances()["cron:1"]["state"] == "RUNNING"
    assert supervisor.post("/api/programs/cron%3A0/start")[0] == 200
    assert pid_alive(supervisor.instances()["cron:0"]["pid"])


def test_scale_adds_and_removes_an_instance(supervisor: RunningSupervisor) -> None:
    status, answer = supervisor.post("/api/programs/cron/scale", {"delta": 1})
    assert status == 200 and answer["numprocs"] == 3, answer
    added = supervisor.wait_state("cron:2", "RUNNING")["pid"]
    status, _ = supervisor.post("/api/programs/cron/scale", {"delta": -1})
    assert status == 200
    wait_for(lambda: "cron:2" not in supervisor.instances(), 15, message="cron:2 removed")
    wait_for(lambda: not pid_alive(added), 15, message=f"pid {added} gone")


def test_refusals_change_nothing(supervisor: RunningSupervisor) -> None:
    before = supervisor.instances()["worker"]["pid"]
    assert supervisor.post("/api/programs/worker/stop", csrf=False)[0] == 403
    assert supervisor.request("POST", "/api/programs/worker/stop", None, {
        "X-CSRF-Token": supervisor.csrf, "Origin": "http://evil.example"})[0] == 403
    assert supervisor.get("/api/programs/worker/stop")[0] == 405
    assert supervisor.get("/api/programs/nope")[0] == 404
    assert supervisor.post("/api/programs/nope/restart")[0] == 404
    assert supervisor.instances()["worker"]["pid"] == before and pid_alive(before)


def test_log_view_follows_the_stdout_log(supervisor: RunningSupervisor) -> None:
    status, first = supervisor.get("/api/programs/worker/log?lines=3")
    assert status == 200 and first["path"] == str(supervisor.dir / "worker.log")
    pid = supervisor.instances()["worker"]["pid"]

    def more() -> dict[str, Any] | None:
        _, chunk = supervisor.get(f"/api/programs/worker/log?offset={first['offset']}"
                                  f"&inode={first['inode']}")
        return chunk if f"worker tick {pid}" in chunk["text"] else None

    chunk = wait_for(more, 10, message="new ticks in the log view")
    assert chunk["reset"] is False
    status, answer = supervisor.get("/api/programs/cron/log")
    assert status == 404 and "no stdout_logfile" in answer["error"]


def test_non_loopback_without_credentials_refuses_to_start(tmp_path: Path) -> None:
    refused = RunningSupervisor(tmp_path, web="listen = 0.0.0.0:7865")
    try:
        result = refused.cli("start")
        assert result.returncode == 6, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "[web] listen" in lines[0] and "token" in lines[0]
        assert not tagged_pids(refused.tag)
    finally:
        refused.cleanup()


def test_port_in_use_fails_start_and_leaves_no_children(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = RunningSupervisor(tmp_path, web=f"listen = 127.0.0.1:{taken.getsockname()[1]}")
    try:
        result = busy.cli("start")
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "cannot listen on 127.0.0.1" in result.stderr + busy.log()
        wait_for(lambda: not tagged_pids(busy.tag), 15, message="no process left behind")
    finally:
        taken.close()
        busy.cleanup()


# -- a hung browser connection never delays a respawn ---------------------------------------

RESPAWN_PROGRAMS = """
[program:victim]
command = sh %(here)s/victim.sh
numprocs = 8
process_name = %(program_name)s:%(process_num)d
autorestart = true
startsecs = 0
stopwaitsecs = 2

[program:chatty]
command = sh -c 'head -c 2000000 /dev/zero | tr "\\000" x | fold -w 99; exec sleep 1000'
stdout_logfile = chatty.log
startsecs = 0
"""


def settled(running: RunningSupervisor) -> None:
    """Every victim up for over QUICK_EXIT_S (1 s): a kill is answered by a respawn at once,
    not by crash-loop backoff."""
    def all_old() -> bool:
        victims = [i for n, i in running.instances().items() if n.startswith("victim:")]
        return len(victims) == 8 and all(i["state"] == "RUNNING" and i["uptime_s"] > 1.05
                                         for i in victims)

    wait_for(all_old, 15, interval=0.05, message="victims up for over 1 s")


def measure_respawns(running: RunningSupervisor, starts: Path) -> list[float]:
    """Kill every victim once (SIGKILL); seconds from the kill to its successor's first line."""
    latencies = []
    for name, instance in sorted(running.instances().items()):
        if not name.startswith("victim:"):
            continue
        seen = len(starts.read_text().splitlines())
        killed_at = time.time()
        os.kill(instance["pid"], signal.SIGKILL)
        lines = wait_for(lambda seen=seen: (found := starts.read_text().splitlines()[seen:])
                         and found, 10, interval=0.001, message=f"{name} respawned")
        latencies.append(float(lines[0]) - killed_at)
    return latencies


def test_stalled_clients_do_not_delay_respawns(tmp_path: Path) -> None:
    (tmp_path / "victim.sh").write_text('date +%s.%N >> "$(dirname "$0")/starts.txt"\n'
                                        "exec sleep 1000\n")
    running = RunningSupervisor(tmp_path, RESPAWN_PROGRAMS)
    starts = tmp_path / "starts.txt"
    stalled: list[socket.socket] = []
    try:
        running.start()
        wait_for(lambda: starts.exists() and len(starts.read_text().splitlines()) >= 8, 15,
                 message="8 victims started")
        wait_for(lambda: (tmp_path / "chatty.log").exists()
                 and (tmp_path / "chatty.log").stat().st_size >= 2_000_000, 30,
                 message="chatty log written")
        settled(running)
        baseline = measure_respawns(running, starts)

        for _ in range(100):  # half a request line, then silence
            sock = socket.create_connection((running.host, running.port), timeout=5)
            sock.sendall(b"GET /api/sta")
            stalled.append(sock)
        for _ in range(10):  # ask for 256 KiB of log and never read it
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((running.host, running.port))
            sock.sendall(b"GET /api/programs/chatty/log?offset=0 HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(sock)
        assert running.get("/api/status")[0] == 200  # the page still answers meanwhile
        settled(running)
        with_stalls = measure_respawns(running, starts)
        assert running.get("/api/status")[0] == 200
    finally:
        for sock in stalled:
            sock.close()
        running.cleanup()

    base_median, stall_median = statistics.median(baseline), statistics.median(with_stalls)
    print(f"\nrespawn latency (kill -9 -> successor's first line), 8 kills each: "
          f"baseline median {base_median * 1000:.1f} ms max {max(baseline) * 1000:.1f} ms; "
          f"with 110 stalled HTTP clients median {stall_median * 1000:.1f} ms "
          f"max {max(with_stalls) * 1000:.1f} ms; ratio {stall_median / base_median:.2f}")
    assert stall_median < max(3 * base_median, base_median + 0.05), (baseline, with_stalls)
    assert max(with_stalls) < 1.0, with_stalls
