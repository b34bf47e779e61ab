"""Privilege drop to `nobody` for real: ids in /proc, root-only files, leftovers, errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from helpers import WorldRuntime, pid_alive, proc_status, read_events, wait_for


def probe_cli(runtime: WorldRuntime, workdir: Path, action: str, *args: str,
              user: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [runtime.python, str(runtime.root / "services" / "probe.py"), action,
               "--pidfile", str(workdir / "run" / "probe.pid"),
               "--events", str(workdir / "events.log"), *args]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, env=runtime.env,
                          timeout=60, check=False)


def test_drop_to_nobody_after_privileged_setup(world_runtime: WorldRuntime,
                                               world_tmp: Path) -> None:
    run_dir = world_tmp / "run"
    run_dir.mkdir(mode=0o755)  # root-owned: the dropped daemon cannot unlink in it
    secret = world_tmp / "secret"
    secret.write_text("only-root-reads-this\n")
    secret.chmod(0o600)
    (world_tmp / "events.log").touch(mode=0o666)  # written before and after the drop
    (world_tmp / "events.log").chmod(0o666)
    started = probe_cli(world_runtime, world_tmp, "start", "--user", "nobody",
                        "--read-root-file", str(secret), "--log-file",
                        str(world_tmp / "probe.log"))
    assert started.returncode == 0, started.stderr
    pid = int((run_dir / "probe.pid").read_text())
    try:
        events = read_events(world_tmp / "events.log")
        assert events[:3] == ["setup_privileged uid=0", "secret=only-root-reads-this",
                              f"setup uid=65534 pid={pid}"]
        assert "regain_root=refused" in events
        status = proc_status(pid)
        assert status["Uid"].split() == ["65534"] * 4  # real, effective, saved, fs
        assert status["Gid"].split() == ["65534"] * 4
        assert status["Groups"].split() in ([], ["65534"]), "root's groups must be gone"
        assert (world_tmp / "probe.log").stat().st_uid == 65534
        # status, reload and stop still work, run by root, through the handed-over socket
        assert probe_cli(world_runtime, world_tmp, "status").returncode == 0
        assert probe_cli(world_runtime, world_tmp, "reload").returncode == 0
        stopped = probe_cli(world_runtime, world_tmp, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not pid_alive(pid)
        assert not (run_dir / "probe.pid").exists(), "stop (root) removes what nobody could not"
        assert not (run_dir / "probe.ctl").exists()
    finally:
        if pid_alive(pid):
            os.kill(pid, 9)
            wait_for(lambda: not pid_alive(pid))


def test_setup_failing_after_the_drop_leaves_no_files(world_runtime: WorldRuntime,
                                                     world_tmp: Path) -> None:
    """The daemon, as nobody, cannot unlink its pidfile and control socket from a root-owned
    directory; the failed start (root) removes them."""
    run_dir = world_tmp / "run"
    run_dir.mkdir(mode=0o755)
    (world_tmp / "events.log").touch(mode=0o666)
    (world_tmp / "events.log").chmod(0o666)
    failed = probe_cli(world_runtime, world_tmp, "start", "--user", "nobody",
                       "--setup-fail", "no database for you")
    assert failed.returncode == 1
    assert "no database for you" in failed.stderr
    assert any(e.startswith("setup uid=65534") for e in read_events(world_tmp / "events.log"))
    # only the exit record stays, to tell `status` later how the daemon ended
    assert sorted(os.listdir(run_dir)) == ["probe.exit"]
    assert "no database for you" in (run_dir / "probe.exit").read_text()


def test_unknown_user_is_one_line_and_nothing_starts(world_runtime: WorldRuntime,
                                                     world_tmp: Path) -> None:
    (world_tmp / "run").mkdir()
    result = probe_cli(world_runtime, world_tmp, "start", "--user", "no-such-user-xyz")
    assert result.returncode == 6
    assert result.stderr.strip() == "probe: unknown user 'no-such-user-xyz'"
    assert not (world_tmp / "events.log").exists()
    unknown_group = probe_cli(world_runtime, world_tmp, "start", "--user", "nobody",
                              "--group", "no-such-group-xyz")
    assert unknown_group.returncode == 6
    assert "unknown group 'no-such-group-xyz'" in unknown_group.stderr


def test_asking_for_a_user_without_root_is_exit_4(world_runtime: WorldRuntime,
                                                  world_tmp: Path) -> None:
    (world_tmp / "run").mkdir(mode=0o777)
    result = probe_cli(world_runtime, world_tmp, "start", "--user", "daemon", user="nobody")
    assert result.returncode == 4
    assert "needs root" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (world_tmp / "events.log").exists()
