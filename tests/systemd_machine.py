"""A real systemd for the tests: a container booted by systemd-nspawn; no VM, no host systemd.

Two kinds of root directory:

* ``host``: the host's own ``/usr``, bound read-only, and a copy of ``/etc`` with an empty
  ``machine-id`` (systemd makes one at boot), ``os-release`` as a real file (nspawn wants one
  it can read before ``/usr`` is bound) and none of the host's enabled units (the host's
  PostgreSQL and MariaDB must not start in there). Boots in about two seconds.
* ``debian``: ``debootstrap --variant=minbase`` of another Debian release (trixie: systemd 257,
  Python 3.13), made fresh for each test session from the mirror apt is configured with;
  nothing is cached between runs.

``systemd-nspawn --register=no --keep-unit -b`` boots it with a private network (its own
loopback only, so a unit that binds a fixed port cannot collide with a parallel test run) and
the unified cgroup hierarchy (what Debian 12 and 13 boot with). nspawn runs as the init of a
PID namespace of its own (``unshare --pid --fork --kill-child``, itself killed with the test
runner: ``setpriv --pdeathsig``), so whatever happens to the test run, the kernel takes the
container's every process with it. :meth:`Machine.shutdown` powers it off, kills what is left
by pid and checks that no process of its PID namespace remains.

Commands run inside through ``nsenter -t PID -a`` (PID: the container's systemd, as the host
sees it) with a clean environment. Tests drive units with ``systemctl`` and read
``journalctl``, as an administrator would (:class:`InstalledUnits` puts units in and takes
them out again). A client for a service runs inside too (``machine.run``): the container's
loopback is its own.

daemonkit is installed inside with pip, from a copy of this checkout, into
``/opt/daemonkit/venv`` with the machine's own ``/usr/bin/python3``; the examples are at
``/opt/daemonkit/examples`` and ``tests/services`` at ``/opt/daemonkit/services``: the layout
``init/systemd/*.service`` expect. The host's pip settings that mean the same in there (index
URLs, the CA bundle, proxies) are passed on; local paths (find-links, ``file://`` indexes,
constraint files) are not.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psutil
from helpers import ROOT, wait_for

OPT = "/opt/daemonkit"
VENV = f"{OPT}/venv"
PYTHON = f"{VENV}/bin/python"
SRC = f"{OPT}/src"
EXAMPLES = f"{OPT}/examples"
SERVICES = f"{OPT}/services"
UNIT_DIR = "/etc/systemd/system"
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEBIAN_SUITE = "trixie"
DEBIAN_PACKAGES = ("python3", "python3-venv", "systemd", "systemd-sysv", "dbus")
#: what a fresh checkout's tests need to run inside (besides daemonkit and its dependencies)
TEST_REQUIREMENTS_PREFIX = "pytest"

BOOT_TIMEOUT_S = 90.0
DEBOOTSTRAP_TIMEOUT_S = 900.0
PIP_TIMEOUT_S = 600.0
POWEROFF_TIMEOUT_S = 15.0
#: what is copied of this checkout into SRC (enough to `pip install` it and run its tests)
PROJECT_FILES = ("pyproject.toml", "README.md", "daemonkit", "tests", "examples", "init")
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", ".venv",
                                      "*.db", "*.db-wal", "*.db-shm", ".pytest_cache")


class MachineError(RuntimeError):
    """The container could not be built, booted or driven; the message says what happened."""


def missing_tools(debian: bool = False) -> list[str]:
    """The commands this module needs that are not installed (with their Debian package)."""
    needed = {"systemd-nspawn": "systemd-container", "nsenter": "util-linux",
              "unshare": "util-linux", "setpriv": "util-linux"}
    if debian:
        needed["debootstrap"] = "debootstrap"
    return [f"{tool} ({package})" for tool, package in needed.items() if not shutil.which(tool)]


# -- root directories ----------------------------------------------------------------------------


def build_host_root(root: Path) -> None:
    """A root of the host's /usr (bound at boot) and a copy of its /etc."""
    root.mkdir(mode=0o755)
    for link in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink(f"/{link}"):
            (root / link).symlink_to(os.readlink(f"/{link}"))
    for directory in ("usr", "var", "tmp", "run", "proc", "sys", "dev", "root", "home", "opt",
                      "srv", "mnt"):
        (root / directory).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    shutil.copytree("/etc", root / "etc", symlinks=True)
    _fresh_identity(root)
    system = root / "etc" / "systemd" / "system"
    for entry in system.iterdir():  # the host's enabled units and aliases of them
        if entry.name.endswith(".wants") or entry.is_symlink():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def build_debian_root(root: Path, suite: str, log: Path) -> None:
    """``debootstrap --variant=minbase`` of ``suite`` with python3 and systemd, into ``root``."""
    command = ["debootstrap", "--variant=minbase", "--include=" + ",".join(DEBIAN_PACKAGES),
               suite, str(root), debian_mirror()]
    with log.open("wb") as output:
        try:
            result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=DEBOOTSTRAP_TIMEOUT_S,
                                    check=False)
        except subprocess.TimeoutExpired:
            raise MachineError(f"debootstrap {suite} not done after "
                               f"{DEBOOTSTRAP_TIMEOUT_S:g}s; see {log}") from None
    if result.returncode != 0:
        raise MachineError(f"debootstrap {suite} failed ({result.returncode}): "
                           + _tail(log.read_bytes()))
    root.chmod(0o755)
    _fresh_identity(root)
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")  # for pip, inside


