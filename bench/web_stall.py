"""Respawn latency of a supervised child with and without hung HTTP clients on the web page.

Runs a real ``daemonkit supervise`` with ``[web]`` and eight ``victim`` instances that write
a timestamp when they start. Each phase SIGKILLs every victim once and records the time from
the kill to the successor's timestamp. Phases alternate in every round, so machine noise hits
all of them alike:

* ``none``: no HTTP client (the baseline);
* ``stalled``: 100 connections that sent half a request line and went silent;
* ``unread``: 10 connections that asked for 256 KiB of log and never read the answer;
* ``both``: the two together.

    python bench/web_stall.py --rounds 5

Prints medians and 90th percentiles in ms and each phase's median against the baseline's.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import wait_for
from tests.test_web_supervisor import (
    RESPAWN_PROGRAMS,
    RunningSupervisor,
    measure_respawns,
    settled,
)


def stalled_clients(running: RunningSupervisor) -> list[socket.socket]:
    opened = []
    for _ in range(100):
        sock = socket.create_connection((running.host, running.port), timeout=5)
        sock.sendall(b"GET /api/sta")
        opened.append(sock)
    return opened


def unread_clients(running: RunningSupervisor) -> list[socket.socket]:
    opened = []
    for _ in range(10):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((running.host, running.port))
        sock.sendall(b"GET /api/programs/chatty/log?offset=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        opened.append(sock)
    return opened


PHASES: dict[str, Callable[[RunningSupervisor], list[socket.socket]]] = {
    "none": lambda running: [],
    "stalled": stalled_clients,
    "unread": unread_clients,
    "both": lambda running: stalled_clients(running) + unread_clients(running),
}


def popen_ms(runs: int = 30) -> float:
    """Median ms of a Popen with preexec_fn (a full fork(), as the supervisor spawns)."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        child = subprocess.Popen(["true"], preexec_fn=lambda: None)  # noqa: PLW1509
        times.append(time.perf_counter() - began)
        child.wait()
    return statistics.median(times) * 1000


def fork_cost_with_threads(count: int = 110) -> tuple[float, float]:
    """Popen cost in this process, then with ``count`` threads blocked in recv() (as the
    web server's threads of stalled clients are): the likely price of hung clients."""
    before = popen_ms()
    pairs = [socket.socketpair() for _ in range(count)]
    threads = [threading.Thread(target=a.recv, args=(1,), daemon=True) for a, _ in pairs]
    for thread in threads:
        thread.start()
    after = popen_ms()
    for a, b in pairs:
        b.close()
        a.close()
    return before, after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {phase: [] for phase in PHASES}
    with tempfile.TemporaryDirectory(prefix="web-stall-") as tmp:
        workdir = Path(tmp)
        (workdir / "victim.sh").write_text(
            'date +%s.%N >> "$(dirname "$0")/starts.txt"\nexec sleep 1000\n')
        running = RunningSupervisor(workdir, RESPAWN_PROGRAMS)
        starts = workdir / "starts.txt"
        try:
            running.start()
            chatty = workdir / "chatty.log"
            wait_for(lambda: chatty.exists() and chatty.stat().st_size >= 2_000_000, 60,
                     message="chatty log written")
            for _ in range(args.rounds):
                for phase, open_clients in PHASES.items():
                    settled(running)
                    clients = open_clients(running)
                    try:
                        assert running.get("/api/status")[0] == 200
                        samples[phase] += measure_respawns(running, starts)
                    finally:
                        for sock in clients:
                            sock.close()
        finally:
            running.cleanup()
    base = statistics.median(samples["none"])
    print(f"respawn latency, kill -9 -> successor's first line; {args.rounds} rounds x 8 "
          "kills per phase")
    print(f"{'phase':10} {'n':>4} {'median ms':>10} {'p90 ms':>8} {'max ms':>8} {'ratio':>6}")
    for phase, values in samples.items():
        ordered = sorted(values)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        median = statistics.median(values)
        print(f"{phase:10} {len(values):4} {median * 1000:10.1f} {p90 * 1000:8.1f} "
              f"{max(values) * 1000:8.1f} {median / base:6.2f}")
    before, after = fork_cost_with_threads()
    print(f"Popen(preexec_fn) in this process: {before:.2f} ms; with 110 threads blocked "
          f"in recv(): {after:.2f} ms ({after / before:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
