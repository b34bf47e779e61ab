"""Listening sockets owned by daemonkit: bound before the privilege drop, received from
systemd's socket activation (sd_listen_fds semantics, exercised the way systemd sets them
up), and handed over by `restart` without refusing a connection."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, SERVICES, Service, WorldRuntime, free_port, pid_alive, wait_for

from daemonkit import PidFile
from daemonkit.control import request

ECHO = ROOT / "examples" / "echo.py"


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[Service]:
    service = Service(ECHO, tmp_path, "echo", events_option=False)
    service.port = free_port()  # type: ignore[attr-defined]
    service.extra = ["--listen", f"tcp://127.0.0.1:{service.port}"]  # type: ignore[attr-defined]
    yield service
    service.cleanup()


def ping(port: int, text: str = "ping", timeout: float = 5.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(f"{text}\n".encode())
        return client.makefile().readline()


def test_echo_example_serves_on_its_declared_address(echo: Service) -> None:
    started = echo.cli("start")
    assert started.returncode == 0, started.stderr
    assert ping(echo.port) == "ping\n"  # type: ignore[attr-defined]
    status = json.loads(echo.cli("status", "--json").stdout)
    assert (status["connections"], status["lines"]) == (1, 1)
    assert echo.cli("stop").returncode == 0
    with pytest.raises(ConnectionRefusedError):
        ping(echo.port)  # type: ignore[attr-defined]


def test_a_taken_port_fails_start_with_the_reason(echo: Service) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", echo.port))  # type: ignore[attr-defined]
        squatter.listen()
        failed = echo.cli("start")
    assert failed.returncode == 1
    assert failed.stderr.strip() == (f"echo: DaemonkitError: cannot listen on tcp://127.0.0.1:"
                                     f"{echo.port}: Address already in use")  # type: ignore
    assert echo.pid() is None


def test_bad_addresses_are_one_line_errors(echo: Service) -> None:
    for address, why in (("tcp://localhost:80", "is not an IP address"),
                         ("tcp://127.0.0.1:99999", "from 1 to 65535"),
                         ("udp://127.0.0.1:53", "expected tcp://HOST:PORT or unix:/path"),
                         ("tcp://::1:80", "in brackets")):
        result = echo.cli("start", "--listen", address)
        assert result.returncode == 6, (address, result.stderr)
        assert why in result.stderr and len(result.stderr.strip().splitlines()) == 1


def free_privileged_port() -> int:
    for port in range(900, 1000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024 on 127.0.0.1")


def test_a_privileged_port_with_a_privilege_drop(world_runtime: WorldRuntime,
                                                 world_tmp: Path) -> None:
    port = free_privileged_port()
    command = [world_runtime.python, str(world_runtime.root / "examples" / "echo.py"),
               "--pidfile", str(world_tmp / "echo.pid"), "--listen",
               f"tcp://127.0.0.1:{port}", "--user", "nobody"]
    started = subprocess.run([*command, "start"], capture_output=True, text=True,
                             env=world_runtime.env, timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    pid = int((world_tmp / "echo.pid").read_text())
    try:
        with open(f"/proc/{pid}/status") as status:
            uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        assert uids == ["65534"] * 4
        assert ping(port) == "ping\n"
    finally:
        subprocess.run([*command, "stop"], capture_output=True, env=world_runtime.env,
                       timeout=60, check=False)
    assert not pid_alive(pid)


def test_a_unix_socket_address(tmp_path: Path) -> None:
    service = Service(ECHO, tmp_path, "echo", events_option=False)
    path = tmp_path / "echo.sock"
    service.extra = ["--listen", f"unix:{path}"]
    try:
        assert service.cli("start").returncode == 0
        assert path.stat().st_mode & 0o777 == 0o666
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
            client.sendall(b"over unix\n")
            assert client.makefile().readline() == "over unix\n"
        assert service.cli("stop").returncode == 0
    finally:
        service.cleanup()


# -- systemd socket activation -----------------------------------------------------------------

ACTIVATE = textwrap.dedent("""
    # does what systemd does for a .socket unit: the listening sockets as fds 3, 4, ...,
    # LISTEN_PID = the pid of the process it executes, LISTEN_FDS, LISTEN_FDNAMES
    import os, socket, sys
    ports = [int(p) for p in sys.argv[1].split(",")]
    names = sys.argv[2]
    socks = []
    for port in ports:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        socks.append(sock)
    high = [os.dup(sock.fileno()) + 100 for sock in socks]  # out of the way of 3, 4, ...
    for fd, sock in zip(high, socks):
        os.dup2(sock.fileno(), fd)
    for target, fd in enumerate(high, start=3):
        os.dup2(fd, target)
        os.set_inheritable(target, True)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(socks)),
                      LISTEN_FDNAMES=names)
    os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