def debian_mirror() -> str:
    """The Debian archive apt is configured with here (deb822 ``.sources`` or one-line lists)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(_deb822_fields(stanza))
            suites = fields.get("Suites", "").split()
            if ("deb" in fields.get("Types", "").split() and suites
                    and not any(suite.endswith("-security") for suite in suites)
                    and fields.get("URIs")):
                return fields["URIs"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb" and not words[2].endswith("-security"):
                    return words[1]
    return "http://deb.debian.org/debian"


def _deb822_fields(stanza: str) -> Iterator[tuple[str, str]]:
    for line in stanza.splitlines():
        if line and not line.startswith(("#", " ", "\t")) and ":" in line:
            key, _, value = line.partition(":")
            yield key.strip(), value.strip()


def _fresh_identity(root: Path) -> None:
    machine_id = root / "etc" / "machine-id"
    with contextlib.suppress(FileNotFoundError):
        machine_id.unlink()
    machine_id.write_text("")
    machine_id.chmod(0o444)
    os_release = root / "etc" / "os-release"
    if os_release.is_symlink():
        link = os.readlink(os_release)
        target = root / link.lstrip("/") if os.path.isabs(link) else os_release.parent / link
        # the host root's /usr is bound only at boot: its os-release is the host's own
        source = target if target.exists() else Path("/usr/lib/os-release")
        os_release.unlink()
        shutil.copyfile(source, os_release)


def _tail(data: bytes, lines: int = 15) -> str:
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


# -- pip inside ----------------------------------------------------------------------------------


def pip_environment(root: Path) -> dict[str, str]:
    """``PIP_*`` variables that give pip inside the machine the host's index and trust.

    The CA bundle is copied into the machine (a TLS-inspecting proxy's CA is in the host's
    bundle, not in a fresh Debian's). Config files are ignored inside (``PIP_CONFIG_FILE``):
    the host's name paths that do not exist in there.
    """
    settings = _host_pip_settings()
    environment = {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                   "PIP_NO_INPUT": "1", "PIP_ROOT_USER_ACTION": "ignore"}
    for key in ("index-url", "extra-index-url", "find-links"):
        urls = [url for url in settings.get(key, "").split()
                if url.startswith(("http://", "https://"))]
        if urls:
            environment["PIP_" + key.upper().replace("-", "_")] = " ".join(urls)
    for key in ("trusted-host", "default-timeout", "timeout", "retries", "proxy"):
        if settings.get(key):
            environment["PIP_" + key.upper().replace("-", "_")] = settings[key]
    bundle = (settings.get("cert") or os.environ.get("REQUESTS_CA_BUNDLE")
              or os.environ.get("SSL_CERT_FILE"))
    if bundle and os.path.isfile(bundle):
        inside = "/etc/daemonkit-test/pip-ca.pem"
        (root / inside.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle, root / inside.lstrip("/"))
        environment["PIP_CERT"] = inside
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "NO_PROXY"):
        if os.environ.get(name):
            environment[name] = os.environ[name]
    return environment


def _host_pip_settings() -> dict[str, str]:
    """pip's effective settings here: ``pip config list`` (files, then ``PIP_*`` on top)."""
    result = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, timeout=60, check=False)
    from_files: dict[str, str] = {}
    from_env: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep or "." not in key:
            continue
        scope, _, name = key.partition(".")
        target = from_env if scope == ":env:" else from_files
        target[name] = value.strip().strip("'\"")
    return {**from_files, **from_env}


