"""depends_on at scale: N programs, with every program but p0 depending on p0, or none.

Figures: time from ``start`` until every program is RUNNING, the median respawn after
kill -9 (half the kills hit p0, the dependency of all the others: its return to RUNNING
must not cost a walk over its 1,999 dependents), ``status --json`` end to end (median of 7), and the
shutdown (with depends_on every dependent stops before p0 is signalled). Respawn is read
from the supervisor's own log: the wall-clock stamp of the victim's ``-> RUNNING`` line
minus the moment of the kill (millisecond resolution).

    python bench/depends_bench.py [--programs 2000] [--depends] [--source CHECKOUT]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def config(run: Path, programs: int, depends: bool) -> str:
    text = f"[supervisord]\npidfile = {run}/sv.pid\nlogfile = {run}/sv.log\n\n"
    for n in range(programs):
        text += (f"[program:p{n}]\ncommand = sleep 100000\nstartsecs = 0\n"
                 "stopwaitsecs = 5\nautorestart = true\nstdout_logfile = NONE\n"
                 "stderr_logfile = NONE\n")
        if depends and n:
            text += "depends_on = p0\n"
    return text


def running_line(log: Path, offset: int, name: str) -> str | None:
    with open(log) as handle:
        handle.seek(offset)
        for line in handle.read().splitlines():
            if f" {name}: " in line and line.endswith("-> RUNNING"):
                return line
    return None


def measure(programs: int, depends: bool, source: Path, kills: int) -> dict[str, Any]:
    run = Path(tempfile.mkdtemp(prefix="dk-depends-"))
    ini = run / "sv.ini"
    ini.write_text(config(run, programs, depends))
    log = run / "sv.log"
    env = {**os.environ, "PYTHONPATH": str(source)}
    cli = [sys.executable, "-m", "daemonkit", "supervise", "-c", str(ini)]

    def status() -> dict[str, dict[str, Any]]:
        out = subprocess.run([*cli, "status", "--json"], env=env, capture_output=True,
                             text=True, check=True).stdout
        return {p["name"]: p for p in json.loads(out)["programs"]}

    began = time.monotonic()
    subprocess.run([*cli, "start", "--start-timeout", "300"], env=env, check=True,
                   capture_output=True)
    try:
        for _ in range(6000):
            if log.read_text().count("STARTING -> RUNNING") >= programs:
                break
            time.sleep(0.05)
        all_running = time.monotonic() - began
        respawns = []
        for kill in range(kills):
            name = "p0" if kill % 2 == 0 else f"p{(kill * 97 + 1) % programs}"
            pid = status()[name]["pid"]
            offset = log.stat().st_size
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            line = None
            for _ in range(1000):
                line = running_line(log, offset, name)
                if line:
                    break
                time.sleep(0.01)
            assert line, f"{name} did not come back"
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            respawns.append((stamp - killed_at) * 1000)
            time.sleep(1.2)  # past QUICK_EXIT_S: a kill is not counted as a crash loop
        rounds = []
        for _ in range(7):
            asked = time.monotonic()
            status()
            rounds.append((time.monotonic() - asked) * 1000)
        status_ms = statistics.median(rounds)
    finally:
        stopping = time.monotonic()
        subprocess.run([*cli, "stop"], env=env, check=False, capture_output=True, timeout=600)
        shutdown_s = time.monotonic() - stopping
        shutil.rmtree(run, ignore_errors=True)
    return {"programs": programs, "depends_on": depends, "source": str(source),
            "all_running_s": round(all_running, 2),
            "respawn_median_ms": round(statistics.median(respawns), 1),
            "status_ms": round(status_ms), "shutdown_s": round(shutdown_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=2000)
    parser.add_argument("--depends", action="store_true", help="p1.. depend on p0")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to measure")
    parser.add_argument("--kills", type=int, default=10)
    options = parser.parse_args()
    print(json.dumps(measure(options.programs, options.depends, options.source,
                             options.kills)))


if __name__ == "__main__":
    main()
