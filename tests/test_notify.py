"""systemd notify protocol against a real datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from helpers import FakeSystemd, Service


def test_ready_reload_watchdog_stopping(probe: Service, fake_systemd: FakeSystemd) -> None:
    env = {**os.environ, "NOTIFY_SOCKET": fake_systemd.address, "WATCHDOG_USEC": "200000"}
    service = subprocess.Popen(probe.argv("run", "--spawn-child"), env=env, cwd=probe.workdir)
    try:
        ready = fake_systemd.wait_for_field("READY", "1")
        assert ready.get("STATUS") == "probe running"
        probe.wait_event("run")
        assert "child_has_notify_socket=False" in probe.events_seen(), (
            "children must not be able to notify in the service's name")
        fake_systemd.wait_for_field("WATCHDOG", "1")
        before_reload = len(fake_systemd.collect())
        started_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        assert probe.cli("reload").returncode == 0
        reloading = fake_systemd.wait_for_field("RELOADING", "1", after=before_reload)
        assert int(reloading["MONOTONIC_USEC"]) >= started_ns // 1000
        messages = fake_systemd.collect()
        reload_at = messages.index(reloading)
        assert {"READY": "1"} in messages[reload_at + 1:], "READY=1 again after reload()"
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
        fake_systemd.wait_for_field("STOPPING", "1")
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
