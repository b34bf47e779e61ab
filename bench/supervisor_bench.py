"""daemonkit's supervisor against supervisord, same machine, same run, same INI file.

Both supervisors read one config of N programs (10 unless ``--programs``; supervisord's own
format: daemonkit accepts [supervisord] and skips the XML-RPC sections). Figures: time until
all programs are RUNNING, respawn latency after kill -9 (median of 20, measured by watching
the supervisor's children, not through either status API), `status` latency (the CLI end to
end, and the in-process API), idle CPU seconds over 30 s (both measured side by side), RSS.

    python bench/supervisor_bench.py [--idle-seconds 30] [--respawns 20]
    python bench/supervisor_bench.py --programs 2000 --startsecs 0 [--before OTHER_CHECKOUT]

``--startsecs 0`` makes "all RUNNING" measure spawning itself rather than the startsecs
floor; ``--before`` adds a third contender, another checkout's supervisor (main's, for a
before figure), measured in the same run with the same measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = 10  # --programs
STARTSECS = 1.0  # --startsecs

TEMPLATE = """\
[supervisord]
pidfile = {run}/sv.pid
logfile = {run}/sv.log
childlogdir = {run}
nodaemon = false
minfds = {minfds}
minprocs = {minprocs}

[unix_http_server]
file = {run}/supervisor.sock
chmod = 0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{run}/supervisor.sock

"""
PROGRAM = """\
[program:p{n}]
command = sleep 100000
startsecs = {startsecs:g}
startretries = 3
stopwaitsecs = 5
autorestart = true

"""


def wait_until(condition: Callable[[], Any], timeout: float, step: float = 0.001) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("condition not reached")


class Contender:
    name = ""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.ini = run / "sv.ini"
        # a child holds at most 3 pipes, a pidfd and 2 log files in either supervisor
        self.ini.write_text(
            TEMPLATE.format(run=run, minfds=max(1024, 8 * PROGRAMS + 1024),
                            minprocs=max(200, PROGRAMS + 200))
            + "".join(PROGRAM.format(n=n, startsecs=STARTSECS) for n in range(PROGRAMS)))

    def pid(self) -> int:
        """The supervisor's pid; 0 while its pidfile is not written yet."""
        try:
            return int((self.run / "sv.pid").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def start(self) -> None: ...
    def states(self) -> dict[str, tuple[str, int]]: ...
    def status_cli(self) -> list[str]: ...
    def cli_env(self) -> dict[str, str]:
        """Where and with what its CLI runs (the checkout whose code it is)."""
        return dict(os.environ)

    def pid_of(self, name: str) -> int:
        return self.states()[name][1]
    def stop(self) -> None: ...


class Supervisord(Contender):
    name = "supervisord"

    def start(self) -> None:
        subprocess.run([shutil.which("supervisord") or "supervisord", "-c", str(self.ini)],
                       check=True)
        wait_until((self.run / "supervisor.sock").exists, 10)
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.run}/supervisor.sock")
        self.rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def states(self) -> dict[str, tuple[str, int]]:
        with contextlib.suppress(OSError, xmlrpc.client.Fault):
            return {p["name"]: (p["statename"], p["pid"])
                    for p in self.rpc.supervisor.getAllProcessInfo()}
        return {}

    def status_cli(self) -> list[str]:
        return [shutil.which("supervisorctl") or "supervisorctl", "-c", str(self.ini), "status"]

    def pid_of(self, name: str) -> int:
        """One process, not all: supervisord takes seconds to list 2,000."""
        return int(self.rpc.supervisor.getProcessInfo(name)["pid"])

    def stop(self) -> None:
        pid = self.pid()
        subprocess.run([*self.status_cli()[:-1], "shutdown"], capture_output=True, check=False)
        wait_until(lambda: not psutil.pid_exists(pid), 30, 0.01)


