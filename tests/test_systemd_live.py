"""The shipped units and the ones ``daemonkit init-files`` writes, run under a real systemd.

Each test runs twice: under the host's own systemd (Debian 12: systemd 252, Python 3.11) and
under Debian 13's (systemd 257, Python 3.13), both booted by ``systemd-nspawn`` (see
``systemd_machine.py``). Everything is driven with ``systemctl`` and observed with
``systemctl show`` and ``journalctl`` (and, for the forking units, their log file): what an
administrator would see. ``tests/services/sdprobe.py`` is the user's script where the
examples cannot show a behaviour (a setup that fails, a switchable ``healthy()``...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, pid_alive, wait_for
from systemd_machine import EXAMPLES, PYTHON, SERVICES, SRC, InstalledUnits, Machine

from daemonkit.initfiles import NOTIFY_RELOAD_SINCE, RESTART_BACKOFF_SINCE

# the Debian machine is built inside the first test that uses it (debootstrap, pip)
pytestmark = pytest.mark.timeout(900)

INIT_SYSTEMD = ROOT / "init" / "systemd"
#: what a reload must take at least when systemd waits for it (sdprobe's reload-seconds)
SLOW_RELOAD_S = 1.5
#: the core test files that also run inside the Debian machine (its Python); extend freely
CORE_TEST_FILES = (
    "tests/test_pidfile.py",
    "tests/test_cli_lifecycle.py",
    "tests/test_cli_hardening.py",
    "tests/test_logging.py",
    "tests/test_notify.py",
    "tests/test_privileges.py",
    "tests/test_container_init.py",
    "tests/test_async.py",
    "tests/test_hostile_user.py",
    "tests/test_listen.py",
)
debian_only = pytest.mark.parametrize("systemd_machine", ["debian"], indirect=True)


class Units(InstalledUnits):
    """The machine's units for one test, with sdprobe (the user's script) at hand."""

    def generate(self, name: str, kind: str, *service_args: str,
                 init_files_args: tuple[str, ...] = ()) -> str:
        """The unit ``daemonkit init-files`` writes for sdprobe, installed."""
        return self.init_files(f"{SERVICES}/sdprobe.py", name, kind, *service_args,
                               user="sdprobe", options=("--start-timeout", "10",
                                                        "--stop-timeout", "15",
                                                        *init_files_args))


@pytest.fixture
def units(systemd_machine: Machine) -> Iterator[Units]:
    for user in ("hello", "ingestd", "sdprobe"):
        systemd_machine.add_user(user)
    installed = Units(systemd_machine)
    yield installed
    installed.cleanup()


def start(machine: Machine, unit: str) -> int:
    """``systemctl start``, which must succeed; returns the MainPID."""
    cursor = machine.cursor()
    result = machine.systemctl("start", unit)
    journal = "\n".join(machine.journal(unit, cursor))
    assert result.returncode == 0, f"{result.stderr}\n{journal}"
    state = machine.show(unit, "ActiveState", "SubState", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    return int(state["MainPID"])


def stop(machine: Machine, unit: str) -> None:
    """``systemctl stop``, which must succeed cleanly: the daemon exited 0, nothing killed."""
    cursor = machine.cursor()
    result = machine.systemctl("stop", unit)
    state = machine.show(unit, "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    journal = "\n".join(machine.journal(unit, cursor))
    assert result.returncode == 0, f"{result.stderr}\n{journal}"
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), (
        f"{state}\n{journal}")


def reload(machine: Machine, unit: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = machine.systemctl("reload", unit)
    return result, time.monotonic() - started


def mark(machine: Machine, name: str, marker: str, text: str = "") -> None:
    """Switch sdprobe's behaviour: a file in its working directory."""
    machine.write_file(f"/var/lib/{name}/{marker}", text)


def unmark(machine: Machine, name: str, marker: str) -> None:
    machine.run("rm", "-f", f"/var/lib/{name}/{marker}", check=True)