def test_requirements() -> list[str]:
    """The pytest requirements of this project's ``test`` extra (nothing else is needed inside)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [requirement for requirement in project["optional-dependencies"]["test"]
            if requirement.startswith(TEST_REQUIREMENTS_PREFIX)]


# -- the machine ---------------------------------------------------------------------------------


class Machine:
    """One booted container. Build with :func:`boot_host` or :func:`boot_debian`."""

    def __init__(self, label: str, root: Path, workdir: Path, bind_usr: bool) -> None:
        self.label = label
        self.root = root
        self.workdir = workdir
        self.bind_usr = bind_usr
        self.name = f"dk-{label}-{os.getpid()}-{os.urandom(3).hex()}"[:64]
        self.console_log = workdir / "console.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.nspawn_pid: int | None = None
        self.pid = 0  #: the container's systemd, as the host sees it
        self._pid_namespace: str | None = None
        self.systemd_version = 0
        self.boot_seconds = 0.0

    # -- life ----------------------------------------------------------------------------

    def boot(self, timeout_s: float = BOOT_TIMEOUT_S) -> None:
        started = time.monotonic()
        # setpriv: PR_SET_PDEATHSIG, so unshare dies with the test runner and its --kill-child
        # then takes nspawn, the init of its PID namespace, and with it every process inside
        command = ["setpriv", "--pdeathsig", "KILL", "--",
                   "unshare", "--pid", "--fork", "--kill-child", "systemd-nspawn",
                   "--directory", str(self.root), "--machine", self.name, "--register=no",
                   "--keep-unit", "--private-network", "--console=read-only", "--boot"]
        if self.bind_usr:
            command.insert(-1, "--bind-ro=/usr")
        environment = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        with self.console_log.open("wb") as console:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console,
                                             stderr=subprocess.STDOUT, env=environment,
                                             start_new_session=True)
        try:
            self.nspawn_pid = self._child_of(self._process.pid, "systemd-nspawn", timeout_s)
            self.pid = self._child_of(self.nspawn_pid, "systemd", timeout_s)
            self._pid_namespace = os.readlink(f"/proc/{self.pid}/ns/pid")
            self._wait_until_running(started + timeout_s)
            version = re.match(r"systemd (\d+)", self.run("systemctl", "--version").stdout)
            if version is None:
                raise MachineError(f"{self.label}: systemctl --version says no version")
            self.systemd_version = int(version.group(1))
        except BaseException:
            self.shutdown()
            raise
        self.boot_seconds = time.monotonic() - started

    def _child_of(self, parent: int, name: str, timeout_s: float) -> int:
        def child() -> int | None:
            if self._process is not None and self._process.poll() is not None:
                raise MachineError(f"{self.label}: systemd-nspawn exited with "
                                   f"{self._process.returncode}: " + self.console_tail())
            try:
                for process in psutil.Process(parent).children():
                    if process.name() == name:
                        return int(process.pid)
            except psutil.NoSuchProcess:
                pass
            return None

        return wait_for(child, timeout_s, 0.02, f"{name} under pid {parent}")

    def _wait_until_running(self, deadline: float) -> None:
        """``systemctl is-system-running --wait`` once it can reach the manager at all."""
        state = ""
        while time.monotonic() < deadline:
            try:
                result = self.run("systemctl", "is-system-running", "--wait",
                                  timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
            state = result.stdout.strip()
            if state == "running":
                return
            if state == "degraded":
                failed = self.run("systemctl", "--failed", "--no-legend").stdout
                raise MachineError(f"{self.label} booted degraded: {failed.strip()}")
            time.sleep(0.05)  # the manager's socket is not there yet
        raise MachineError(f"{self.label}: not running after {BOOT_TIMEOUT_S:g}s "
                           f"(state {state!r}): " + self.console_tail())

    def shutdown(self) -> None:
        """Power off (bounded), then kill what is left by pid; nothing of it may survive."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None and self.nspawn_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.nspawn_pid, signal.SIGTERM)  # nspawn powers the container off
            try:
                process.wait(POWEROFF_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        if process.poll() is None:
            process.kill()  # unshare: its --kill-child SIGKILLs nspawn, the namespace's init
            process.wait(10)
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # gone already, unless something is very wrong
        wait_for(lambda: not self.processes_left(), 10, 0.05,
                 f"every process of container {self.name} gone")
        remove_nspawn_leftovers(self.name)

    def processes_left(self) -> list[int]:
        """Pids of processes still in the container's PID namespace (or nspawn itself)."""
        left = [pid for pid in (self.nspawn_pid,) if pid and _alive(pid)]
        if self._pid_namespace is None:
            return left
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry.name}/ns/pid") == self._pid_namespace:
                        left.append(int(entry.name))
        return left

    def console_tail(self) -> str:
        try:
            return _tail(self.console_log.read_bytes())
        except OSError:
            return "(no console output)"

    # -- commands inside -----------------------------------------------------------------

    def run(self, *argv: str, input: str | None = None, timeout: float = 60.0,
            env: dict[str, str] | None = None, host_network: bool = False,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside (root, clean environment); ``host_network``: in the host's
        network namespace instead of the container's private one (for pip)."""
        command = ["nsenter", "--target", str(self.pid), "--all"]
        if host_network:
            command.append("--net=/proc/self/ns/net")  # nsenter's own: the host's
        command += ["env", "-i", f"PATH={INSIDE_PATH}", "LANG=C.UTF-8", "HOME=/root",
                    "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "PYTHONDONTWRITEBYTECODE=1"]
        command += [f"{key}={value}" for key, value in (env or {}).items()]
        command += list(argv)
        result = subprocess.run(command, input=input, capture_output=True, text=True,
                                timeout=timeout, check=False, stdin=None if input is not None
                                else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise MachineError(f"{self.label}: {' '.join(argv)} exited {result.returncode}: "
                               f"{result.stdout}{result.stderr}")
        return result

    def systemctl(self, *args: str, timeout: float = 90.0,
                  check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, timeout=timeout, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        output = self.systemctl("show", "--property", ",".join(properties), unit,
                                check=True).stdout
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, "MainPID")["MainPID"])

    def cursor(self) -> str:
        """Where the journal ends now: pass it to :meth:`journal` to read only what follows."""
        output = self.run("journalctl", "--lines=0", "--show-cursor", "--no-pager",
                          check=True).stdout
        match = re.search(r"^-- cursor: (\S+)", output, re.M)
        if match is None:
            raise MachineError(f"no journal cursor in {output!r}")
        return match.group(1)

    def journal(self, unit: str | None = None, after: str | None = None) -> list[str]:
        """Journal lines (``IDENTIFIER[PID]: MESSAGE``), of ``unit`` and of systemd about it."""
        command = ["journalctl", "--no-pager", "--output=json"]
        if unit is not None:
            command += ["--unit", unit]
        if after is not None:
            command.append(f"--after-cursor={after}")
        lines = []
        for raw in self.run(*command, check=True).stdout.splitlines():
            entry = json.loads(raw)
            message = entry.get("MESSAGE", "")
            if isinstance(message, list):  # not UTF-8: journald stores the bytes
                message = bytes(message).decode(errors="replace")
            lines.append(f"{entry.get('SYSLOG_IDENTIFIER', '?')}[{entry.get('_PID', '?')}]: "
                         f"{message}")
        return lines

    def wait_journal(self, unit: str, text: str, after: str | None = None,
                     timeout: float = 20.0) -> list[str]:
        """Poll the journal until a line of ``unit`` contains ``text``; all lines then."""
        def seen() -> list[str] | None:
            lines = self.journal(unit, after)
            return lines if any(text in line for line in lines) else None

        try:
            return wait_for(seen, timeout, 0.1, f"{text!r} in the journal of {unit}")
        except AssertionError as exc:
            journal = "\n".join(self.journal(unit, after))
            raise AssertionError(f"{exc}; journal:\n{journal}") from None

    # -- files and units -----------------------------------------------------------------

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside (any path, also the container's own /run and /tmp)."""
        self.run("sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "sh", path, f"{mode:o}",
                 input=text, check=True)

    def read_file(self, path: str) -> str:
        return self.run("cat", path, check=True).stdout

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path).returncode == 0

    def copy_in(self, source: Path, destination: str) -> None:
        """Copy a file or tree from the host to ``destination`` (not under /run or /tmp,
        which are the container's own tmpfs), readable by every user in there."""
        target = self.root / destination.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=_COPY_IGNORE, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        for path in [target, *(target.rglob("*") if target.is_dir() else [])]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)

    def install_unit(self, name: str, text: str) -> None:
        """Put a unit file into /etc/systemd/system and make systemd read it."""
        self.write_file(f"{UNIT_DIR}/{name}", text)
        self.systemctl("daemon-reload", check=True)

    def remove_unit(self, name: str) -> None:
        """Stop it (bounded by its own timeouts), forget its failures, delete the file."""
        self.systemctl("stop", name)
        self.systemctl("reset-failed", name)
        self.run("rm", "-f", f"{UNIT_DIR}/{name}")
        self.systemctl("daemon-reload", check=True)

    def add_user(self, name: str) -> None:
        """A system user for a service (idempotent)."""
        if self.run("id", "-u", name).returncode != 0:
            self.run("useradd", "--system", "--no-create-home", "--shell",
                     "/usr/sbin/nologin", name, check=True)

    # -- daemonkit inside ----------------------------------------------------------------

    def install_daemonkit(self, with_tests: bool = False) -> float:
        """This checkout into ``/opt/daemonkit`` (see the module docstring); returns seconds."""
        started = time.monotonic()
        for name in PROJECT_FILES:
            self.copy_in(ROOT / name, f"{SRC}/{name}")
        self.copy_in(ROOT / "examples", EXAMPLES)
        self.copy_in(ROOT / "tests" / "services", SERVICES)
        environment = pip_environment(self.root)
        self.run("/usr/bin/python3", "-m", "venv", VENV, check=True, timeout=PIP_TIMEOUT_S)
        packages = [SRC, *(test_requirements() if with_tests else [])]
        result = self.run(PYTHON, "-m", "pip", "install", "--quiet", *packages,
                          env=environment, host_network=True, timeout=PIP_TIMEOUT_S)
        if result.returncode != 0:
            raise MachineError(f"{self.label}: pip install failed: {result.stdout}"
                               f"{result.stderr}")
        return time.monotonic() - started

    def python_version(self) -> str:
        return self.run(PYTHON, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])",
                        check=True).stdout.strip()