""")


def activated(ports: list[int], names: str, argv: list[str], **kwargs: object
              ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", ACTIVATE, ",".join(map(str, ports)), names,
                             *argv], text=True, **kwargs)  # type: ignore[call-overload]


def test_socket_activation_in_the_foreground_matches_names(tmp_path: Path) -> None:
    """Two sockets passed in the other order than declared: matched by name."""
    first, second = free_port(), free_port()
    pidfile = tmp_path / "echo.pid"
    service = activated([second, first], "b:a", [
        str(ECHO), "run", "--pidfile", str(pidfile), "--listen", "a=tcp://127.0.0.1:1",
        "--listen", "b=tcp://127.0.0.1:2"])
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(service.pid))
        wait_for((tmp_path / "echo.ctl").exists)
        status = subprocess.run([sys.executable, str(ECHO), "status", "--pidfile",
                                 str(pidfile)], capture_output=True, text=True, check=False)
        assert status.returncode == 0, status.stdout
        assert ping(first) == "ping\n" and ping(second) == "ping\n"  # nothing bound 1 or 2
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


def test_socket_activation_on_another_address_than_declared_is_said(tmp_path: Path) -> None:
    port, declared = free_port(), free_port()
    service = activated([port], "echo", [str(ECHO), "run", "--pidfile", str(tmp_path / "e.pid"),
                                         "--listen", f"tcp://127.0.0.1:{declared}"],
                        stderr=subprocess.PIPE)
    try:
        assert service.stderr is not None
        note = service.stderr.readline()
        assert note.strip() == (f"echo: note: systemd passed a socket on tcp://127.0.0.1:{port} "
                                f"for --listen tcp://127.0.0.1:{declared}; serving where systemd "
                                "listens")
        assert wait_for(lambda: _answers(port)) == "ping\n"
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


def _answers(port: int) -> str | None:
    try:
        return ping(port)
    except OSError:
        return None


def test_socket_activation_of_a_forking_start_passes_them_to_the_daemon(
        tmp_path: Path) -> None:
    """Type=forking: LISTEN_PID names the start command, whose daemon inherits the sockets."""
    port = free_port()
    service = Service(ECHO, tmp_path, "echo", events_option=False)
    starter = activated([port], "echo.socket", [str(ECHO), "start", "--pidfile",
                                                str(service.pidfile)], stdout=subprocess.PIPE)
    try:
        out, _ = starter.communicate(timeout=30)
        assert starter.returncode == 0 and "started" in out
        service.remember_pid()
        assert ping(port) == "ping\n"  # no --listen: every passed socket, in systemd's order
    finally:
        service.cleanup()


def test_processes_the_daemon_starts_do_not_see_the_sockets(probe: Service) -> None:
    port = free_port()
    service = activated([port], "x", [str(SERVICES / "probe.py"), "run", "--spawn-child",
                                      *probe.argv("run")[3:]])
    try:
        probe.wait_event("child_has_listen_fds=False")
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


# -- restart with handover -----------------------------------------------------------------------


class Pinger(threading.Thread):
    """A client connecting, sending a line and reading it back, in a loop."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.done = threading.Event()
        self.answered = 0
        self.failures: list[str] = []

    def run(self) -> None:
        for number in range(100_000):
            if self.done.is_set():
                return
            try:
                if ping(self.port, f"n{number}") != f"n{number}\n":
                    self.failures.append(f"n{number}: wrong answer")
                else:
                    self.answered += 1
            except OSError as exc:
                self.failures.append(f"n{number}: {exc!r}")


def test_restart_hands_the_sockets_over_and_refuses_no_connection(echo: Service) -> None:
    assert echo.cli("start").returncode == 0
    pingers = [Pinger(echo.port) for _ in range(4)]  # type: ignore[attr-defined]
    for pinger in pingers:
        pinger.start()
    pids = [echo.pid()]
    try:
        for _ in range(5):
            wait_for(lambda: all(p.answered for p in pingers))
            restarted = echo.cli("restart")
            assert restarted.returncode == 0, restarted.stderr
            assert "took over its listening sockets" in restarted.stdout
            echo.remember_pid()
            pids.append(echo.pid())
    finally:
        for pinger in pingers:
            pinger.done.set()
        for pinger in pingers:
            pinger.join(30)
    assert len(set(pids)) == 6, pids
    assert not any(pid_alive(pid) for pid in pids[:-1] if pid is not None)
    assert [f for p in pingers for f in p.failures] == []
    assert sum(p.answered for p in pingers) > 20
    assert (echo.workdir / "echo.ctl").exists() and not (echo.workdir / "echo.next.ctl").exists()
    status = json.loads(echo.cli("status", "--json").stdout)
    assert status["pid"] == pids[-1] and status["state"] == "running"
    assert echo.cli("stop").returncode == 0