def send_records(machine: Machine, count: int) -> str:
    """The ingestion example's own client, inside (the daemon listens on its loopback)."""
    client = f"{EXAMPLES}/ingest/client.py"
    endpoint = "tcp://127.0.0.1:5555"
    result = machine.run("sh", "-c", f'"$1" "$2" --endpoint {endpoint} gen {count} | '
                         f'"$1" "$2" --endpoint {endpoint} send -', "sh", PYTHON, client,
                         check=True)
    return result.stdout


# -- the shipped units ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hello", "ingestd"])
def test_shipped_notify_unit_starts_reloads_and_stops(systemd_machine: Machine, units: Units,
                                                      name: str) -> None:
    machine = systemd_machine
    unit = units.install(f"{name}.service", (INIT_SYSTEMD / f"{name}.service").read_text())
    cursor = machine.cursor()
    pid = start(machine, unit)
    machine.wait_journal(unit, f"{name} ready (pid {pid})", cursor)
    if name == "ingestd":
        assert "stored 20, duplicates 0" in send_records(machine, 20)
    result, _ = reload(machine, unit)
    assert result.returncode == 0, result.stderr
    assert machine.main_pid(unit) == pid
    machine.wait_journal(unit, "reloaded", cursor)
    stop(machine, unit)
    machine.wait_journal(unit, f"{name} exiting with status 0", cursor)


@pytest.mark.parametrize("name", ["hello", "ingestd"])
def test_shipped_forking_unit_starts_reloads_reopens_and_stops(
        systemd_machine: Machine, units: Units, name: str) -> None:
    """The unit python-daemon's owner change broke (``Unable to change process owner``)."""
    machine = systemd_machine
    unit = units.install(f"{name}-forking.service",
                         (INIT_SYSTEMD / f"{name}-forking.service").read_text())
    log = f"/var/log/{name}/{name}.log"
    cursor = machine.cursor()
    pid = start(machine, unit)
    # PIDFile= names the daemon that `start` reported, and systemd took it as the main pid
    machine.wait_journal(unit, f"{name} started (pid {pid})", cursor)
    assert machine.read_file(f"/run/{name}/{name}.pid").strip() == str(pid)
    if name == "ingestd":
        assert "stored 20, duplicates 0" in send_records(machine, 20)
    result, _ = reload(machine, unit)
    assert result.returncode == 0, result.stderr
    assert machine.main_pid(unit) == pid
    assert "reloaded" in machine.read_file(log)
    # what logrotate does: rename, then `systemctl kill -s USR1`; the daemon opens a new file
    machine.run("mv", log, f"{log}.1", check=True)
    assert machine.systemctl("kill", "--signal=USR1", unit).returncode == 0
    wait_for(lambda: machine.exists(log), 10, 0.05, f"a new {log}")
    result, _ = reload(machine, unit)
    assert result.returncode == 0, result.stderr
    assert "reloaded" in machine.read_file(log)
    assert machine.read_file(f"{log}.1").count("reloaded") == 1
    stop(machine, unit)
    assert f"{name} exiting with status 0" in machine.read_file(log)


@pytest.mark.parametrize("kind", ["notify", "forking"])
def test_shipped_ingestd_that_cannot_bind_fails_start_with_the_reason(
        systemd_machine: Machine, units: Units, kind: str) -> None:
    """A setup() that raises (the port is taken) fails ``systemctl start``, reason in the
    journal."""
    machine = systemd_machine
    unit_name = "ingestd.service" if kind == "notify" else "ingestd-forking.service"
    unit = units.install(unit_name, (INIT_SYSTEMD / unit_name).read_text())
    blocker = units.install("dk-port-5555.service", PORT_BLOCKER_UNIT)
    start(machine, blocker)
    cursor = machine.cursor()
    result = machine.systemctl("start", unit)
    assert result.returncode != 0
    machine.wait_journal(unit, "cannot bind tcp://127.0.0.1:5555", cursor)
    assert machine.show(unit, "ActiveState")["ActiveState"] in ("failed", "activating")