class Daemonkit(Contender):
    name = "daemonkit"

    def __init__(self, run: Path, checkout: Path = ROOT, name: str = "daemonkit") -> None:
        super().__init__(run)
        self.checkout = checkout
        self.name = name

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "daemonkit", "supervise", "-c", str(self.ini), *args]

    def cli_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.checkout)}

    def _run(self, *args: str, check: bool = True) -> None:
        done = subprocess.run(self._cli(*args), capture_output=True, text=True,
                              cwd=self.checkout, env=self.cli_env(), check=False)
        if check and done.returncode:
            raise RuntimeError(f"{self.name} {args[0]}: exit {done.returncode}: "
                               f"{done.stderr.strip()}")

    def start(self) -> None:
        # start answers once every program is spawned: main's code took more than the
        # default 10 s for 2,000 (supervisord returns before spawning any)
        self._run("start", "--start-timeout", "120")

    def states(self) -> dict[str, tuple[str, int]]:
        from daemonkit.control import ControlError, request

        with contextlib.suppress(ControlError):
            reply = request(str(self.run / "sv.ctl"), {"cmd": "supervisor-status"}, 5.0)
            return {p["name"]: (p["state"], p["pid"] or 0) for p in reply["programs"]}
        return {}

    def status_cli(self) -> list[str]:
        return self._cli("status")

    def stop(self) -> None:
        self._run("stop")


def all_running(contender: Contender) -> bool:
    states = contender.states()
    return len(states) == PROGRAMS and all(s == "RUNNING" for s, _ in states.values())


def poll_step() -> float:
    """How often to ask for all states: a 2,000-program answer costs the supervisor time
    itself, so asking every 5 ms would measure the asking."""
    return 0.005 if PROGRAMS <= 100 else 0.05


def time_to_running(contender: Contender) -> tuple[float, float]:
    """(all spawned, all RUNNING) in seconds from the launch. Spawned: the supervisor has
    all its children (read from the kernel, cheap to ask often); RUNNING: its status API
    says so, a figure as coarse as one answer is slow (supervisord: seconds for 2,000)."""
    started = time.monotonic()
    contender.start()
    children = children_of(wait_until(contender.pid, 30, 0.001))
    wait_until(lambda: len(children()) >= PROGRAMS, 120, 0.002)
    spawned = time.monotonic() - started
    wait_until(lambda: all_running(contender), 120, poll_step())
    return spawned, time.monotonic() - started


def children_of(pid: int) -> Callable[[], set[int]]:
    """The supervisor's programs, read from the kernel's child lists: psutil's children()
    scans every process on the machine, tens of ms with 4,000 of them, which would swamp a
    respawn of a few ms. daemonkit's programs are children of its spawn helper (itself a
    child of the supervisor's main thread); supervisord's are its own."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if not path.exists():
        process = psutil.Process(pid)
        return lambda: {c.pid for c in process.children()}
    helpers: dict[int, Path | None] = {}  # child pid -> its own child list if a helper

    def helper_list(child: int) -> Path | None:
        if child not in helpers:
            with contextlib.suppress(OSError):
                if b"spawnhelper.py\0" in Path(f"/proc/{child}/cmdline").read_bytes():
                    helpers[child] = Path(f"/proc/{child}/task/{child}/children")
                    return helpers[child]
            helpers[child] = None
        return helpers[child]

    def children() -> set[int]:
        found: set[int] = set()
        for child in map(int, path.read_text().split()):
            listing = helper_list(child)
            if listing is None:
                found.add(child)
            else:
                with contextlib.suppress(OSError):
                    found.update(map(int, listing.read_text().split()))
        return found

    return children


def respawn_latency(contender: Contender, rounds: int) -> list[float]:
    """kill -9 one child, then watch the supervisor's children (0.5 ms) for its replacement."""
    children = children_of(contender.pid())
    latencies = []
    for index in range(rounds):
        if PROGRAMS <= 100:
            wait_until(lambda: all_running(contender), 30, poll_step())  # RUNNING again
        # (with more, every round kills another program, each up since the start: asking
        # supervisord for 2,000 states each round would take minutes)
        before = children()
        victim = contender.pid_of(f"p{index % PROGRAMS}")
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda before=before: bool(children() - before), 30, 0.0005)
        latencies.append(time.monotonic() - killed)
    return latencies


