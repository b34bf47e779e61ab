"""Helpers shared by the tests: run a service's CLI for real, poll conditions, clean up by pid.

Every test module imports them from here (``from helpers import ...``); ``conftest.py`` only
turns some of them into fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daemonkit.supervisor.spawn import STDOUT, SpawnRequest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = Path(__file__).resolve().parent / "services"
T = TypeVar("T")


def poll_until(condition: Callable[[], T], timeout: float = 10.0,
               interval: float = 0.01) -> T | None:
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout`` passes
    (None), for a test that has something to do when the condition does not come."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01,
             message: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    value = poll_until(condition, timeout, interval)
    if value is None:
        raise AssertionError(f"timed out after {timeout}s waiting for {message}")
    return value


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def read_events(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, PermissionError):
        return None
    return int(text) if text.isdigit() else None


def text_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def kill_all(pids: set[int]) -> None:
    """SIGKILL every pid still alive (by pid, never by name) and wait until each is gone."""
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        wait_for(lambda pid=pid: not pid_alive(pid), 10, message=f"pid {pid} gone")


class Service:
    """One service script driven through its CLI, with every daemon it started remembered."""

    def __init__(self, script: Path, workdir: Path, name: str = "svc",
                 events_option: bool = True) -> None:
        self.script = script
        self.events_option = events_option
        self.workdir = workdir
        self.pidfile = workdir / f"{name}.pid"
        self.events = workdir / "events.log"
        self.log_file = workdir / f"{name}.log"
        self.started_pids: set[int] = set()
        self.extra: list[str] = []

    def argv(self, action: str, *args: str, events: bool | None = None) -> list[str]:
        events = self.events_option if events is None else events
        command = [sys.executable, str(self.script), action, "--pidfile", str(self.pidfile),
                   "--log-file", str(self.log_file), *self.extra, *args]
        if events:
            command += ["--events", str(self.events)]
        return command

    def cli(self, action: str, *args: str, timeout: float = 60.0, user: str | None = None,
            env: dict[str, str] | None = None, events: bool | None = None
            ) -> subprocess.CompletedProcess[str]:
        command = self.argv(action, *args, events=events)
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                cwd=self.workdir, env=env, check=False)
        self.remember_pid()
        return result

    def remember_pid(self) -> None:
        """Remember the pid of the lock holder: only a live daemon of ours holds the lock."""
        from daemonkit import PidFile, PidfileError

        try:
            holder = PidFile(self.pidfile).observe()
        except PidfileError:
            return
        if holder.locked and holder.pid is not None and holder.pid > 1:
            self.started_pids.add(holder.pid)

    def pid(self) -> int | None:
        return read_pidfile(self.pidfile)

    def events_seen(self) -> list[str]:
        return read_events(self.events)

    def wait_event(self, text: str, timeout: float = 10.0) -> list[str]:
        return wait_for(lambda: (lines := self.events_seen()) and text in lines and lines,
                        timeout, message=f"event {text!r} in {self.events}")

    def log_text(self) -> str:
        return text_or_empty(self.log_file)

    def cleanup(self) -> None:
        self.remember_pid()
        kill_all(self.started_pids)


def proc_status(pid: int) -> dict[str, Any]:
    """Fields of /proc/PID/status, e.g. Uid, Gid, Groups, Umask."""
    fields: dict[str, Any] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


class WorldRuntime:
    """An interpreter and a copy of daemonkit + its dependencies that any user can run.

    The test runner's interpreter and checkout may live where ``nobody`` cannot read (a
    pyenv under /root, a CI clone in a private home). Tests that run the CLI *as* another user
    use this copy; it is built once per session from the installed modules.
    """

    MODULES = ("daemonkit", "daemon", "lockfile", "setproctitle", "psutil", "zmq", "pyzmq.libs")

    def __init__(self, root: Path) -> None:
        import importlib.util
        import shutil

        self.root = root
        self.site = root / "site"
        self.site.mkdir(parents=True)
        for module in self.MODULES:
            spec = importlib.util.find_spec(module.split(".")[0])
            if spec is None or spec.origin is None:
                continue
            origin = Path(spec.origin)
            if origin.name == "__init__.py":
                shutil.copytree(origin.parent, self.site / origin.parent.name,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, self.site / origin.name)
        shutil.copytree(SERVICES, root / "services", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "examples", root / "examples",
                        ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.python = self._interpreter()
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "PYTHONPATH": str(self.site), "PYTHONDONTWRITEBYTECODE": "1",
                    "LANG": "C.UTF-8"}

    @staticmethod
    def _interpreter() -> str:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        probe = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", "pass"],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return sys.executable
        system = f"/usr/bin/{version}"
        if os.path.exists(system):
            return system
        pytest.skip(f"no {version} interpreter that user nobody may run")  # pragma: no cover


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeSystemd:
    """Collects sd_notify datagrams, as PID 1 would."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []

    def collect(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)

    def wait_for_field(self, key: str, value: str | None = None, after: int = 0,
                       timeout: float = 10) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            for message in self.collect()[after:]:
                if key in message and (value is None or message[key] == value):
                    return message
            return None

        return wait_for(found, timeout, message=f"{key}={value} from the service")