PORT_BLOCKER_UNIT = """\
[Service]
Type=notify
ExecStart=/usr/bin/python3 -c 'import os, socket, time; \\
    s = socket.create_server(("127.0.0.1", 5555)); \\
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \\
    n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"]); \\
    time.sleep(3600)'
"""


# -- the units init-files writes for a user's script ---------------------------------------------


@pytest.mark.parametrize("kind", ["notify", "forking"])
def test_generated_unit_whose_setup_raises_fails_start(systemd_machine: Machine, units: Units,
                                                       kind: str) -> None:
    machine = systemd_machine
    unit = units.generate(f"sdp-setup-{kind}", kind, "--setup-fail", "no database configured")
    cursor = machine.cursor()
    result = machine.systemctl("start", unit)
    assert result.returncode != 0
    machine.wait_journal(unit, "ValueError: no database configured", cursor)


@pytest.mark.parametrize("kind", ["notify", "forking"])
def test_generated_unit_starts_and_stops_cleanly(systemd_machine: Machine, units: Units,
                                                 kind: str) -> None:
    machine = systemd_machine
    name = f"sdp-basic-{kind}"
    unit = units.generate(name, kind)
    cursor = machine.cursor()
    pid = start(machine, unit)
    if kind == "forking":
        assert machine.read_file(f"/run/{name}/{name}.pid").strip() == str(pid)
        machine.wait_journal(unit, f"sdprobe started (pid {pid})", cursor)
    else:
        machine.wait_journal(unit, f"sdprobe ready (pid {pid})", cursor)
    stop(machine, unit)


#: (kind, init-files options): the notify unit's ExecReload= runs the service's synchronous
#: `reload`, on every systemd; --notify-reload is tested below
EXEC_RELOAD_KINDS = {"forking": ("forking", ()), "notify-execreload": ("notify", ())}


@pytest.mark.parametrize("variant", list(EXEC_RELOAD_KINDS))
def test_generated_unit_reload_is_waited_for_and_a_failure_fails_it(
        systemd_machine: Machine, units: Units, variant: str) -> None:
    machine = systemd_machine
    kind, options = EXEC_RELOAD_KINDS[variant]
    name = f"sdp-reload-{variant}"
    unit = units.generate(name, kind, init_files_args=options)
    pid = start(machine, unit)
    mark(machine, name, "reload-seconds", str(SLOW_RELOAD_S))
    result, took = reload(machine, unit)
    assert result.returncode == 0, result.stderr
    assert took >= SLOW_RELOAD_S, f"systemctl reload returned after {took:.2f}s"
    unmark(machine, name, "reload-seconds")
    mark(machine, name, "reload-fails")
    cursor = machine.cursor()
    result, _ = reload(machine, unit)
    assert result.returncode != 0, "a raising reload() must fail systemctl reload"
    assert machine.main_pid(unit) == pid
    assert machine.show(unit, "ActiveState")["ActiveState"] == "active"
    if kind == "notify":
        machine.wait_journal(unit, "reload refused: reload-fails exists", cursor)
    else:
        assert "reload refused" in machine.read_file(f"/var/log/{name}/{name}.log")
    unmark(machine, name, "reload-fails")
    result, _ = reload(machine, unit)
    assert result.returncode == 0, result.stderr
    assert machine.main_pid(unit) == pid
    stop(machine, unit)


