"""The LSB init script, run for real as root against examples/hello.py.

The script under test is ``daemonkit init-files`` output (the same template as init/sysv/),
with paths moved into a temp dir; one test runs the shipped init/sysv/hello itself, with its
settings overridden the supported way, a defaults file. The daemon starts as root and drops
to a dedicated system user this module creates (and removes). The interpreter and daemonkit
come from ``world_runtime``: the test runner's own may live where that user cannot read.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    ROOT,
    WorldRuntime,
    kill_all,
    pid_alive,
    proc_status,
    read_pidfile,
    text_or_empty,
    wait_for,
)

SERVICE_USER = "dkinit-test"
NAME = "dkinit-hello"  # so the script's /etc/default/NAME is one nobody has

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs init scripts as root")


@pytest.fixture(scope="module")
def service_user() -> Iterator[pwd.struct_passwd]:
    created = False
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", SERVICE_USER], check=True, capture_output=True)
        created = True
        entry = pwd.getpwnam(SERVICE_USER)
    yield entry
    if created:
        subprocess.run(["userdel", SERVICE_USER], check=False, capture_output=True)


class InitScript:
    """One init script and every daemon pid it was seen to start."""

    def __init__(self, path: Path, base: Path, env: dict[str, str]) -> None:
        self.path = path
        self.pidfile = base / "run" / "hello.pid"
        self.log_file = base / "log" / "hello.log"
        self.env = env
        self.seen_pids: set[int] = set()

    def __call__(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [str(self.path), *args]
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                env=self.env, check=False)
        pid = self.pid()
        if pid is not None and pid_alive(pid):
            self.seen_pids.add(pid)
        return result

    def pid(self) -> int | None:
        return read_pidfile(self.pidfile)

    def log_text(self) -> str:
        return text_or_empty(self.log_file)

    def cleanup(self) -> None:
        kill_all(self.seen_pids)


def generate(world: WorldRuntime, base: Path, *options: str,
             service_args: tuple[str, ...] = ("--interval", "0.05")) -> Path:
    """init-files for the world copy of hello.py, everything under ``base``."""
    out = base / "out"
    result = subprocess.run(
        [sys.executable, "-m", "daemonkit", "init-files", str(world.root / "examples" /
                                                              "hello.py"),
         "--name", NAME, "--python", world.python, "--pidfile", str(base / "run" / "hello.pid"),
         "--log-file", str(base / "log" / "hello.log"), "--workdir", str(base / "lib"),
         "--start-timeout", "15", "--stop-timeout", "5", "--output-dir", str(out),
         "--user", SERVICE_USER, *options, "--", *service_args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def greeting(world_tmp: Path) -> Path:
    path = world_tmp / "greeting"
    path.write_text("hello there\n")
    path.chmod(0o644)
    return path


@pytest.fixture
def hello_init(world_runtime: WorldRuntime, world_tmp: Path, service_user: pwd.struct_passwd,
               greeting: Path) -> Iterator[InitScript]:
    out = generate(world_runtime, world_tmp,
                   service_args=("--interval", "0.05", "--greeting-file", str(greeting)))
    script = InitScript(out / "sysv" / NAME, world_tmp, world_runtime.env)
    yield script
    script.cleanup()


def status_field(result: subprocess.CompletedProcess[str], key: str) -> str | None:
    match = re.search(rf"^  {key}: (.*)$", result.stdout, re.M)
    return match.group(1) if match else None


# -- the actions ----------------------------------------------------------------------------------


def test_start_status_stop_with_lsb_codes(hello_init: InitScript, world_tmp: Path,
                                          service_user: pwd.struct_passwd) -> None:
    script = hello_init
    assert script("status").returncode == 3

    started = script("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "started" in started.stdout
    pid = script.pid()
    assert pid is not None and pid_alive(pid)
    uids = proc_status(pid)["Uid"].split()
    assert set(uids) == {str(service_user.pw_uid)}  # real, effective, saved, fs: all dropped
    for directory in ("run", "log", "lib"):  # created for the service user, not world-open
        info = (world_tmp / directory).stat()
        assert (info.st_uid, info.st_mode & 0o777) == (service_user.pw_uid, 0o750), directory
    wait_for(lambda: "hello there (#1)" in script.log_text(), message="greetings in the log")

    again = script("start")  # LSB: starting a running service succeeds and changes nothing
    assert again.returncode == 0 and "already running" in again.stdout
    assert script.pid() == pid

    status = script("status")
    assert status.returncode == 0
    assert f"pid {pid}" in status.stdout
    assert status_field(status, "greeting") == "hello there"

    stopped = script("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_alive(pid)
    assert not script.pidfile.exists()
    assert "exiting with status 0" in script.log_text()

    assert script("stop").returncode == 0  # stopping a stopped service succeeds
    assert script("status").returncode == 3


def test_reload_and_force_reload(hello_init: InitScript, greeting: Path) -> None:
    script = hello_init
    assert script("start").returncode == 0
    pid = script.pid()

    greeting.write_text("bonjour\n")
    reloaded = script("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert status_field(script("status"), "greeting") == "bonjour"  # synchronous: done already

    greeting.write_text("")  # hello's reload() refuses an empty greeting
    refused = script("reload")
    assert refused.returncode == 1
    assert "empty" in refused.stderr
    kept = script("status")
    assert kept.returncode == 0 and status_field(kept, "greeting") == "bonjour"

    greeting.write_text("salut\n")
    forced = script("force-reload")
    assert forced.returncode == 0, forced.stderr
    assert status_field(script("status"), "greeting") == "salut"
    assert script.pid() == pid  # reloads, not restarts

    assert script("stop").returncode == 0
    assert script("reload").returncode == 7  # LSB: program is not running
    assert script("force-reload").returncode == 7
    assert script("status").returncode == 3


def test_restart_and_try_restart(hello_init: InitScript) -> None:
    script = hello_init
    idle = script("try-restart")  # LSB: try-restart leaves a stopped service stopped
    assert idle.returncode == 0
    assert script("status").returncode == 3

    assert script("restart").returncode == 0  # restart starts a stopped service
    first = script.pid()
    assert first is not None and pid_alive(first)

    assert script("restart").returncode == 0
    second = script.pid()
    assert second is not None and second != first
    assert not pid_alive(first) and pid_alive(second)

    assert script("try-restart").returncode == 0
    third = script.pid()
    assert third is not None and third != second and pid_alive(third)
    assert not pid_alive(second)
    assert script("stop").returncode == 0


@pytest.mark.parametrize("args", [(), ("frobnicate",), ("start", "now")])
def test_usage_errors_exit_2(hello_init: InitScript, args: tuple[str, ...]) -> None:
    result = hello_init(*args)
    assert result.returncode == 2
    assert "Usage:" in result.stderr
    assert hello_init.pid() is None


def test_bad_configuration_is_exit_6_and_nothing_runs(
        world_runtime: WorldRuntime, world_tmp: Path, service_user: pwd.struct_passwd) -> None:
    out = generate(world_runtime, world_tmp, service_args=("--interval", "-1"))
    script = InitScript(out / "sysv" / NAME, world_tmp, world_runtime.env)
    try:
        result = script("start")
        assert result.returncode == 6
        assert "--interval must be positive" in result.stderr
        assert script("status").returncode == 3
    finally:
        script.cleanup()


def test_unknown_service_user_is_exit_6(world_runtime: WorldRuntime, world_tmp: Path) -> None:
    out = generate(world_runtime, world_tmp, "--user", "no-such-user-dkinit")
    script = InitScript(out / "sysv" / NAME, world_tmp, world_runtime.env)
    result = script("start")
    assert result.returncode == 6
    assert "no-such-user-dkinit does not exist" in result.stderr
    assert not (world_tmp / "run").exists()


def test_missing_interpreter_is_not_installed(world_runtime: WorldRuntime, world_tmp: Path,
                                              service_user: pwd.struct_passwd) -> None:
    out = generate(world_runtime, world_tmp, "--python", "/nonexistent/bin/python3")
    script = InitScript(out / "sysv" / NAME, world_tmp, world_runtime.env)
    assert script("start").returncode == 5  # LSB: program is not installed
    assert script("reload").returncode == 5
    assert script("status").returncode == 4  # LSB status: unknown
    assert script("stop").returncode == 0  # nothing to stop
    assert script("frobnicate").returncode == 2  # a bad action is a bad action regardless


def test_start_by_a_user_who_is_not_root_is_exit_4(
        hello_init: InitScript, world_tmp: Path) -> None:
    for directory in ("run", "log", "lib"):  # as if root had started it once before
        (world_tmp / directory).mkdir(mode=0o777)
        (world_tmp / directory).chmod(0o777)
    result = hello_init("start", user="nobody")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "needs root" in result.stderr
    assert hello_init.pid() is None


# -- the shipped script ---------------------------------------------------------------------------


def test_shipped_script_runs_with_a_defaults_file(world_runtime: WorldRuntime, world_tmp: Path,
                                                  service_user: pwd.struct_passwd) -> None:
    """init/sysv/hello itself; only its DEFAULTS line points at a temp file instead of
    /etc/default/hello, which sets what an administrator would set there."""
    shipped = (ROOT / "init" / "sysv" / "hello").read_text()
    assert shipped.count("\nDEFAULTS=/etc/default/hello\n") == 1
    defaults = world_tmp / "defaults"
    defaults.write_text(
        f"PYTHON={world_runtime.python}\n"
        f"SCRIPT={world_runtime.root / 'examples' / 'hello.py'}\n"
        f"SERVICE_USER={SERVICE_USER}\n"
        f"PIDFILE={world_tmp / 'run' / 'hello.pid'}\n"
        f"LOGFILE={world_tmp / 'log' / 'hello.log'}\n"
        f"WORKDIR={world_tmp / 'lib'}\n"
        'DAEMON_OPTS="--interval 0.05"\n')
    copy = world_tmp / "hello.init"
    copy.write_text(shipped.replace("\nDEFAULTS=/etc/default/hello\n",
                                    f"\nDEFAULTS={defaults}\n"))
    copy.chmod(0o755)
    script = InitScript(copy, world_tmp, world_runtime.env)
    try:
        assert script("status").returncode == 3
        started = script("start")
        assert started.returncode == 0, started.stdout + started.stderr
        pid = script.pid()
        assert pid is not None and pid_alive(pid)
        wait_for(lambda: "hello (#2)" in script.log_text(), message="greetings every 0.05s")
        assert script("reload").returncode == 0
        assert script("status").returncode == 0
        assert script("stop").returncode == 0
        assert not pid_alive(pid)
    finally:
        script.cleanup()


# -- logrotate ------------------------------------------------------------------------------------


def test_logrotate_rotates_and_the_daemon_reopens(hello_init: InitScript, world_tmp: Path,
                                                  world_runtime: WorldRuntime,
                                                  service_user: pwd.struct_passwd) -> None:
    logrotate = shutil.which("logrotate")
    if logrotate is None:
        pytest.skip("logrotate is not installed (apt-get install logrotate)")
    script = hello_init
    assert script("start").returncode == 0
    wait_for(lambda: "(#3)" in script.log_text(), message="a few greetings")

    config = world_tmp / "out" / "logrotate" / NAME
    rotated = script.log_file.with_name("hello.log.1")
    result = subprocess.run([logrotate, "-f", "-s", str(world_tmp / "logrotate.state"),
                             str(config)], capture_output=True, text=True, timeout=60,
                            env=world_runtime.env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert rotated.exists()  # renamed, not copied and truncated
    wait_for(lambda: "reopened log file" in script.log_text(), message="the reopen")
    reopened_at = re.findall(r"\(#(\d+)\)", rotated.read_text())
    wait_for(lambda: len(re.findall(r"\(#(\d+)\)", script.log_text())) >= 3,
             message="greetings in the new file")
    assert script.log_file.stat().st_uid == service_user.pw_uid

    assert script("stop").returncode == 0
    numbers = [int(n) for n in re.findall(r"\(#(\d+)\)", rotated.read_text() +
                                          script.log_text())]
    assert numbers == list(range(len(numbers)))  # every greeting, once, in order
    assert int(reopened_at[-1]) < numbers[-1]
    assert "reopened log file" not in rotated.read_text()
