#!/usr/bin/env python3
"""Does a restart refuse connections? The echo example restarted under client load.

Four client threads loop connect / send a line / read it back against examples/echo.py while
it is restarted N times with the handover (`restart`) and N times the plain way (`stop`,
then `start`), in the same run. Prints, for each way: restarts, requests answered, failed
requests (refused, reset, or answered wrongly), and the worst and p99 request latency.
Target (issue 13): 0 failed with the handover.

    python bench/restart.py [--restarts 20] [--clients 4]
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
from pathlib import Path

ECHO = Path(__file__).resolve().parent.parent / "examples" / "echo.py"


class Client(threading.Thread):
    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.done = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        number = 0
        while not self.done.is_set() and number < 10_000_000:
            number += 1
            began = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    sock.sendall(f"{number}\n".encode())
                    answer = sock.makefile().readline()
                if answer != f"{number}\n":
                    self.failures.append(f"wrong answer {answer!r}")
            except OSError as exc:
                self.failures.append(type(exc).__name__)
            self.latencies.append(time.perf_counter() - began)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(way: str, restarts: int, clients: int, workdir: str) -> dict[str, float]:
    port = free_port()
    base = [sys.executable, str(ECHO), "--pidfile", f"{workdir}/{way}.pid", "--listen",
            f"tcp://127.0.0.1:{port}"]
    subprocess.run([*base, "start"], check=True, stdout=subprocess.DEVNULL)
    threads = [Client(port) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(restarts):
            time.sleep(0.2)  # load between restarts too: the bench's pacing, not a wait
            if way == "handover":
                subprocess.run([*base, "restart"], check=True, stdout=subprocess.DEVNULL)
            else:
                subprocess.run([*base, "stop"], check=True, stdout=subprocess.DEVNULL)
                subprocess.run([*base, "start"], check=True, stdout=subprocess.DEVNULL)
        time.sleep(0.2)
    finally:
        for thread in threads:
            thread.done.set()
        for thread in threads:
            thread.join(30)
        subprocess.run([*base, "stop"], check=False, stdout=subprocess.DEVNULL)
    latencies = sorted(x for thread in threads for x in thread.latencies)
    kinds: dict[str, int] = {}
    for failure in (f for thread in threads for f in thread.failures):
        kinds[failure] = kinds.get(failure, 0) + 1
    print(f"{way}: failures by kind {kinds}", file=sys.stderr)
    return {"answered": sum(len(t.latencies) - len(t.failures) for t in threads),
            "failed": sum(len(t.failures) for t in threads),
            "worst_ms": latencies[-1] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "median_ms": statistics.median(latencies) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        results = {way: measure(way, args.restarts, args.clients, workdir)
                   for way in ("handover", "stop+start")}
    print(f"{args.restarts} restarts each, {args.clients} clients looping connect/send/receive")
    print(f"{'way':12s} {'answered':>9s} {'failed':>7s} {'median ms':>10s} {'p99 ms':>8s} "
          f"{'worst ms':>9s}")
    for way, figures in results.items():
        print(f"{way:12s} {figures['answered']:9.0f} {figures['failed']:7.0f} "
              f"{figures['median_ms']:10.2f} {figures['p99_ms']:8.2f} {figures['worst_ms']:9.1f}")
    print(f"target: 0 failed with the handover -> {results['handover']['failed']:.0f} failed")


if __name__ == "__main__":
    main()