def status_latency(contenders: list[Contender], rounds: int, api_rounds: int
                   ) -> dict[str, tuple[float, float]]:
    """Interleaved, so load from elsewhere on the machine hits both alike."""
    cli: dict[str, list[float]] = {c.name: [] for c in contenders}
    api: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for contender in contenders:
            started = time.monotonic()
            # each CLI from its own checkout (--before: main's client, not this one)
            subprocess.run(contender.status_cli(), capture_output=True, check=True,
                           cwd=getattr(contender, "checkout", ROOT), env=contender.cli_env())
            cli[contender.name].append(time.monotonic() - started)
        for _ in range(api_rounds):
            for contender in contenders:
                started = time.monotonic()
                assert len(contender.states()) == PROGRAMS
                api[contender.name].append(time.monotonic() - started)
    return {name: (statistics.median(cli[name]), statistics.median(api[name])) for name in cli}


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> int:
    global PROGRAMS, STARTSECS  # set once, from the command line
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--respawns", type=int, default=20)
    parser.add_argument("--status-rounds", type=int, default=20)
    parser.add_argument("--api-rounds", type=int, default=5, help="API calls per CLI round")
    parser.add_argument("--programs", type=int, default=PROGRAMS)
    parser.add_argument("--startsecs", type=float, default=STARTSECS)
    parser.add_argument("--before", type=Path, default=None,
                        help="another daemonkit checkout to measure too (e.g. main's)")
    args = parser.parse_args()
    PROGRAMS, STARTSECS = args.programs, args.startsecs
    before = args.before.resolve() if args.before else None
    if before is not None and not (before / "daemonkit" / "supervisor").is_dir():
        print(f"{before}: not a daemonkit checkout", file=sys.stderr)
        return 2
    print(f"{PROGRAMS} programs, startsecs = {STARTSECS:g}; load average at start "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    if shutil.which("supervisord") is None:
        print("supervisord not found: pip install supervisor", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="sv-bench-"))
    for name in ("supervisord", "daemonkit", "before"):
        (base / name).mkdir()
    contenders: list[Contender] = [Supervisord(base / "supervisord"),
                                   Daemonkit(base / "daemonkit")]
    if before is not None:
        contenders.append(Daemonkit(base / "before", before, "before"))
    results: dict[str, dict[str, float]] = {}
    try:
        for contender in contenders:
            figures = results.setdefault(contender.name, {})
            figures["all spawned (s)"], figures["all RUNNING (s)"] = time_to_running(contender)
            latencies = respawn_latency(contender, args.respawns)
            figures["respawn median (ms)"] = statistics.median(latencies) * 1000
            figures["respawn max (ms)"] = max(latencies) * 1000
            wait_until(lambda c=contender: all_running(c), 120, poll_step())
        for name, (cli, api) in status_latency(contenders, args.status_rounds,
                                                       args.api_rounds).items():
            results[name]["status CLI median (ms)"] = cli * 1000
            results[name]["status API median (ms)"] = api * 1000
        # idle: both at once, same 30 s, nothing asked of them
        pids = {c.name: c.pid() for c in contenders}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        time.sleep(args.idle_seconds)  # the measurement window itself
        for name, pid in pids.items():
            results[name][f"idle CPU over {args.idle_seconds:g}s (s)"] = (
                cpu_seconds(pid) - before[name])
            results[name]["RSS (MB)"] = psutil.Process(pid).memory_info().rss / 2**20
    finally:
        for contender in contenders:
            with contextlib.suppress(Exception):
                contender.stop()
        shutil.rmtree(base, ignore_errors=True)
    report(results)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


def report(results: dict[str, dict[str, float]]) -> None:
    ours, theirs = results["daemonkit"], results["supervisord"]
    names = list(results)
    print(f"{'figure':<28}" + "".join(f"{name:>12}" for name in names)
          + f" {'ratio sd/dk':>12}")
    for key in theirs:
        if ours[key]:
            ratio = f"{theirs[key] / ours[key]:>11.2f}x"
        else:
            ratio = f"{'(both 0)' if not theirs[key] else '(dk 0)':>12}"
        print(f"{key:<28}" + "".join(f"{results[name][key]:>12.3f}" for name in names)
              + f" {ratio}")
    print(f"\nrespawn: daemonkit {theirs['respawn median (ms)'] / ours['respawn median (ms)']:.0f}x"
          " faster (target >= 10x)")
    print(f"RSS: daemonkit/supervisord = {ours['RSS (MB)'] / theirs['RSS (MB)']:.2f}"
          " (target <= 1.2)")


if __name__ == "__main__":
    sys.exit(main())
