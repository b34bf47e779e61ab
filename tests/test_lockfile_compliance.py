"""PidFile against lockfile's own compliance suite (test/compliancetest.py of the lockfile
0.12.2 sdist, downloaded by the test run: its code is not ours to commit), plus what the
suite leaves out of ``PIDLockFile``'s contract."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import lockfile
import pytest

from daemonkit import PidFile, PidfileError

#: refused by design, and documented: breaking a live process's lock would let a second
#: instance start (test_break_lock_is_refused_while_the_holder_lives checks the refusal)
NOT_SUPPORTED = {"test_break_lock_unthreaded"}

pytestmark = pytest.mark.filterwarnings("ignore:setDaemon:DeprecationWarning")  # the suite's


@pytest.fixture(scope="module")
def compliancetest(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    directory = tmp_path_factory.mktemp("lockfile-sdist")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", ":all:", "lockfile==0.12.2", "-d", str(directory)],
                   check=True, capture_output=True)
    with tarfile.open(directory / "lockfile-0.12.2.tar.gz") as sdist:
        member = sdist.extractfile("lockfile-0.12.2/test/compliancetest.py")
        assert member is not None
        (directory / "compliancetest.py").write_bytes(member.read())
    spec = importlib.util.spec_from_file_location("compliancetest",
                                                  directory / "compliancetest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def suite_tests(module: ModuleType) -> Iterator[tuple[str, Callable[[], Any], Any]]:
    class PidFileCompliance(module.ComplianceTest):  # type: ignore[name-defined,misc]
        class_to_test = PidFile

    case = PidFileCompliance()
    for name in sorted(dir(case)):
        if name.startswith("test_"):
            yield name, getattr(case, name), case


def test_lockfile_compliance_suite(compliancetest: ModuleType) -> None:
    ran = []
    for name, test, case in suite_tests(compliancetest):
        if name in NOT_SUPPORTED:
            continue
        case.setup()
        try:
            test()
        finally:
            case.teardown()
        ran.append(name)
    # the suite's active tests (its threaded variants are commented out upstream)
    assert ran == ["test_acquire_basic_unthreaded", "test_acquire_timeout_threaded",
                   "test_acquire_timeout_unthreaded", "test_context_timeout_unthreaded",
                   "test_decorator", "test_enter", "test_i_am_locking_unthreaded",
                   "test_is_locked_unthreaded", "test_release_basic_unthreaded"]


def test_break_lock_is_refused_while_the_holder_lives(tmp_path: Path) -> None:
    holder = PidFile(tmp_path / "x.pid")
    holder.acquire()
    try:
        with pytest.raises(lockfile.AlreadyLocked):
            PidFile(tmp_path / "x.pid").break_lock()
        assert holder.i_am_locking() and PidFile(tmp_path / "x.pid").is_locked()
    finally:
        holder.release()


def test_signature_and_errors_of_pidlockfile(tmp_path: Path) -> None:
    """``PIDLockFile(path, threaded=False, timeout=None)``, positionally too; the errors
    lockfile's callers catch."""
    positional = PidFile(tmp_path / "a.pid", True, 0.5)
    assert (positional.threaded, positional.timeout) == (True, 0.5)
    with pytest.raises(lockfile.LockFailed):  # a missing directory
        PidFile(tmp_path / "missing" / "a.pid").acquire()
    assert issubclass(PidfileError, lockfile.LockError)

    held = PidFile(tmp_path / "b.pid")
    held.acquire()
    try:
        with pytest.raises(lockfile.NotMyLock):  # another holder's lock
            PidFile(tmp_path / "b.pid").release()
    finally:
        held.release()
    with pytest.raises(lockfile.NotLocked):  # leaving the block without the lock
        PidFile(tmp_path / "b.pid").__exit__(None, None, None)

    # another process holding it: is_locked() true, i_am_locking() false
    code = ("import sys; from daemonkit import PidFile; p = PidFile(sys.argv[1]); "
            "p.acquire(); print('locked', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "c.pid")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        other = PidFile(tmp_path / "c.pid")
        assert other.is_locked() and not other.i_am_locking()
        assert other.read_pid() == child.pid
        with pytest.raises(lockfile.NotMyLock):
            other.release()
        with pytest.raises(lockfile.LockTimeout):
            other.acquire(timeout=0.1)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