class InstalledUnits:
    """Units a test installs; :meth:`cleanup` stops and removes them, whatever the outcome."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.installed: list[str] = []

    def install(self, name: str, text: str) -> str:
        """Any unit (``.service``, ``.socket``...) into /etc/systemd/system; returns its name."""
        self.installed.append(name)
        self.machine.install_unit(name, text)
        return name

    def init_files(self, script: str, name: str, kind: str, *service_args: str, user: str,
                   options: tuple[str, ...] = ()) -> str:
        """``daemonkit init-files --only KIND`` for ``script`` (a path inside), run inside with
        the venv's interpreter, installed as ``NAME.service`` (as the file's comment says)."""
        text = self.machine.run(
            PYTHON, "-m", "daemonkit", "init-files", script, "--user", user, "--name", name,
            "--only", kind, *options, "--", *service_args, check=True).stdout
        return self.install(f"{name}.service", text)

    def cleanup(self) -> None:
        for name in reversed(self.installed):
            self.machine.remove_unit(name)


def remove_nspawn_leftovers(name: str) -> None:
    """The host directory nspawn makes for a machine and leaves behind when it is killed
    (``rmdir`` only: it never follows into anything)."""
    propagate = Path("/run/systemd/nspawn/propagate") / name
    with contextlib.suppress(OSError):
        for leftover in propagate.iterdir():
            leftover.rmdir()
        propagate.rmdir()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- ready-made machines -------------------------------------------------------------------------


def new_workdir(label: str) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=f"daemonkit-{label}-"))
    workdir.chmod(0o755)
    return workdir


@contextlib.contextmanager
def booted(label: str, debian_suite: str | None = None, with_tests: bool = False
           ) -> Iterator[Machine]:
    """A machine with daemonkit installed, shut down and deleted afterwards, whatever happens."""
    workdir = new_workdir(label)
    machine = Machine(label, workdir / "root", workdir, bind_usr=debian_suite is None)
    try:
        if debian_suite is None:
            build_host_root(machine.root)
        else:
            build_debian_root(machine.root, debian_suite, workdir / "debootstrap.log")
        machine.boot()
        machine.install_daemonkit(with_tests=with_tests)
        yield machine
    finally:
        machine.shutdown()
        remove_workdir(workdir, machine)


def remove_workdir(workdir: Path, machine: Machine) -> None:
    """Delete a machine's directory, never while anything of it runs or is mounted there (the
    host root's ``usr`` is bound only inside the container, but a bind that leaked out would
    make this delete the host's /usr)."""
    if machine.processes_left():
        raise MachineError(f"{machine.name} still has processes: {workdir} kept")
    with open("/proc/self/mountinfo") as mountinfo:
        mounted = [line.split()[4] for line in mountinfo
                   if line.split()[4].startswith(str(workdir))]
    if mounted:
        raise MachineError(f"mounted under {workdir}: {', '.join(mounted)}; not deleting it")
    shutil.rmtree(workdir, ignore_errors=True)
