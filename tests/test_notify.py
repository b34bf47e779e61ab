"""systemd notify protocol against a real datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Service, wait_for


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


@pytest.fixture(params=["path", "abstract"])
def fake_systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@daemonkit-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(address)
    yield fake
    fake.sock.close()


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
