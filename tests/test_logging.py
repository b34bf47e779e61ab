"""Log file: format, stdio capture, and rotation by rename + reopen with nothing lost."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from helpers import Service, wait_for


def greeting_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"hello \(#(\d+)\)", text)]


def test_log_lines_have_time_level_and_pid(hello: Service) -> None:
    assert hello.cli("start", "--interval", "0.05").returncode == 0
    pid = hello.pid()
    wait_for(lambda: "hello (#1)" in hello.log_text(), message="two greetings")
    first = hello.log_text().splitlines()[0]
    assert re.match(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO hello\[{pid}\]: hello ready", first
    ), first


def test_rotation_by_rename_and_reopen_loses_nothing(hello: Service, tmp_path: Path) -> None:
    assert hello.cli("start", "--interval", "0.01").returncode == 0
    pid = hello.pid()
    assert pid is not None
    wait_for(lambda: len(greeting_numbers(hello.log_text())) >= 20, message="some greetings")
    rotated = tmp_path / "hello.log.1"
    os.rename(hello.log_file, rotated)  # what logrotate does without copytruncate
    reopened = hello.cli("reopen-logs")
    assert reopened.returncode == 0
    assert reopened.stdout.strip() == f"hello reopened its log files (pid {pid})"
    wait_for(lambda: len(greeting_numbers(hello.log_text())) >= 20, message="new file used")
    os.rename(hello.log_file, tmp_path / "hello.log.2")
    os.kill(pid, signal.SIGUSR1)  # the signal by hand does the same
    wait_for(lambda: len(greeting_numbers(hello.log_text())) >= 5, message="third file used")
    assert hello.cli("stop").returncode == 0
    numbers = (greeting_numbers(rotated.read_text())
               + greeting_numbers((tmp_path / "hello.log.2").read_text())
               + greeting_numbers(hello.log_text()))
    assert numbers == list(range(len(numbers))), "every greeting in exactly one file, in order"
    assert "reopened log file" in (tmp_path / "hello.log.2").read_text()
    assert not [line for line in rotated.read_text().splitlines()
                if "exiting" in line], "after reopen nothing goes to the old file"


def test_reopen_logs_not_running_is_7(hello: Service) -> None:
    result = hello.cli("reopen-logs")
    assert result.returncode == 7


def test_syslog_option_sends_records_to_the_socket(hello: Service, tmp_path: Path) -> None:
    import socket

    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(tmp_path / "log.sock"))
    syslog.settimeout(10)
    try:
        assert hello.cli("--syslog", "start", "--syslog-socket",
                         str(tmp_path / "log.sock")).returncode == 0
        pid = hello.pid()
        record = syslog.recv(4096).decode()
        assert record.startswith("<14>")  # facility user, priority info
        assert f"hello[{pid}]: hello ready (pid {pid})" in record
    finally:
        syslog.close()


def test_a_log_target_prepared_before_a_rotation_opens_the_new_file(tmp_path: Path) -> None:
    """restart opens the log before stopping the old daemon; logrotate may rename it meanwhile."""
    from daemonkit.logsetup import LogTarget

    path = tmp_path / "svc.log"
    target = LogTarget(str(path))
    first = target.open_file()
    assert first is not None
    rotated_inode = os.fstat(first).st_ino
    target.reopen_if_replaced()
    assert target.fd == first  # unchanged file: the same descriptor
    path.rename(tmp_path / "svc.log.1")
    target.reopen_if_replaced()
    assert target.fd is not None
    assert os.fstat(target.fd).st_ino == path.stat().st_ino != rotated_inode
    os.close(target.fd)



def test_a_stop_is_logged_once(hello: Service) -> None:
    assert hello.cli("start").returncode == 0
    pid = hello.pid()
    assert hello.cli("stop").returncode == 0
    lines = [line for line in hello.log_text().splitlines() if f"[{pid}]" in line]
    assert [line.split(": ", 1)[1] for line in lines[-2:]] == [
        "received SIGTERM, stopping", "hello exiting with status 0"]


def test_the_directory_judged_is_the_one_the_log_was_opened_in(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory of nobody's in /tmp holds a planted log file; right after the open, nobody
    swaps the directory for a symlink to /etc. Judged by its path looked up again, the
    directory was root's and the planted file was accepted."""
    import subprocess

    from daemonkit import logsetup

    app = world_tmp / "app"
    subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c",
                    f"mkdir -m 755 {app} && touch {app}/app.log"], check=True)
    real_open = logsetup._open_log

    def open_then_swap(*args: object, **kwargs: object) -> int:
        fd = real_open(*args, **kwargs)  # type: ignore[arg-type]
        app.rename(world_tmp / "elsewhere")
        app.symlink_to("/etc")
        return fd

    monkeypatch.setattr(logsetup, "_open_log", open_then_swap)
    target = logsetup.LogTarget(str(app / "app.log"))
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        target.open_file()
    assert target.fd is None
