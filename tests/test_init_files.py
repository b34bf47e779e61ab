"""init/ and ``daemonkit init-files``: the files verify with the real tools and stay generated.

``systemd-analyze verify`` runs against the installed systemd (not running here), which
parses the unit like PID 1 would and checks every ``Exec*=`` executable. The shipped units
point at ``/opt/daemonkit/venv/bin/python``, so "not executable" for that path is the one
message allowed; generated units point at this interpreter and must produce no message at
all. The SysV script runs for real in test_sysv.py.
"""

from __future__ import annotations

import filecmp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, WorldRuntime, pid_alive, proc_status, wait_for

INIT = ROOT / "init"
HELLO = ROOT / "examples" / "hello.py"
INSTALLED_PYTHON = "/opt/daemonkit/venv/bin/python"
MISSING_EXECUTABLE = re.compile(
    rf"^\S+\.service: Command ({re.escape(INSTALLED_PYTHON)}|/opt/daemonkit/venv/bin/daemonkit) "
    r"is not executable: No such file or directory$"
)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return path


def verify(unit: Path) -> tuple[int, list[str]]:
    """``systemd-analyze verify``: (exit status, non-empty output lines)."""
    result = subprocess.run([tool("systemd-analyze"), "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return result.returncode, lines


def unexpected(lines: list[str]) -> list[str]:
    return [line for line in lines if not MISSING_EXECUTABLE.match(line)]


def init_files(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemonkit", "init-files", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def service_users() -> Iterator[None]:
    """The dedicated users the shipped files name; created only if missing, then removed."""
    if os.geteuid() != 0:
        pytest.skip("creating system users needs root")
    created = []
    for user in ("hello", "ingestd"):
        if subprocess.run(["id", user], capture_output=True, check=False).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", user], check=True, capture_output=True)
            created.append(user)
    yield
    for user in created:
        subprocess.run(["userdel", user], check=False, capture_output=True)


# -- the shipped files ---------------------------------------------------------------------------

SHIPPED_UNITS = sorted((INIT / "systemd").glob("*.service"))


#: the one unit not written by init-files (it runs `daemonkit supervise`, not a script)
HAND_WRITTEN = {Path("systemd/daemonkit-supervisor.service")}


def test_the_shipped_units_are_the_ones_expected() -> None:
    assert [unit.name for unit in SHIPPED_UNITS] == [
        "daemonkit-supervisor.service", "echo.service", "hello-forking.service",
        "hello.service", "ingestd-forking.service", "ingestd.service"]
    assert (INIT / "systemd" / "echo.socket").is_file()


@pytest.mark.parametrize("unit", SHIPPED_UNITS, ids=lambda unit: unit.name)
def test_shipped_unit_verifies(unit: Path) -> None:
    status, lines = verify(unit)
    assert unexpected(lines) == [], "\n".join(lines)
    assert status in (0, 1)  # 1: only because the venv is not installed on this machine


def test_verify_catches_what_the_filter_must_not_let_through(tmp_path: Path) -> None:
    """The filter above would hide a broken unit if it accepted every message."""
    broken = tmp_path / "hello.service"
    text = (INIT / "systemd" / "hello.service").read_text()
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=stricter")
                      .replace("NoNewPrivileges=", "NoNewPrivilegez=")
                      .replace("User=hello", "User=nobody"))
    _status, lines = verify(broken)
    assert any("stricter" in line for line in unexpected(lines)), lines
    assert any("NoNewPrivilegez" in line for line in unexpected(lines)), lines
    assert any("nobody" in line for line in unexpected(lines)), lines


#: systemd's own 0-10 exposure score ("OK" below 5, "SAFE" below 2): what hardening buys
MAX_EXPOSURE = 2.0


#: the supervisor runs its programs as the users their sections name, as supervisord does:
#: root's powers are its job, and systemd's exposure score says so
SERVICE_UNITS = [unit for unit in SHIPPED_UNITS if unit.name != "daemonkit-supervisor.service"]


@pytest.mark.parametrize("unit", SERVICE_UNITS, ids=lambda unit: unit.name)
def test_shipped_unit_exposure_is_low(unit: Path) -> None:
    result = subprocess.run([tool("systemd-analyze"), "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    match = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)",
                      result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("name", ["hello", "ingestd"])
def test_shipped_units_carry_the_hardening(name: str) -> None:
    notify = (INIT / "systemd" / f"{name}.service").read_text()
    forking = (INIT / "systemd" / f"{name}-forking.service").read_text()
    for directive in ("Type=notify", f"User={name}", "WatchdogSec=", "TimeoutStopSec=",
                      f"RuntimeDirectory={name}", f"StateDirectory={name}",
                      f"LogsDirectory={name}", "NoNewPrivileges=yes", "ProtectSystem=strict",
                      "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=\n"):
        assert directive in notify, directive
    assert re.search(r"^ExecStart=\S+ \S+ .* run$", notify, re.M)
    assert re.search(r"^ExecReload=\S+ \S+ --pidfile /run/\S+ reload$", notify, re.M)
    assert f"PIDFile=/run/{name}/{name}.pid" in forking
    assert "Type=forking" in forking
    assert re.search(r"^ExecStart=.* start$", forking, re.M)
    assert re.search(r"^ExecStop=.* stop$", forking, re.M)
    assert "ProtectSystem=strict" in forking


def test_shipped_files_are_the_generator_output(tmp_path: Path) -> None:
    """init/README.md's commands, run into a temp dir, give exactly the files in init/."""
    readme = (INIT / "README.md").read_text()
    commands = [line for line in readme.splitlines()
                if line.startswith("python -m daemonkit init-files ")]
    assert len(commands) == 3
    for command in commands:
        argv = shlex.split(command)[4:]
        argv[argv.index("--output-dir") + 1] = str(tmp_path)
        result = init_files(*argv)
        assert result.returncode == 0, result.stderr
    generated = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")
                       if path.is_file())
    shipped = sorted(path.relative_to(INIT) for path in INIT.rglob("*")
                     if path.is_file() and path.name != "README.md"
                     and path.relative_to(INIT) not in HAND_WRITTEN)
    assert generated == shipped
    for relative in shipped:
        assert filecmp.cmp(tmp_path / relative, INIT / relative, shallow=False), (
            f"init/{relative} differs from the generator output: regenerate it "
            "(see init/README.md)")
        modes = {(root / relative).stat().st_mode & 0o777 for root in (INIT, tmp_path)}
        assert len(modes) == 1, f"init/{relative}: mode differs from the generator's"


def test_shipped_sysv_scripts_pass_shellcheck() -> None:
    scripts = sorted((INIT / "sysv").iterdir())
    assert [script.name for script in scripts] == ["hello", "ingestd"]
    result = subprocess.run([tool("shellcheck"), "--shell=sh", *map(str, scripts)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for script in scripts:
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n### BEGIN INIT INFO\n")
        assert f"# Provides:          {script.name}\n" in text
        assert "### END INIT INFO" in text
        assert os.access(script, os.X_OK)


@pytest.mark.parametrize("name", ["hello", "ingestd"])
def test_shipped_logrotate_config_parses(name: str, service_users: None,
                                         tmp_path: Path) -> None:
    config = INIT / "logrotate" / name
    result = subprocess.run([tool("logrotate"), "-d", "-s", str(tmp_path / "state"),
                             str(config)], capture_output=True, text=True, timeout=60,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.lower(), output
    assert f"/var/log/{name}/{name}.log" in output  # the file it would rotate
    directives = [line.strip() for line in config.read_text().splitlines()
                  if not line.strip().startswith("#")]
    assert "copytruncate" not in directives
    assert any("reopen-logs" in line for line in directives)


def test_logrotate_check_fails_for_an_unknown_user(tmp_path: Path) -> None:
    """The check above means something: logrotate -d does reject a bad config."""
    config = tmp_path / "bad"
    config.write_text((INIT / "logrotate" / "hello").read_text()
                      .replace("su hello hello", "su no-such-user-xyz hello"))
    config.chmod(0o644)
    result = subprocess.run([tool("logrotate"), "-d", "-s", str(tmp_path / "state"),
                             str(config)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode != 0
    assert "no-such-user-xyz" in result.stdout + result.stderr


# -- the generator -------------------------------------------------------------------------------


def test_generated_units_for_a_real_script_verify_without_any_message(tmp_path: Path) -> None:
    result = init_files(str(HELLO), "--user", "svc", "--output-dir", str(tmp_path), "--",
                        "--interval", "2")
    assert result.returncode == 0, result.stderr
    notify = tmp_path / "systemd" / "hello.service"
    forking = tmp_path / "systemd" / "hello-forking.service"
    for unit in (notify, forking):
        assert verify(unit) == (0, [])
    text = notify.read_text()
    assert f"ExecStart={sys.executable} {HELLO} " in text
    assert " --interval 2 run\n" in text
    assert "User=svc\n" in text and "Group=" not in text
    sysv = tmp_path / "sysv" / "hello"
    assert sysv.stat().st_mode & 0o777 == 0o755
    check = subprocess.run([tool("shellcheck"), "--shell=sh", str(sysv)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout
    assert f"PYTHON={shlex.quote(sys.executable)}\n" in sysv.read_text()


@pytest.mark.parametrize(("version", "notify_reload"), [("252", False), ("253", False),
                                                       ("257", False), ("253", True),
                                                       ("257", True)])
def test_the_notify_unit_reloads_truthfully_unless_told(version: str,
                                                        notify_reload: bool) -> None:
    """ExecReload= with the synchronous `reload` (a failing reload() fails `systemctl
    reload`); notify-reload only with --notify-reload, from 253 on. Proven under real
    systemd 252 and 257 in test_systemd_live.py."""
    result = init_files(str(HELLO), "--user", "svc", "--only", "notify", "--systemd-version",
                        version, *(["--notify-reload"] if notify_reload else []))
    assert result.returncode == 0, result.stderr
    directives = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    backoff = {"RestartSteps=5", "RestartMaxDelaySec=60s"}
    assert (backoff <= set(directives)) == (int(version) >= 254), directives
    if notify_reload:
        assert "Type=notify-reload" in directives
        assert "ReloadSignal=SIGHUP" in directives
        assert not any(line.startswith("ExecReload=") for line in directives)
        assert "exits 0" in result.stdout  # the unit says what a failed reload() gives
    else:
        assert "Type=notify" in directives
        assert any(line.startswith("ExecReload=") and line.endswith(" reload")
                   for line in directives)
        assert not any(line.startswith("ReloadSignal=") for line in directives)


def test_the_default_systemd_version_is_the_installed_one() -> None:
    from daemonkit.initfiles import installed_systemd_version

    version = installed_systemd_version()
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        assert version is None
        return
    output = subprocess.run([systemctl, "--version"], capture_output=True, text=True,
                            check=True).stdout
    assert output.startswith(f"systemd {version} ")
    result = init_files(str(HELLO), "--user", "svc", "--only", "notify")
    assert ("\nRestartSteps=" in result.stdout) == (version is not None and version >= 254)
    refused = init_files(str(HELLO), "--user", "svc", "--systemd-version", "252",
                         "--notify-reload")
    assert refused.returncode == 1 and "no Type=notify-reload" in refused.stderr


def test_awkward_paths_are_quoted_for_systemd_and_for_the_shell(tmp_path: Path) -> None:
    directory = tmp_path / "my services 100%"
    directory.mkdir()
    script = directory / "svc$1.py"
    script.write_text('"""A service with an awkward path."""\n')
    result = init_files(str(script), "--user", "svc", "--name", "svc", "--only", "notify", "--",
                        "--greeting", "it's 5 o'clock")
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "svc.service"
    unit.write_text(result.stdout)
    assert verify(unit) == (0, [])
    assert f'"{str(script).replace("%", "%%").replace("$", "$$")}"' in result.stdout
    assert " \"--greeting\" " not in result.stdout  # plain words stay unquoted
    assert " --greeting \"it's 5 o'clock\" run" in result.stdout
    sysv = init_files(str(script), "--user", "svc", "--name", "svc", "--only", "sysv", "--",
                      "--greeting", "it's 5 o'clock")
    assert sysv.returncode == 0, sysv.stderr
    # the shell reads back exactly the words that went in
    script_line = next(line for line in sysv.stdout.splitlines() if line.startswith("SCRIPT="))
    args_line = next(line for line in sysv.stdout.splitlines() if "--greeting" in line)
    echoed = subprocess.run(
        ["sh", "-c", f'{script_line}\nDAEMON_OPTS=\nset -- "$SCRIPT" {args_line}\n'
                     'printf "%s\\n" "$@"'],
        capture_output=True, text=True, timeout=10, check=True).stdout
    assert echoed == f"{script}\n--greeting\nit's 5 o'clock\n"


def test_name_comes_from_the_class_attribute_not_the_file_name(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text('"""Thing doer."""\nfrom daemonkit import Daemon\n\n\n'
                      'class Thing(Daemon):\n    name = "thingd"\n')
    result = init_files(str(script), "--user", "thing", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "systemd" / "thingd.service").is_file()
    unit = (tmp_path / "out" / "systemd" / "thingd.service").read_text()
    assert "Description=Thing doer.\n" in unit
    assert "--pidfile /run/thingd/thingd.pid" in unit
    named = init_files(str(script), "--user", "thing", "--name", "other", "--only", "sysv")
    assert "# Provides:          other\n" in named.stdout


def test_printing_gives_every_file_with_a_header() -> None:
    result = init_files(str(HELLO), "--user", "svc")
    assert result.returncode == 0, result.stderr
    headers = re.findall(r"^# ===== (\S+)$", result.stdout, re.M)
    assert headers == ["systemd/hello.service", "systemd/hello-forking.service", "sysv/hello",
                       "logrotate/hello"]


@pytest.mark.parametrize(("args", "complaint"), [
    (["--user", "nobody"], "dedicated user"),
    (["--user", "root"], "dedicated user"),
    (["--user", "svc", "--pidfile", "/run/my svc.pid"], "--pidfile"),
    (["--user", "svc", "--name", "bad/name"], "service name"),
    (["--user", "svc", "--python", "python3"], "absolute path"),
    (["--user", "svc", "--stop-timeout", "0"], "--stop-timeout"),
    (["--user", "bad user"], "not a valid name"),
    (["--user", "svc", "--systemd-version", "0"], "--systemd-version"),
])
def test_bad_values_are_refused_with_one_line(args: list[str], complaint: str,
                                              tmp_path: Path) -> None:
    result = init_files(str(HELLO), *args, "--output-dir", str(tmp_path))
    assert result.returncode == 1
    assert complaint in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_missing_script_and_missing_user_option() -> None:
    missing = init_files("/nonexistent/svc.py", "--user", "svc")
    assert missing.returncode == 1 and "no such file" in missing.stderr
    no_user = init_files(str(HELLO))
    assert no_user.returncode == 2 and "--user" in no_user.stderr


def test_main_command_dispatches_to_the_generator() -> None:
    result = subprocess.run([sys.executable, "-m", "daemonkit", "init-files", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert "--output-dir" in result.stdout


# -- the units' command lines, run the way systemd runs them ------------------------------------


def unit_command(unit_text: str, directive: str) -> list[str]:
    """The argv systemd would run for ``directive`` (plain words only: what these tests use)."""
    line = next(line for line in unit_text.splitlines() if line.startswith(f"{directive}="))
    words = shlex.split(line.split("=", 1)[1])
    return [word.replace("%%", "%").replace("$$", "$") for word in words]


@pytest.fixture
def unit_sandbox(world_runtime: WorldRuntime, world_tmp: Path,
                 service_users: None) -> Iterator[tuple[Path, dict[str, str]]]:
    """Units generated for the world copy of hello.py, with the directories systemd would
    create (RuntimeDirectory= and friends) owned by the service user ``hello``."""
    entry = pwd.getpwnam("hello")
    for directory in ("run", "log", "lib"):
        (world_tmp / directory).mkdir(mode=0o750)
        os.chown(world_tmp / directory, entry.pw_uid, entry.pw_gid)
    result = init_files(str(world_runtime.root / "examples" / "hello.py"), "--user", "hello",
                        "--python", world_runtime.python,
                        "--pidfile", str(world_tmp / "run" / "hello.pid"),
                        "--log-file", str(world_tmp / "log" / "hello.log"),
                        "--workdir", str(world_tmp / "lib"), "--stop-timeout", "5",
                        "--systemd-version", "252",  # the ExecReload= variant is tested here
                        "--output-dir", str(world_tmp / "out"), "--", "--interval", "0.05")
    assert result.returncode == 0, result.stderr
    yield world_tmp, world_runtime.env
    pidfile = world_tmp / "run" / "hello.pid"
    text = pidfile.read_text().strip() if pidfile.exists() else ""
    if text.isdigit() and pid_alive(int(text)):  # a test failed before stopping its daemon
        os.kill(int(text), signal.SIGKILL)
        wait_for(lambda: not pid_alive(int(text)), 10, message=f"pid {text} gone")


def as_hello(argv: list[str], env: dict[str, str], cwd: Path
             ) -> subprocess.CompletedProcess[str]:
    entry = pwd.getpwnam("hello")
    return subprocess.run(argv, env=env, cwd=cwd, user=entry.pw_uid, group=entry.pw_gid,
                          extra_groups=[], capture_output=True, text=True, timeout=60,
                          check=False)


def receive(sock: socket.socket, wanted: str, timeout: float = 10.0) -> list[str]:
    """Datagrams until one holds the line ``wanted``; all of them, in order."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if wanted in seen[-1].splitlines():
            return seen
    raise AssertionError(f"no {wanted!r} from the service; got {seen}")


def test_notify_unit_commands_work_under_a_stand_in_for_systemd(
        unit_sandbox: tuple[Path, dict[str, str]]) -> None:
    base, env = unit_sandbox
    unit = (base / "out" / "systemd" / "hello.service").read_text()
    notify_path = base / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify_path.chmod(0o777)  # the service user must be allowed to send
        entry = pwd.getpwnam("hello")
        service = subprocess.Popen(
            unit_command(unit, "ExecStart"), cwd=base / "lib", user=entry.pw_uid,
            group=entry.pw_gid, extra_groups=[], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**env, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"})
        try:
            assert any("READY=1" in m for m in receive(notify, "READY=1"))
            receive(notify, "WATCHDOG=1")  # pinged at half of WatchdogSec
            status = proc_status(service.pid)
            assert status["Umask"] == "0027"
            assert os.readlink(f"/proc/{service.pid}/cwd") == str(base / "lib")
            reload = as_hello(unit_command(unit, "ExecReload"), env, base / "lib")
            assert reload.returncode == 0, reload.stderr
            messages = receive(notify, "READY=1")
            assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in messages)
            service.send_signal(signal.SIGTERM)  # what systemctl stop does (KillMode=mixed)
            receive(notify, "STOPPING=1")
            assert service.wait(timeout=10) == 0
        finally:
            if service.poll() is None:
                service.kill()
                service.wait(timeout=10)
            if service.stderr is not None:
                service.stderr.close()


def test_forking_unit_commands_work_as_systemd_runs_them(
        unit_sandbox: tuple[Path, dict[str, str]]) -> None:
    base, env = unit_sandbox
    unit = (base / "out" / "systemd" / "hello-forking.service").read_text()
    pidfile = Path(unit_command(unit, "PIDFile")[0])
    started = as_hello(unit_command(unit, "ExecStart"), env, base / "lib")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(pidfile.read_text())  # systemd reads it right after ExecStart exits
    assert pid_alive(pid)
    assert os.getsid(pid) != os.getsid(0)  # detached: a session of its own
    wait_for(lambda: "(#2)" in (base / "log" / "hello.log").read_text(),
             message="greetings in the log file")
    reload = as_hello(unit_command(unit, "ExecReload"), env, base / "lib")
    assert reload.returncode == 0, reload.stderr
    stop = as_hello(unit_command(unit, "ExecStop"), env, base / "lib")
    assert stop.returncode == 0, stop.stderr
    assert not pid_alive(pid)


def test_a_listening_service_gets_a_socket_unit(tmp_path: Path) -> None:
    script = tmp_path / "web.py"
    script.write_text('"""A web service."""\nfrom daemonkit import Daemon\n\n\n'
                      'class Web(Daemon):\n    name = "web"\n'
                      '    listen = ("http=tcp://0.0.0.0:80", "admin=unix:/run/web/admin.sock",'
                      ' "unix:@web-metrics")\n')
    out = tmp_path / "out"
    written = init_files(str(script), "--user", "web", "--output-dir", str(out))
    assert written.returncode == 0, written.stderr
    socket_unit = (out / "systemd" / "web.socket").read_text()
    assert [line for line in socket_unit.splitlines() if line.startswith("Listen")] == [
        "ListenStream=0.0.0.0:80", "ListenStream=/run/web/admin.sock",
        "ListenStream=@web-metrics"]
    assert "FileDescriptorName=" not in socket_unit  # several: matched by their order
    notify = (out / "systemd" / "web.service").read_text()
    assert "Requires=web.socket\nAfter=web.socket" in notify
    assert "RuntimeDirectoryPreserve=yes" in notify  # admin.sock outlives service stops
    forking = (out / "systemd" / "web-forking.service").read_text()
    # no socket unit binds port 80 for `start`, which runs as User=: one capability
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in forking
    assert "CapabilityBoundingSet=\nAmbientCapabilities=\n" in notify
    assert "AF_NETLINK" not in notify and "sched_setscheduler" not in notify  # no zmq here
    again = init_files(str(script), "--user", "web", "--output-dir", str(out), "--", "--listen",
                       "tcp://127.0.0.1:8080")
    assert f"wrote {out}/systemd/web.socket (replaced)" in again.stdout
    assert "ListenStream=127.0.0.1:8080" in (out / "systemd" / "web.socket").read_text()
    no_socket = init_files(str(HELLO), "--user", "svc", "--only", "socket")
    assert no_socket.returncode == 1 and "listens nowhere" in no_socket.stderr


def test_notes_for_a_script_that_cannot_work_as_written(tmp_path: Path) -> None:
    script = tmp_path / "notadaemon.py"
    script.write_text("print('hi')\n")
    result = init_files(str(script), "--user", "svc", "--only", "notify")
    assert result.returncode == 0
    assert "defines no class derived from daemonkit.Daemon" in result.stderr
    assert "PrivateTmp=no" in result.stdout and "lives under /tmp" in result.stderr
    root = init_files(str(HELLO), "--user", "root")
    assert root.returncode == 1 and "nobody" not in root.stderr
    zmq_script = tmp_path / "z.py"
    zmq_script.write_text("import zmq\nfrom daemonkit import Daemon\n\n\nclass Z(Daemon):\n"
                          "    pass\n")
    assert "AF_NETLINK" in init_files(str(zmq_script), "--user", "svc", "--only",
                                      "notify").stdout