# -- the supervisor, driven through `daemonkit supervise` --------------------------------


def tagged_pids(tag: str) -> list[int]:
    from daemonkit.supervisor.strays import pids_with_environment

    """Live processes started by this test (they carry DAEMONKIT_TEST_TAG=tag)."""
    return [pid for pid in pids_with_environment("DAEMONKIT_TEST_TAG", tag) if pid_alive(pid)]


class Sv:
    """One supervisor config in a temp dir, driven through ``daemonkit supervise``."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.ini = workdir / "sv.ini"
        self.tag = uuid.uuid4().hex
        self.env = {**os.environ, "DAEMONKIT_TEST_TAG": self.tag,
                    "PYTHONPATH": str(ROOT)}
        self.env.pop("NOTIFY_SOCKET", None)

    def write(self, programs: str, header: str = "") -> None:
        self.ini.write_text(f"[supervisor]\npidfile = sv.pid\nlogfile = sv.log\n{header}\n"
                            + textwrap.dedent(programs))

    def cli(self, *args: str, timeout: float = 60.0, check: bool = False,
            python: str = sys.executable, user: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = [python, "-m", "daemonkit", "supervise", "-c", str(self.ini), *args]
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                cwd=self.dir, env=env or self.env, check=False)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr, self.log())
        return result

    def status(self) -> dict[str, dict[str, Any]]:
        result = self.cli("status", "--json", check=True)
        return {p["name"]: p for p in json.loads(result.stdout)["programs"]}

    def wait_state(self, name: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            program = self.status().get(name)
            return program if program and program["state"] == state else None

        found: dict[str, Any] = wait_for(reached, timeout, interval=0.02,
                                         message=f"{name} {state}")
        return found

    def supervisor_pid(self) -> int:
        return int((self.dir / "sv.pid").read_text())

    def log(self) -> str:
        try:
            return (self.dir / "sv.log").read_text()[-3000:]
        except FileNotFoundError:
            return ""

    def supervisor_pids(self) -> list[int]:
        """Our supervisors, by the title that shows their config (setproctitle overwrites
        the memory /proc/PID/environ reads, so the tag is no help for them)."""
        title = f"daemonkit-supervisor -c {self.ini}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                        if cmdline.read().startswith(title):
                            found.append(int(entry))
                except OSError:
                    continue
        return found

    def cleanup(self) -> None:
        supervisors = self.supervisor_pids()  # first, or they respawn what we kill
        for pid in supervisors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(pid_alive(p) for p in supervisors), 10,
                 message="supervisors gone")
        for _ in range(3):
            pids = tagged_pids(self.tag)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_for(lambda pids=pids: not any(pid_alive(p) for p in pids), 10,
                     message="cleanup")


#: a spawned child reports its argv, $FOO, cwd and session, then execs sleep: the spawn tests
#: (in-process and through the helper) compare it with what was asked
CHILD_REPORT_SCRIPT = ('printf "%s\\n" "$(tr "\\0" " " < /proc/$$/cmdline)" "$FOO" "$PWD" '
                       '"$(ps -o sid= -p $$ | tr -d " ")"; echo END; exec sleep 600')


def child_report_request(directory: Path, fork_way: bool
                         ) -> tuple[SpawnRequest, Path, list[int], int]:
    """A request to run CHILD_REPORT_SCRIPT with its report in ``directory`` (and its working
    directory there on the fork way, which a directory needs). Returns the request, the
    report's path, the fds to close once it is spawned, and its stdin's write end."""
    report = directory / "report"
    out = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    request = SpawnRequest(
        "/bin/sh", ["sh", "-c", CHILD_REPORT_SCRIPT], {"PATH": os.environ["PATH"], "FOO": "bar"},
        stdin=in_r, stdout=out, stderr=STDOUT, cwd=str(directory) if fork_way else None)
    return request, report, [out, in_r], in_w


def check_child_report(report: Path, pid: int, pwd: str, *, not_ignored: Iterable[int],
                       unblocked: bool) -> None:
    """The child ``pid`` that ran CHILD_REPORT_SCRIPT (FOO=bar) got what it asked for.

    The signal masks are read from the program it exec'd, not by the shell of itself: dash
    blocks every signal around each fork, so a shell reading its own status while its
    command substitution runs sometimes saw them all blocked."""

    def lines() -> list[str]:
        text = report.read_text() if report.exists() else ""
        return text.splitlines() if text.endswith("END\n") else []

    cmdline, foo, cwd, sid, _end = wait_for(lines, 10, message="child's report")
    assert cmdline == f"sh -c {CHILD_REPORT_SCRIPT} "  # argv[0] as given, not a path
    assert foo == "bar"
    assert cwd == pwd
    assert int(sid) == pid  # its own session
    wait_for(lambda: Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"),
             10, message="sh exec'd sleep")
    masks = dict(line.rstrip("\n").split(":\t", 1)
                 for line in Path(f"/proc/{pid}/status").read_text().splitlines(True)
                 if line.startswith("Sig"))
    for signum in not_ignored:
        assert not int(masks["SigIgn"], 16) & (1 << (signum - 1)), signum
    if unblocked:
        assert int(masks["SigBlk"], 16) == 0
    assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]  # nothing else
