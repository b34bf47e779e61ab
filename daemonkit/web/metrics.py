"""CPU and memory per pid, sampled in the web server's threads.

psutil's ``cpu_percent(None)`` measures the CPU time used since the previous call on the same
``Process`` object, so the objects are kept between polls (one per live pid). A pid that was
reused by another process is detected by psutil's own create-time check (``is_running``).
The supervisor's loop never waits on any of this.
"""

from __future__ import annotations

import threading
from typing import Any

import psutil


class Sampler:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: dict[int, Any] = {}  # pid -> psutil.Process

    def sample(self, pids: list[int]) -> dict[int, dict[str, float | int | None]]:
        """``{pid: {"cpu_percent", "memory_rss"}}``; None for a pid that is gone."""
        figures: dict[int, dict[str, float | int | None]] = {}
        with self._lock:
            for pid in pids:
                figures[pid] = self._one(pid)
            for stale in set(self._processes) - set(pids):
                del self._processes[stale]
        return figures

    def _one(self, pid: int) -> dict[str, float | int | None]:
        gone: dict[str, float | int | None] = {"cpu_percent": None, "memory_rss": None}
        try:
            process = self._processes.get(pid)
            if process is None or not process.is_running():
                process = psutil.Process(pid)
                self._processes[pid] = process
            with process.oneshot():
                cpu = float(process.cpu_percent(None))
                rss = int(process.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._processes.pop(pid, None)
            return gone
        return {"cpu_percent": round(cpu, 1), "memory_rss": rss}
