"""Fixtures shared by the tests; the helpers behind them live in ``helpers.py``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import ROOT, SERVICES, FakeSystemd, Service, Sv, WorldRuntime, tagged_pids

if TYPE_CHECKING:
    from systemd_machine import Machine


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[Service]:
    service = Service(SERVICES / "probe.py", tmp_path, "probe")
    yield service
    service.cleanup()


@pytest.fixture
def sv(tmp_path: Path) -> Iterator[Sv]:
    """A supervisor config in tmp_path; every process it started is gone afterwards."""
    supervisor = Sv(tmp_path)
    yield supervisor
    supervisor.cleanup()
    assert supervisor.supervisor_pids() == []
    assert tagged_pids(supervisor.tag) == []


@pytest.fixture
def hello(tmp_path: Path) -> Iterator[Service]:
    service = Service(ROOT / "examples" / "hello.py", tmp_path, "hello", events_option=False)
    yield service
    service.cleanup()


@pytest.fixture(params=["path", "abstract"])
def fake_systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@daemonkit-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(address)
    yield fake
    fake.sock.close()


@pytest.fixture(scope="session")
def world_runtime() -> Iterator[WorldRuntime]:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="daemonkit-world-"))
    root.chmod(0o755)
    try:
        yield WorldRuntime(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temp dir every user may write (pytest's own tmp root is private to root), sticky as
    /tmp is: a pidfile there stays its owner's (daemonkit refuses a directory without it)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="daemonkit-test-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", params=["host", "debian"])
def systemd_machine(request: pytest.FixtureRequest) -> Iterator[Machine]:
    """A booted systemd with daemonkit in /opt/daemonkit (see systemd_machine.py): the host's
    own systemd, then Debian's next release (``debootstrap``ed fresh, ~1-2 min). One at a
    time; a test that needs one kind: ``@pytest.mark.parametrize("systemd_machine",
    ["debian"], indirect=True)``."""
    import systemd_machine as machines

    debian = request.param == "debian"
    missing = machines.missing_tools(debian=debian)
    if os.geteuid() != 0:
        pytest.skip("booting a systemd container needs root")
    if missing:
        pytest.skip("booting a systemd container needs " + ", ".join(missing))
    with machines.booted(request.param, machines.DEBIAN_SUITE if debian else None,
                         with_tests=debian) as machine:
        yield machine


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failed test: a green run must have run everything."""
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