def test_a_failing_successor_leaves_the_old_daemon_running(tmp_path: Path) -> None:
    probe = Service(SERVICES / "probe.py", tmp_path, "probe")
    port = free_port()
    probe.extra = ["--listen", f"tcp://127.0.0.1:{port}"]
    try:
        assert probe.cli("start").returncode == 0
        old = probe.pid()
        failed = probe.cli("restart", "--setup-fail", "the new version cannot start")
        assert failed.returncode == 1
        assert failed.stderr.splitlines()[-2:] == [
            "probe: ValueError: the new version cannot start",
            f"probe: the running daemon (pid {old}) keeps running"]
        assert probe.pid() == old and pid_alive(old)
        assert json.loads(probe.cli("status", "--json").stdout)["pid"] == old
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the socket is still open: connections queue for the old daemon
        assert not (tmp_path / "probe.next.ctl").exists()
    finally:
        probe.cleanup()


def a_successor_left_waiting(probe: Service) -> tuple[int, int]:
    """Start the probe ignoring SIGTERM, and kill a restart of it once its successor is up
    (the restart waits for the old daemon meanwhile): the pids of the old daemon and of the
    successor, which waits for a take-over that will not come."""
    assert probe.cli("start", "--ignore-term").returncode == 0
    old = probe.pid()
    assert old is not None
    restart = subprocess.Popen(probe.argv("restart"), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    successor = wait_for(lambda: [int(e.split("pid=")[1]) for e in probe.events_seen()
                                  if e.startswith("setup uid") and f"pid={old}" not in e])
    new = successor[0]
    probe.started_pids.add(new)
    wait_for((probe.workdir / "probe.next.ctl").exists)
    restart.kill()
    restart.wait()
    return old, new


def test_a_successor_nobody_takes_over_stops_itself(tmp_path: Path) -> None:
    """The restart command dies while the old daemon drains: the successor must not stay."""
    probe = Service(SERVICES / "probe.py", tmp_path, "probe")
    probe.extra = ["--listen", f"tcp://127.0.0.1:{free_port()}", "--start-timeout", "1",
                   "--stop-timeout", "5"]
    try:
        old, new = a_successor_left_waiting(probe)
        wait_for(lambda: not pid_alive(new), timeout=20, message="the successor stopped")
        assert pid_alive(old) and probe.pid() == old
        assert "not taken over within" in probe.log_text()
    finally:
        probe.cleanup()


def test_only_one_restart_at_a_time(echo: Service) -> None:
    assert echo.cli("start").returncode == 0
    first = subprocess.Popen(echo.argv("restart"), text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    second = echo.cli("restart")
    out, err = first.communicate(timeout=60)
    outcomes = sorted([first.returncode, second.returncode])
    assert outcomes in ([0, 0], [0, 1]), (out, err, second.stdout, second.stderr)
    if outcomes == [0, 1]:
        loser = err if first.returncode else second.stderr
        assert "cannot restart: another restart is already under way" in loser, loser
    echo.remember_pid()
    assert ping(echo.port) == "ping\n"  # type: ignore[attr-defined]
    daemons = [pid for pid in echo.started_pids if pid_alive(pid)]
    assert len(daemons) == 1, daemons


def a_probe_held_in_shutdown(tmp_path: Path) -> tuple[Service, Path]:
    """A probe on a port whose shutdown() waits for the file returned: a daemon of it
    stays stopping until the test creates that file."""
    probe = Service(SERVICES / "probe.py", tmp_path, "probe")
    release = tmp_path / "release"
    probe.extra = ["--listen", f"tcp://127.0.0.1:{free_port()}",
                   "--shutdown-until-file", str(release)]
    return probe, release


def test_a_restart_while_another_one_stops_the_old_daemon_is_refused(tmp_path: Path) -> None:
    """The first restart's successor waits for the pidfile while the old daemon is stopping:
    the second restart must not fall back to a plain stop and start, whose stop would stop
    that successor and fail the first restart."""
    probe, release = a_probe_held_in_shutdown(tmp_path)
    try:
        assert probe.cli("start").returncode == 0
        old = probe.pid()
        first = subprocess.Popen(probe.argv("restart"), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: "shutdown begin" in probe.events_seen(), timeout=30)
        second = probe.cli("restart")
        release.touch()
        _, first_err = first.communicate(timeout=60)
        probe.remember_pid()
        assert first.returncode == 0, first_err
        assert second.returncode == 1, second.stderr
        assert second.stderr.splitlines()[-1] == (
            "probe: cannot restart: another restart is already under way")
        assert not pid_alive(old)
        new = probe.pid()
        assert new is not None and new != old and pid_alive(new)
    finally:
        probe.cleanup()


def test_a_stop_during_a_restart_wins_over_its_take_over(tmp_path: Path) -> None:
    """`stop` while a restart's old daemon drains stops the successor first; the restart must
    not hand the pidfile to that stopping successor and say "restarted"."""
    probe, release = a_probe_held_in_shutdown(tmp_path)
    try:
        assert probe.cli("start").returncode == 0
        # the successor's shutdown() takes 6 s: still stopping when the old daemon is gone
        restart = subprocess.Popen(probe.argv("restart", "--shutdown-seconds", "6"), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: "shutdown begin" in probe.events_seen(), timeout=30)
        probe.started_pids.update(int(e.split("pid=")[1]) for e in probe.events_seen()
                                  if e.startswith("setup uid"))
        stopping = subprocess.Popen(probe.argv("stop"), text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        wait_for(lambda: probe.events_seen().count("shutdown begin") == 2, timeout=30,
                 message="the stop is stopping the successor")
        release.touch()
        out, err = restart.communicate(timeout=60)
        stopping.communicate(timeout=60)
        stopped = stopping
        assert stopped.returncode == 0, stopped.stderr
        assert restart.returncode == 1, out
        assert "the new daemon did not take over" in err, err
        assert not PidFile(probe.pidfile).observe().locked
        assert [pid for pid in probe.started_pids if pid_alive(pid)] == []
    finally:
        probe.cleanup()


def test_a_failed_start_leaves_the_socket_of_a_waiting_successor(tmp_path: Path) -> None:
    """A `start` that fails while a restart's successor waits for the pidfile (its old daemon
    died, its restart command too) cleans up leftovers: NAME.next.ctl, held under
    NAME.next.pid's lock, is no leftover."""
    probe = Service(SERVICES / "probe.py", tmp_path, "probe")
    port = free_port()
    probe.extra = ["--listen", f"tcp://127.0.0.1:{port}", "--stop-timeout", "20"]
    try:
        old, new = a_successor_left_waiting(probe)
        next_ctl = tmp_path / "probe.next.ctl"
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not pid_alive(old))
        failed = probe.cli("start")  # its daemon cannot bind the port the successor holds
        assert failed.returncode != 0, failed.stderr
        assert next_ctl.exists(), failed.stderr
        reply = request(str(next_ctl), {"cmd": "status"}, timeout_s=5.0)
        assert reply["pid"] == new, reply
    finally:
        probe.cleanup()


def test_restart_between_a_sync_and_an_async_version(tmp_path: Path) -> None:
    """The handed-over socket works for a blocking accept() and for asyncio alike."""
    port = free_port()
    sync = Service(SERVICES / "sync_echo.py", tmp_path, "echo", events_option=False)
    asynchronous = Service(ECHO, tmp_path, "echo", events_option=False)
    for service in (sync, asynchronous):
        service.extra = ["--listen", f"tcp://127.0.0.1:{port}"]
    pingers = [Pinger(port) for _ in range(2)]
    try:
        assert sync.cli("start").returncode == 0
        first = sync.pid()
        for pinger in pingers:
            pinger.start()
        for service in (asynchronous, sync, asynchronous):
            wait_for(lambda: all(p.answered for p in pingers))
            before = [p.answered for p in pingers]
            restarted = service.cli("restart")
            assert restarted.returncode == 0, restarted.stderr
            service.remember_pid()
            wait_for(lambda before=before: all(
                p.answered > b + 5 for p, b in zip(pingers, before, strict=True)))
    finally:
        for pinger in pingers:
            pinger.done.set()
        for pinger in pingers:
            pinger.join(30)
        sync.started_pids |= asynchronous.started_pids
        sync.cleanup()
    assert [f for p in pingers for f in p.failures] == []
    log = sync.log_text()
    assert f"echo[{first}]: echo exiting with status 0" in log, log
    assert "uncaught exception" not in log


def test_handover_of_a_daemon_that_dropped_privileges(world_runtime: WorldRuntime,
                                                      world_tmp: Path) -> None:
    """The successor runs as nobody in a root-owned directory: the restart command (root)
    moves its control socket into place, and the exit record still follows."""
    run_dir = world_tmp / "run"
    run_dir.mkdir(mode=0o755)
    port = free_port()
    command = [world_runtime.python, str(world_runtime.root / "examples" / "echo.py"),
               "--pidfile", str(run_dir / "echo.pid"), "--listen", f"tcp://127.0.0.1:{port}",
               "--user", "nobody"]

    def cli(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, action], capture_output=True, text=True,
                              env=world_runtime.env, timeout=60, check=False)

    assert cli("start").returncode == 0
    pids = {int((run_dir / "echo.pid").read_text())}
    try:
        restarted = cli("restart")
        assert restarted.returncode == 0, restarted.stderr
        new = int((run_dir / "echo.pid").read_text())
        pids.add(new)
        assert ping(port) == "ping\n"
        status = cli("status")
        assert status.returncode == 0 and f"pid {new}" in status.stdout, status.stdout
        assert json.loads((run_dir / "echo.exit").read_text())["pid"] == new
        assert sorted(os.listdir(run_dir)) == ["echo.ctl", "echo.exit", "echo.pid"]
        # what a successor gets over SCM_RIGHTS is never inherited by what it execs
        for fd in os.listdir(f"/proc/{new}/fd"):
            target = os.readlink(f"/proc/{new}/fd/{fd}")
            if target == str(run_dir / "echo.pid") or target.startswith("socket:"):
                with open(f"/proc/{new}/fdinfo/{fd}") as info:
                    flags = int(info.read().split("flags:")[1].split()[0], 8)
                assert flags & os.O_CLOEXEC, (fd, target)
        assert cli("stop").returncode == 0
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not any(pid_alive(pid) for pid in pids)


def test_stop_during_a_restart_stops_both_daemons(tmp_path: Path) -> None:
    probe = Service(SERVICES / "probe.py", tmp_path, "probe")
    probe.extra = ["--listen", f"tcp://127.0.0.1:{free_port()}"]
    try:
        assert probe.cli("start").returncode == 0
        old = probe.pid()
        restart = subprocess.Popen(probe.argv("restart", "--setup-sleep", "2"), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        new = wait_for(lambda: [int(e.split("pid=")[1]) for e in probe.events_seen()
                                if e.startswith("setup uid") and f"pid={old}" not in e])[0]
        probe.started_pids.add(new)
        stopped = probe.cli("stop")
        _, err = restart.communicate(timeout=60)
        assert stopped.returncode == 0
        assert not pid_alive(new) and not pid_alive(old)
        assert restart.returncode != 0, err
        assert probe.cli("status").returncode == 3
    finally:
        probe.cleanup()


def test_a_failed_handover_does_not_block_the_next_restart(tmp_path: Path) -> None:
    probe = Service(SERVICES / "probe.py", tmp_path, "probe")
    probe.extra = ["--listen", f"tcp://127.0.0.1:{free_port()}"]
    try:
        assert probe.cli("start").returncode == 0
        assert probe.cli("restart", "--setup-fail", "db down").returncode == 1
        again = probe.cli("restart")
        assert again.returncode == 0, again.stderr
        assert "took over its listening sockets" in again.stdout
    finally:
        probe.cleanup()


def test_a_plain_accept_survives_a_listener_made_non_blocking_elsewhere(probe: Service) -> None:
    """During a restart the two daemons share each listener's file status flags; an asyncio
    one makes it non-blocking. A sync service's plain accept() must still wait."""
    import fcntl

    from daemonkit.control import exchange

    port = free_port()
    assert probe.cli("start", "--accept-loop", "--listen", f"tcp://127.0.0.1:{port}"
                     ).returncode == 0
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    probe.wait_event("accepted 1")
    reply, fds = exchange(str(probe.workdir / "probe.ctl"), {"cmd": "handover"})
    assert reply["ok"] and len(fds) == 1
    flags = fcntl.fcntl(fds[0], fcntl.F_GETFL)
    fcntl.fcntl(fds[0], fcntl.F_SETFL, flags | os.O_NONBLOCK)  # as asyncio's setblocking
    exchange(str(probe.workdir / "probe.ctl"), {"cmd": "handover-abort"})
    os.close(fds[0])
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    probe.wait_event("accepted 2")
    assert "uncaught exception" not in probe.log_text()
