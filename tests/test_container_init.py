"""As PID 1 of a PID namespace (a container), `run` reaps orphans and forwards SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess

import psutil
import pytest
from helpers import Service, wait_for


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_pid1_reaps_orphans_and_forwards_sigterm(probe: Service) -> None:
    # --kill-child: if the test kills unshare, the namespace (its init and service) goes too
    command = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
               *probe.argv("run", "--make-orphan")]
    outer = subprocess.Popen(command, cwd=probe.workdir)
    try:
        probe.wait_event("run")
        namespace_init = psutil.Process(outer.pid).children()[0]  # PID 1 inside
        assert namespace_init.cmdline()[0] == "probe: init"

        def orphan_reaped() -> bool:
            descendants = namespace_init.children(recursive=True)
            zombies = [p for p in descendants if p.status() == psutil.STATUS_ZOMBIE]
            sleepers = [p for p in descendants if p.name() == "sleep"]
            return not zombies and not sleepers

        wait_for(orphan_reaped, timeout=10, message="the orphan `sleep` exited and was reaped")
        namespace_init.send_signal(signal.SIGTERM)
        assert outer.wait(timeout=10) == 0, "SIGTERM forwarded, service exited 0"
        assert probe.events_seen()[-1] == "shutdown"
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait()
