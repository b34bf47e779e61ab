#!/usr/bin/env python3
"""How much does daemonkit's honest start cost, and how fast does stop return?

Prints medians over N runs of, in the same run on the same machine:
  python -c pass                    (interpreter floor)
  python -c "import daemonkit"      (import floor: the baseline of the target)
  hello.py start                    (until setup() finished in the detached daemon)
  hello.py stop                     (until the process is gone and the pidfile removed)
  async_hello.py start / stop       (the same service on asyncio)
Targets (issues 2, 12): start <= 1.5x the import floor; stop of an idle daemon < 100 ms;
the async service measured beside the sync one.

    python bench/startstop.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from daemonkit import PidFile
from daemonkit.process import terminate

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HELLO = EXAMPLES / "hello.py"
ASYNC_HELLO = EXAMPLES / "async_hello.py"


def timed(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    python = sys.executable
    samples: dict[str, list[float]] = {"pass": [], "import": [], "start": [], "stop": [],
                                       "async_start": [], "async_stop": [],
                                       "signal_to_gone": []}
    with tempfile.TemporaryDirectory() as workdir:
        pidfile = str(Path(workdir) / "hello.pid")
        hello = [python, str(HELLO), "--pidfile", pidfile, "--interval", "60"]
        async_hello = [python, str(ASYNC_HELLO), "--pidfile", str(Path(workdir) / "ahello.pid"),
                       "--interval", "60"]
        for _ in range(runs):  # interleaved, so drift of the machine hits all alike
            samples["pass"].append(timed([python, "-c", "pass"]))
            samples["import"].append(timed([python, "-c", "import daemonkit"]))
            samples["start"].append(timed([*hello, "start"]))
            samples["stop"].append(timed([*hello, "stop"]))
            samples["async_start"].append(timed([*async_hello, "start"]))
            samples["async_stop"].append(timed([*async_hello, "stop"]))
            subprocess.run([*hello, "start"], check=True, stdout=subprocess.DEVNULL)
            pid = PidFile(pidfile).read_pid()
            assert pid is not None
            began = time.perf_counter()
            assert terminate(pid, 10.0) == "stopped"  # the part of stop that is not startup
            samples["signal_to_gone"].append(time.perf_counter() - began)
    median = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    print(f"runs: {runs} (medians, ms)")
    for name, label in (("pass", "python -c pass"), ("import", "python -c 'import daemonkit'"),
                        ("start", "hello.py start (until ready)"),
                        ("stop", "hello.py stop (until gone)"),
                        ("async_start", "async_hello.py start"),
                        ("async_stop", "async_hello.py stop"),
                        ("signal_to_gone", "SIGTERM -> process gone")):
        print(f"  {label:32s} {median[name]:8.1f}")
    print(f"start / import floor: {median['start'] / median['import']:.2f}x (target <= 1.5x)")
    print(f"async start / import floor: {median['async_start'] / median['import']:.2f}x; "
          f"async start / sync start: {median['async_start'] / median['start']:.2f}x")
    print(f"stop: {median['stop']:.1f} ms whole command, {median['signal_to_gone']:.1f} ms of it "
          "from SIGTERM to gone (target < 100 ms)")


if __name__ == "__main__":
    main()