def test_watchdog_kills_an_unhealthy_service_and_restart_brings_it_back(
        systemd_machine: Machine, units: Units) -> None:
    machine = systemd_machine
    name = "sdp-watchdog"
    unit = units.generate(name, "notify", init_files_args=("--watchdog-sec", "2"))
    pid = start(machine, unit)
    assert machine.show(unit, "WatchdogUSec")["WatchdogUSec"] == "2s"
    fed_since_start = watchdog_fed_after(machine, unit, since_usec=0)
    cursor = machine.cursor()
    mark(machine, name, "unhealthy", str(pid))  # healthy() is False for this pid only
    machine.wait_journal(unit, "Watchdog timeout", cursor, timeout=20)

    def restarted() -> int | None:
        state = machine.show(unit, "MainPID", "ActiveState", "SubState")
        new_pid = int(state["MainPID"])
        running = (state["ActiveState"], state["SubState"]) == ("active", "running")
        return new_pid if running and new_pid not in (0, pid) else None

    new_pid = wait_for(restarted, 30, 0.2, "the service restarted by Restart=on-failure")
    assert int(machine.show(unit, "NRestarts")["NRestarts"]) >= 1
    watchdog_fed_after(machine, unit, since_usec=fed_since_start)  # the new one is fed again
    assert machine.main_pid(unit) == new_pid
    stop(machine, unit)


def watchdog_fed_after(machine: Machine, unit: str, since_usec: int) -> int:
    """Wait for a WATCHDOG=1 that systemd saw after ``since_usec`` (its monotonic clock)."""
    def fed() -> int | None:
        stamp = int(machine.show(unit, "WatchdogTimestampMonotonic")
                    ["WatchdogTimestampMonotonic"])
        return stamp if stamp > since_usec else None

    first = wait_for(fed, 10, 0.2, f"a watchdog ping of {unit}")
    return wait_for(lambda: (stamp := fed()) and stamp > first and stamp, 10, 0.2,
                    f"a second watchdog ping of {unit}")


@pytest.mark.parametrize("kind", ["notify", "forking"])
def test_stop_waits_for_the_critical_block(systemd_machine: Machine, units: Units,
                                           kind: str) -> None:
    machine = systemd_machine
    name = f"sdp-critical-{kind}"
    unit = units.generate(name, kind, "--critical-seconds", "3")
    log = f"/var/log/{name}/{name}.log"

    def lines() -> list[str]:
        if kind == "notify":
            return machine.journal(unit, cursor)
        return machine.read_file(log).splitlines() if machine.exists(log) else []

    cursor = machine.cursor()
    start(machine, unit)
    wait_for(lambda: any("begin 0" in line for line in lines()), 15, 0.1, "block 0 begun")
    stop(machine, unit)
    if kind == "notify":
        machine.wait_journal(unit, "sdprobe exiting with status 0", cursor)
    text = "\n".join(lines())
    assert "end 0" in text, text  # SIGTERM arrived inside block 0: it ran to its end
    assert "begin 1" not in text, text
    assert "sdprobe exiting with status 0" in text, text


def test_generated_forking_unit_reopens_its_log_on_usr1(systemd_machine: Machine,
                                                        units: Units) -> None:
    machine = systemd_machine
    name = "sdp-usr1"
    unit = units.generate(name, "forking")
    log = f"/var/log/{name}/{name}.log"
    start(machine, unit)
    machine.run("mv", log, f"{log}.1", check=True)
    assert machine.systemctl("kill", "--signal=USR1", unit).returncode == 0
    wait_for(lambda: machine.exists(log) and "logs reopened" in machine.read_file(log), 10,
             0.05, f"reopen_logs() writing to a new {log}")
    stop(machine, unit)
    assert "sdprobe exiting with status 0" in machine.read_file(log)
    assert "exiting" not in machine.read_file(f"{log}.1")


