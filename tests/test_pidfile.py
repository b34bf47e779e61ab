"""PidFile against the kernel: locks, inodes, symlinks, and the lockfile interface."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lockfile
import pytest

from daemonkit import PidFile, PidfileError


def hold_lock_in_child(path: Path) -> subprocess.Popen[str]:
    """Another process holding the pidfile, as a running daemon would."""
    code = textwrap.dedent(f"""
        import sys
        from daemonkit import PidFile
        pidfile = PidFile({str(path)!r})
        pidfile.acquire()
        print("locked", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "locked"
    return child


def test_acquire_writes_pid_mode_0644_and_cloexec(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        pidfile = PidFile(tmp_path / "a.pid")
        pidfile.acquire()
    finally:
        os.umask(old_umask)
    assert pidfile.read_pid() == os.getpid()
    assert pidfile.i_am_locking() and pidfile.is_locked()
    assert (tmp_path / "a.pid").stat().st_mode & 0o777 == 0o644
    assert pidfile.fileno is not None
    assert fcntl.fcntl(pidfile.fileno, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    pidfile.release()
    assert not (tmp_path / "a.pid").exists()
    assert not pidfile.is_locked()
    with pytest.raises(lockfile.NotLocked):
        pidfile.release()


def test_second_locker_is_refused_while_first_lives(tmp_path: Path) -> None:
    path = tmp_path / "b.pid"
    holder = hold_lock_in_child(path)
    try:
        other = PidFile(path)
        assert other.is_locked() and not other.i_am_locking()
        assert other.read_pid() == holder.pid
        with pytest.raises(lockfile.AlreadyLocked):
            other.acquire()
        with pytest.raises(lockfile.LockTimeout):
            other.acquire(timeout=0.2)
        with pytest.raises(lockfile.AlreadyLocked):
            other.break_lock()  # a live holder's lock cannot be broken
        assert path.exists()
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL: the file stays, the lock does not
    assert path.exists()
    survivor = PidFile(path)
    assert not survivor.is_locked()
    survivor.acquire()
    assert survivor.read_pid() == os.getpid()
    survivor.release()


def test_lock_is_not_truncated_before_it_is_held(tmp_path: Path) -> None:
    path = tmp_path / "c.pid"
    holder = hold_lock_in_child(path)
    try:
        with pytest.raises(lockfile.AlreadyLocked):
            PidFile(path).acquire()
        assert PidFile(path).read_pid() == holder.pid, "a failed acquire must not wipe the pid"
    finally:
        holder.kill()
        holder.wait()


def test_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("precious\n")
    (tmp_path / "d.pid").symlink_to(target)
    with pytest.raises(PidfileError, match="symbolic link"):
        PidFile(tmp_path / "d.pid").acquire()
    assert target.read_text() == "precious\n"


def test_unlinked_inode_is_not_trusted(tmp_path: Path) -> None:
    """A locker that opened the old file before it was unlinked must move to the new one."""
    path = tmp_path / "e.pid"
    first = PidFile(path)
    first.acquire()
    stale_fd = os.open(path, os.O_RDWR)  # someone opened it, and waits for the lock
    first.release()  # unlinks, then unlocks
    fcntl.flock(stale_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # they win the old inode...
    second = PidFile(path)
    second.acquire()  # ...which no longer matters: the path's inode is the truth
    assert second.read_pid() == os.getpid()
    assert os.fstat(stale_fd).st_nlink == 0
    os.close(stale_fd)
    second.release()


def test_break_lock_removes_a_dead_daemons_file(tmp_path: Path) -> None:
    path = tmp_path / "f.pid"
    path.write_text("12345\n")
    pidfile = PidFile(path)
    assert pidfile.read_pid() == 12345 and not pidfile.is_locked()
    pidfile.break_lock()
    assert not path.exists()
    pidfile.break_lock()  # nothing there: no error


def test_works_as_daemon_context_pidfile_and_context_manager(tmp_path: Path) -> None:
    with PidFile(tmp_path / "g.pid") as pidfile:
        assert pidfile.read_pid() == os.getpid()
    assert not (tmp_path / "g.pid").exists()


def test_garbage_content_reads_as_no_pid(tmp_path: Path) -> None:
    path = tmp_path / "h.pid"
    for content in ("", "\n", "abc\n", "-5\n", "0\n"):
        path.write_text(content)
        assert PidFile(path).read_pid() is None, content


def test_remove_if_unlocked_takes_the_companion_only_under_the_lock(tmp_path: Path) -> None:
    """The control socket goes while the lock is held, never past a live holder, and a
    pidfile created just for the lock never stays behind, even when the companion does."""
    path = tmp_path / "svc.pid"
    companion = tmp_path / "svc.ctl"
    companion.touch()
    holder = PidFile(str(path))
    holder.acquire()
    try:
        assert PidFile(str(path)).remove_if_unlocked([str(companion)]) is False
        assert companion.exists() and path.exists()
    finally:
        holder.release()
    assert not path.exists()
    assert PidFile(str(path)).remove_if_unlocked([str(companion)]) is True
    assert not companion.exists() and not path.exists()
    stuck = tmp_path / "stuck.ctl"  # unlink() refuses a directory
    stuck.mkdir()
    with pytest.raises(OSError):
        PidFile(str(path)).remove_if_unlocked([str(stuck)])
    assert stuck.exists() and not path.exists()


def test_in_a_daemon_context_forked_workers_neither_remove_nor_keep_the_lock(
        tmp_path: Path) -> None:
    """python-daemon's SIGTERM handler makes a worker forked inside the context leave it,
    which releases the pidfile: that unlinked the live daemon's file, and a second instance
    could start. And the worker's copy of the descriptor kept the lock after the daemon died."""
    import signal

    from helpers import pid_alive, wait_for

    from daemonkit.pidfile import HolderState

    path, workers_file = tmp_path / "svc.pid", tmp_path / "workers"
    code = textwrap.dedent("""
        import os, sys, time
        import daemon
        from daemonkit import PidFile
        with daemon.DaemonContext(pidfile=PidFile(sys.argv[1], timeout=0),
                                  detach_process=sys.argv[3] == "detach"):
            workers = []
            for _ in range(2):
                worker = os.fork()
                if worker == 0:
                    time.sleep(60)
                    os._exit(0)
                workers.append(worker)
            with open(sys.argv[2] + ".tmp", "w") as out:
                out.write(" ".join(map(str, workers)))
            os.rename(sys.argv[2] + ".tmp", sys.argv[2])
            time.sleep(60)
    """)
    def started_pids() -> list[int]:
        """The detached daemon's and its workers' pids, as far as they got written."""
        found = []
        for file in (path, workers_file):
            try:
                found += [int(pid) for pid in file.read_text().split()]
            except (OSError, ValueError):
                pass
        return found

    try:
        subprocess.run([sys.executable, "-c", code, str(path), str(workers_file), "detach"],
                       check=True, timeout=30)
        workers = [int(pid) for pid in wait_for(lambda: workers_file.exists()
                                                and workers_file.read_text().split(), 10)]
        daemon_pid = int(path.read_text())
        os.kill(workers[0], signal.SIGTERM)  # SystemExit in the worker: it leaves the context
        wait_for(lambda: not pid_alive(workers[0]), 10, message="worker 0 ends")
        assert path.exists() and int(path.read_text()) == daemon_pid
        assert PidFile(path).observe().state is HolderState.VERIFIED
        # a second instance, in the foreground (its failure is its exit status: the context
        # sends stderr to /dev/null) is refused
        second = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "w2"),
                                 "foreground"], timeout=30, check=False)
        assert second.returncode == 1 and int(path.read_text()) == daemon_pid
        os.kill(daemon_pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(daemon_pid), 10, message="daemon gone")
        assert pid_alive(workers[1])  # an orphaned worker...
        assert PidFile(path).observe().state is HolderState.NOBODY  # ...holds no lock
    finally:
        for pid in started_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