def test_generated_units_verify_with_the_machines_own_systemd(systemd_machine: Machine) -> None:
    """init-files picks the unit type the systemd at hand supports; that systemd agrees."""
    machine = systemd_machine
    output = "/tmp/dk-generated"
    machine.run(PYTHON, "-m", "daemonkit", "init-files", f"{SERVICES}/sdprobe.py", "--user",
                "sdprobe", "--output-dir", output, check=True)
    machine.add_user("sdprobe")
    notify = machine.read_file(f"{output}/systemd/sdprobe.service")
    assert "\nType=notify\n" in notify and "\nExecReload=" in notify
    assert ("\nRestartSteps=5\n" in notify) == (machine.systemd_version >= RESTART_BACKOFF_SINCE)
    for unit in ("sdprobe.service", "sdprobe-forking.service"):
        result = machine.run("systemd-analyze", "verify", f"{output}/systemd/{unit}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert (result.stdout + result.stderr).strip() == "", result.stdout + result.stderr


# -- Type=notify-reload (systemd >= 253) ---------------------------------------------------------


@debian_only
def test_notify_reload_reloads_through_sighup_and_waits(systemd_machine: Machine,
                                                        units: Units) -> None:
    """systemd sends SIGHUP; daemonkit answers RELOADING=1 with MONOTONIC_USEC, runs reload(),
    then READY=1; ``systemctl reload`` returns only then."""
    machine = systemd_machine
    assert machine.systemd_version >= NOTIFY_RELOAD_SINCE
    name = "sdp-notify-reload"
    unit = units.generate(name, "notify", init_files_args=("--notify-reload",))
    settings = machine.show(unit, "Type", "ReloadSignal", "ExecReload")
    assert settings["Type"] == "notify-reload", settings
    assert settings["ReloadSignal"] == "1", settings  # SIGHUP
    assert settings.get("ExecReload", "") == "", settings  # systemctl shows no empty list
    pid = start(machine, unit)
    mark(machine, name, "reload-seconds", str(SLOW_RELOAD_S))
    cursor = machine.cursor()
    machine.run("systemd-analyze", "log-level", "debug", check=True)
    try:
        result, took = reload(machine, unit)
    finally:
        machine.run("systemd-analyze", "log-level", "info", check=True)
    assert result.returncode == 0, result.stderr
    assert took >= SLOW_RELOAD_S, f"systemctl reload returned after {took:.2f}s"
    lines = machine.wait_journal(unit, "reload done 1", cursor)
    notifications = [line for line in lines if "RELOADING=1" in line]
    assert notifications and "MONOTONIC_USEC=" in notifications[0], "\n".join(lines)
    assert machine.main_pid(unit) == pid
    stop(machine, unit)


@debian_only
def test_notify_reload_cannot_report_a_failed_reload_on_systemd_257(
        systemd_machine: Machine, units: Units) -> None:
    """What systemd 257 does when reload() raises under Type=notify-reload (documented in
    init/README.md): the protocol has no way to say "failed" (READY=1 ends the reload job as
    a success), so ``systemctl reload`` exits 0; the service keeps running with its old state
    and the journal (``systemctl status``) has the error. Which is why ``init-files`` writes
    the ExecReload= unit unless told otherwise: its ``systemctl reload`` fails (tested above).
    If this test fails, systemd learnt to report reload failures: use it."""
    machine = systemd_machine
    name = "sdp-notify-reload-fails"
    unit = units.generate(name, "notify", init_files_args=("--notify-reload",))
    pid = start(machine, unit)
    mark(machine, name, "reload-fails")
    cursor = machine.cursor()
    result, _ = reload(machine, unit)
    assert result.returncode == 0, result.stderr
    assert machine.show(unit, "ReloadResult")["ReloadResult"] == "success"
    machine.wait_journal(unit, "reload failed, keeping the old state: ValueError: reload "
                         "refused", cursor)
    assert machine.main_pid(unit) == pid
    assert machine.show(unit, "ActiveState")["ActiveState"] == "active"
    unmark(machine, name, "reload-fails")
    result, _ = reload(machine, unit)
    assert result.returncode == 0, result.stderr
    machine.wait_journal(unit, "reload done 1", cursor)
    stop(machine, unit)


# -- the core tests on the Debian machine's Python -----------------------------------------------


@debian_only
def test_core_test_files_pass_on_the_debian_machines_python(systemd_machine: Machine) -> None:
    machine = systemd_machine
    result = machine.run(
        "sh", "-c", f'cd {SRC} && exec "$@"', "sh", PYTHON, "-m", "pytest", "-q",
        "-p", "no:cacheprovider", *CORE_TEST_FILES, env={"CI": "true"}, timeout=800)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"{machine.label} (Python {machine.python_version()}): {summary}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary


# -- the machine itself --------------------------------------------------------------------------


def test_a_dead_test_runner_takes_its_container_with_it(tmp_path: Path) -> None:
    """SIGKILL the process that booted a container: the kernel ends every process in it."""
    import systemd_machine as machines

    if os.geteuid() != 0 or machines.missing_tools():
        pytest.skip("needs root and " + ", ".join(machines.missing_tools()))
    script = tmp_path / "runner.py"
    script.write_text(RUNNER_SCRIPT)
    runner = subprocess.Popen([sys.executable, str(script), str(ROOT / "tests")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None
        words = runner.stdout.readline().split()
        assert words and words[0] == "booted", words
        workdir, name, nspawn, namespace = words[1], words[2], int(words[3]), words[4]
    finally:
        runner.kill()
        runner.wait()

    def left() -> list[int]:
        pids = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                if _pid_namespace(pid) == namespace]
        return [*pids, nspawn] if pid_alive(nspawn) else pids

    wait_for(lambda: not left(), 15, 0.05, "every process of the orphaned container gone")
    with open("/proc/self/mountinfo") as mountinfo:
        assert workdir not in mountinfo.read()
    shutil.rmtree(workdir, ignore_errors=True)
    machines.remove_nspawn_leftovers(name)


RUNNER_SCRIPT = """\
import os, sys, time
sys.path.insert(0, sys.argv[1])
import systemd_machine as machines
workdir = machines.new_workdir("orphan")
machine = machines.Machine("orphan", workdir / "root", workdir, bind_usr=True)
machines.build_host_root(machine.root)
machine.boot()
print("booted", workdir, machine.name, machine.nspawn_pid,
      os.readlink(f"/proc/{machine.pid}/ns/pid"), flush=True)
time.sleep(600)
"""


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


# -- socket activation, and the supervisor as a service -----------------------------------------

#: a client run inside the machine: connect, send a line, read it back, until a file appears
#: (bounded); prints how many were answered and how many failed, and why
ECHO_CLIENT = """
import os, socket, sys, time
answered, failures = 0, []
for number in range(200_000):
    if os.path.exists(sys.argv[1]):
        break
    try:
        with socket.create_connection(("127.0.0.1", 7007), timeout=10) as sock:
            sock.sendall(b"n%d\\n" % number)
            if sock.makefile("rb").readline() == b"n%d\\n" % number:
                answered += 1
            else:
                failures.append("wrong answer")
    except OSError as exc:
        failures.append(type(exc).__name__)
print(answered, len(failures), sorted(set(failures)))
"""


ECHO_PING = """
import socket
with socket.create_connection(("127.0.0.1", 7007), timeout=30) as sock:
    sock.sendall(b"ping\\n")
    print(sock.makefile().readline(), end="")
"""


def test_echo_socket_activation_and_a_restart_that_refuses_nothing(
        systemd_machine: Machine, units: Units) -> None:
    """echo.socket holds 127.0.0.1:7007; the first connection starts echo.service, which
    takes the socket from LISTEN_FDS; `systemctl restart` under load refuses no connection."""
    import threading

    machine = systemd_machine
    machine.add_user("echo")
    units.install("echo.service", (INIT_SYSTEMD / "echo.service").read_text())
    socket_unit = units.install("echo.socket", (INIT_SYSTEMD / "echo.socket").read_text())
    assert machine.systemctl("start", socket_unit).returncode == 0
    assert machine.show("echo.service", "ActiveState")["ActiveState"] == "inactive"
    ping = machine.run(PYTHON, "-c", ECHO_PING, timeout=60, check=True)
    assert ping.stdout == "ping\n", ping.stdout  # answered by the service it started
    wait_for(lambda: machine.show("echo.service", "SubState")["SubState"] == "running", 30,
             0.1, "echo.service activated by its socket")
    first = machine.main_pid("echo.service")
    outcome: list[str] = []
    client = threading.Thread(target=lambda: outcome.append(
        machine.run(PYTHON, "-c", ECHO_CLIENT, "/tmp/stop-now", timeout=300).stdout))
    client.start()
    pids = {first}
    try:
        for _ in range(3):  # with the activation, 4 starts: under systemd's rate limit (5/10s)
            assert machine.systemctl("restart", "echo.service").returncode == 0
            pids.add(machine.main_pid("echo.service"))
    finally:
        machine.write_file("/tmp/stop-now", "")
        client.join(300)
    answered, failed = outcome[0].split()[:2]
    assert (int(failed), int(answered) > 0) == (0, True), outcome[0]
    assert len(pids) == 4, pids
    stop(machine, "echo.service")
    assert machine.systemctl("stop", socket_unit).returncode == 0


SUPERVISOR_INI = """
[supervisord]
logfile = /var/log/daemonkit-supervisor/supervisor.log

[program:steady]
command = /bin/sleep 1000

[program:changing]
command = /bin/sleep {seconds}
{added}
"""


def supervisor_pids(machine: Machine) -> dict[str, int]:
    result = machine.run("/opt/daemonkit/venv/bin/daemonkit", "supervise", "-c",
                         "/etc/daemonkit/supervisor.ini", "status", "--json", "--pidfile",
                         "/run/daemonkit-supervisor/supervisor.pid", check=True)
    import json

    programs = json.loads(result.stdout)["programs"]
    return {p["name"]: p["pid"] for p in programs if p["state"] == "RUNNING"}


def test_supervisor_unit_reloads_only_the_difference_and_stops_everything(
        systemd_machine: Machine, units: Units) -> None:
    machine = systemd_machine
    machine.run("mkdir", "-p", "/etc/daemonkit", check=True)
    machine.write_file("/etc/daemonkit/supervisor.ini",
                       SUPERVISOR_INI.format(seconds=1000, added=""))
    unit = units.install("daemonkit-supervisor.service",
                         (INIT_SYSTEMD / "daemonkit-supervisor.service").read_text())
    cursor = machine.cursor()
    supervisor = start(machine, unit)  # READY=1 once the programs are started
    before = wait_for(lambda: len(pids := supervisor_pids(machine)) == 2 and pids, 30, 0.1,
                      "both programs RUNNING")
    machine.write_file("/etc/daemonkit/supervisor.ini", SUPERVISOR_INI.format(
        seconds=1001, added="[program:added]\ncommand = /bin/sleep 1002\n"))
    result, _ = reload(machine, unit)
    assert result.returncode == 0, result.stderr + "\n".join(machine.journal(unit, cursor))
    after = wait_for(lambda: len(pids := supervisor_pids(machine)) == 3 and pids, 30, 0.1,
                     "three programs RUNNING")
    assert after["steady"] == before["steady"], "an unchanged program keeps its pid"
    assert after["changing"] != before["changing"]
    assert machine.main_pid(unit) == supervisor
    machine.write_file("/etc/daemonkit/supervisor.ini", "[program:broken]\nnumprocs = x\n")
    failed, _ = reload(machine, unit)
    assert failed.returncode != 0, "a bad file fails the reload"
    assert supervisor_pids(machine) == after, "and the old configuration stays"
    stop(machine, unit)
    left = machine.run("sh", "-c", "pgrep -x sleep || true", check=True).stdout.split()
    assert left == [], f"programs outlived the unit: {left}"
