"""``depends_on`` with real processes: start order, readiness, holding, stop order, reload.

Children are one small script (:data:`CHILD`) that appends what happens to it to a shared
file with a wall-clock timestamp: ``start`` when it runs, ``ready`` just before it sends
READY=1 (``notify = true``) after the delay it was given, ``term`` when SIGTERM arrives,
``exit`` just before it leaves (a short while after ``term``, so a dependency signalled too early
shows up as a ``term`` before its dependent's ``exit``). Order is judged from those lines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Sv, pid_alive, tagged_pids, wait_for
from test_supervisorctl import Ctl

CHILD = """\
import os, signal, socket, sys, time

name, delay = sys.argv[1], sys.argv[2]
out = os.environ["EVENTS"]

def note(what):
    with open(out, "a") as events:
        events.write(f"{name} {what} {time.time():.6f}\\n")

def on_term(signum, frame):
    note("term")
    time.sleep(0.2)
    note("exit")
    os._exit(0)

def slow_term(signum, frame):
    note("term")
    time.sleep(float(sys.argv[3].split(":")[1]))
    note("exit")
    os._exit(0)

stubborn = sys.argv[3:] == ["stubborn"]  # notes SIGTERM and stays: only SIGKILL ends it
slow = sys.argv[3:4] and sys.argv[3].startswith("slow:")  # slow:SECONDS to exit on SIGTERM
signal.signal(signal.SIGTERM, (lambda signum, frame: note("term")) if stubborn
              else slow_term if slow else on_term)
note("start")
if delay == "gate":  # ready only once the test says so: it looks at the held state first
    for _ in range(3000):
        if os.path.exists(f"{out}.go-{name}"):
            break
        time.sleep(0.01)
else:
    time.sleep(float(delay))
address = os.environ.get("NOTIFY_SOCKET")
if address:
    note("ready")  # before READY=1: whatever it releases starts after this line
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.connect("\\0" + address[1:] if address.startswith("@") else address)
    sock.send(b"READY=1")
for _ in range(100000):
    time.sleep(1)
"""


class Events:
    """The children's shared event file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[tuple[str, str, float]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            name, what, when = line.split()
            found.append((name, what, float(when)))
        return found

    def when(self, name: str, what: str) -> float:
        """The last time ``name`` noted ``what`` (a child RUNNING at once may not have
        written its line yet: polled); fails the test if it never does."""
        wait_for(lambda: self.has(name, what), 10, message=f"{name} {what} in {self.lines()}")
        return [t for n, w, t in self.lines() if (n, w) == (name, what)][-1]

    def has(self, name: str, what: str) -> bool:
        return any((n, w) == (name, what) for n, w, _t in self.lines())

    def wait(self, name: str, what: str, timeout: float = 15.0) -> float:
        wait_for(lambda: self.has(name, what), timeout, message=f"{name} {what}")
        return self.when(name, what)


def header(sv: Sv) -> str:
    (sv.dir / "child.py").write_text(CHILD)
    return f'environment = EVENTS="{sv.dir}/events"\n'


def release(sv: Sv, name: str) -> None:
    """Let a ``"gate"`` child say READY."""
    (sv.dir / f"events.go-{name}").touch()


def child(sv: Sv, name: str, delay: float | str = 0.0, stubborn: bool = False,
          exit_after: float | None = None) -> str:
    """A child that says READY (with ``notify = true``) after ``delay`` seconds, or with
    ``delay="gate"`` once the test calls :func:`release`; a ``stubborn`` one ignores
    SIGTERM (after noting it); with ``exit_after`` it exits that long after SIGTERM."""
    mode = " stubborn" if stubborn else f" slow:{exit_after}" if exit_after else ""
    return f"command = %(ENV_DAEMONKIT_PYTHON)s {sv.dir}/child.py {name} {delay}{mode}"



@pytest.fixture
def events(sv: Sv) -> Events:
    return Events(sv.dir / "events")


def chain(sv: Sv) -> str:
    """a <- b <- c, priorities the other way round (priority alone would start c first);
    a says READY when released, b 0.3 s after it starts."""
    return f"""
        [program:c]
        {child(sv, "c")}
        depends_on = b
        priority = 1
        startsecs = 0

        [program:b]
        {child(sv, "b", 0.3)}
        depends_on = a
        notify = true
        priority = 2

        [program:a]
        {child(sv, "a", "gate")}
        notify = true
        priority = 3

        [program:other]
        command = sleep 1000
        priority = 5
        startsecs = 0
        """


def test_chain_starts_after_readiness_and_stops_in_reverse(sv: Sv, events: Events) -> None:
    sv.write(chain(sv), header(sv))
    sv.cli("start", check=True)
    events.wait("a", "start")
    held = sv.status()
    assert held["a"]["state"] == "STARTING"  # a is spawned but has not said READY yet
    assert (held["b"]["state"], held["b"]["waiting"]) == ("STOPPED", "waiting for a (STARTING)")
    assert held["c"]["waiting"] == "waiting for b (STOPPED)"
    assert sv.wait_state("other", "RUNNING")["waiting"] is None  # no depends_on: not held
    table = sv.cli("status").stdout
    assert "b: waiting for a (STARTING)" in table
    release(sv, "a")
    sv.wait_state("c", "RUNNING", timeout=15)
    assert events.when("b", "start") >= events.when("a", "ready")
    assert events.when("c", "start") >= events.when("b", "ready")
    status = sv.status()
    assert list(status) == ["a", "b", "c", "other"]  # dependencies first, then priority
    assert all(p["waiting"] is None for p in status.values())
    pids = [status[n]["pid"] for n in ("a", "b", "c")]

    stopped = sv.cli("stop", "all", check=True)
    assert stopped.stdout.split() == ["a:", "STOPPED", "b:", "STOPPED", "c:", "STOPPED",
                                      "other:", "STOPPED"]
    # each dependency got SIGTERM only after its dependent had exited
    assert events.when("b", "term") >= events.when("c", "exit")
    assert events.when("a", "term") >= events.when("b", "exit")
    assert not any(pid_alive(pid) for pid in pids)


def test_shutdown_stops_dependents_first(sv: Sv, events: Events) -> None:
    sv.write(f"""
        [program:db]
        {child(sv, "db")}
        startsecs = 0
        priority = 900

        [program:web]
        {child(sv, "web")}
        depends_on = db
        startsecs = 0
        priority = 1
        """, header(sv))
    sv.cli("start", check=True)
    sv.wait_state("web", "RUNNING")
    supervisor = sv.supervisor_pid()
    sv.cli("stop", check=True)
    wait_for(lambda: not pid_alive(supervisor), 15, message="supervisor gone")
    # priority alone (web 1, db 900) would stop db first; the dependency waits for web
    assert events.when("db", "term") >= events.when("web", "exit")
    log = (sv.dir / "sv.log").read_text()
    assert log.index("db: STARTING -> RUNNING") < log.index("web: STOPPED -> STARTING")


def test_shutdown_goes_by_priority_and_usr2_and_quit_mean_what_they_do_to_supervisord(
        sv: Sv, events: Events) -> None:
    """Every program used to get its stop signal at once at shutdown, a database at
    priority 1 as early as the application at 100 that uses it; and SIGUSR2 (supervisord's
    log reopen, in many logrotate configs) or SIGQUIT killed the supervisor outright. A
    ``[group:]``'s priority is its members' at shutdown, as in supervisord, whatever their
    own (web would otherwise stop after cache, at 5)."""
    sv.write(f"""
        [group:front]
        programs = web
        priority = 200

        [program:web]
        {child(sv, "web")}
        startsecs = 0
        priority = 5

        [program:db]
        {child(sv, "db")}
        startsecs = 0
        priority = 1

        [program:cache]
        {child(sv, "cache")}
        startsecs = 0
        priority = 50

        [program:app]
        {child(sv, "app")}
        startsecs = 0
        priority = 100
        """, header(sv))
    sv.cli("start", check=True)
    for name in ("db", "cache", "app", "web"):
        sv.wait_state(name, "RUNNING")
    supervisor = sv.supervisor_pid()
    assert supervisor is not None
    log = sv.dir / "sv.log"
    log.rename(sv.dir / "sv.log.1")
    os.kill(supervisor, signal.SIGUSR2)
    wait_for(log.exists, 10, message="the log reopened on SIGUSR2")
    assert pid_alive(supervisor) and sv.wait_state("app", "RUNNING")
    os.kill(supervisor, signal.SIGQUIT)
    wait_for(lambda: not pid_alive(supervisor), 15, message="supervisor gone")
    assert events.when("app", "term") >= events.when("web", "exit")
    assert events.when("cache", "term") >= events.when("app", "exit")
    assert events.when("db", "term") >= events.when("cache", "exit")
    assert "received SIGQUIT" in log.read_text()


def test_shutdown_where_depends_on_and_priority_disagree_across_levels(
        sv: Sv, events: Events) -> None:
    """app (100) depends_on cache (200), with db (150) between them. The shutdown used to
    wait level by level on both: app for db, db for cache, cache for app, a circle; nothing
    was signalled until the grace (81 s here) ran out, then everything got SIGKILL.
    Now app stops first (depends_on wins), then cache, then db, each on SIGTERM."""
    sv.write(f"""
        [program:db]
        {child(sv, "db")}
        startsecs = 0
        priority = 150
        stopwaitsecs = 20

        [program:cache]
        {child(sv, "cache")}
        startsecs = 0
        priority = 200
        stopwaitsecs = 20

        [program:app]
        {child(sv, "app")}
        startsecs = 0
        priority = 100
        depends_on = cache
        stopwaitsecs = 20
        """, header(sv))
    sv.cli("start", check=True)
    for name in ("db", "cache", "app"):
        sv.wait_state(name, "RUNNING")
    supervisor = sv.supervisor_pid()
    assert supervisor is not None
    sv.cli("stop", check=True)
    wait_for(lambda: not pid_alive(supervisor), 15, message="supervisor gone, not deadlocked")
    # each stopped on its SIGTERM (a SIGKILL leaves no "exit" line), in the waves' order
    assert events.when("cache", "term") >= events.when("app", "exit")
    assert events.when("db", "term") >= events.when("cache", "exit")


def test_a_listener_that_depends_on_a_program_stops_before_it(sv: Sv, events: Events) -> None:
    """Listeners stop last at shutdown, to hear every STOPPED; but one that depends_on a
    program (a relay to it, say) used to outlive it too, working on without it."""
    sv.write(f"""
        [program:db]
        {child(sv, "db")}
        startsecs = 0

        [eventlistener:relay]
        {child(sv, "relay")}
        events = PROCESS_STATE
        depends_on = db
        startsecs = 0

        [eventlistener:plain]
        {child(sv, "plain")}
        events = PROCESS_STATE
        startsecs = 0
        """, header(sv))
    sv.cli("start", check=True)
    sv.wait_state("relay", "RUNNING")
    sv.wait_state("plain", "RUNNING")
    supervisor = sv.supervisor_pid()
    sv.cli("stop", check=True)
    wait_for(lambda: not pid_alive(supervisor), 15, message="supervisor gone")
    assert events.when("db", "term") >= events.when("relay", "exit")
    # a listener nothing ties to a program still stops last
    assert events.when("plain", "term") >= events.when("db", "exit")


def test_priority_order_without_depends_on(sv: Sv, events: Events) -> None:
    """supervisord starts by priority, not in the order the file lists programs."""
    sv.write(f"""
        [program:late]
        {child(sv, "late")}
        priority = 900
        startsecs = 0

        [program:early]
        {child(sv, "early")}
        priority = 1
        startsecs = 0
        """, header(sv))
    sv.cli("start", check=True)
    sv.wait_state("late", "RUNNING")
    sv.wait_state("early", "RUNNING")
    log = (sv.dir / "sv.log").read_text()
    assert log.index("early: STOPPED -> STARTING") < log.index("late: STOPPED -> STARTING")
    assert list(sv.status()) == ["early", "late"]


@pytest.mark.parametrize(("programs", "blamed", "why"), [
    ("""
        [program:a]
        command = sleep 1
        depends_on = c
        [program:b]
        command = sleep 1
        depends_on = a
        [program:c]
        command = sleep 1
        depends_on = b
        """, "[program:a] depends_on", "dependency cycle: a -> c -> b -> a"),
    ("""
        [program:a]
        command = sleep 1
        [program:b]
        command = sleep 1
        [group:pair]
        programs = a, b
        depends_on = b
        """, "[group:pair] depends_on", "dependency cycle: b -> b"),
    ("""
        [program:web]
        command = sleep 1
        depends_on = db, cache
        [program:db]
        command = sleep 1
        """, "[program:web] depends_on", "no program or group named 'cache'"),
])
def test_bad_depends_on_refused_at_load(sv: Sv, programs: str, blamed: str, why: str) -> None:
    sv.write(programs)
    checked = sv.cli("check")
    assert checked.returncode == 6
    assert checked.stderr.strip().splitlines() == [
        f"daemonkit-supervisor: {sv.ini}: {blamed}: {why}"]
    as_json = sv.cli("check", "--json")
    assert as_json.returncode == 6
    assert json.loads(as_json.stdout) == {"ok": False, "error": f"{sv.ini}: {blamed}: {why}",
                                          "warnings": [], "instances": []}
    started = sv.cli("start")
    assert started.returncode == 6 and why in started.stderr
    assert sv.supervisor_pids() == []


def test_reload_with_a_cycle_keeps_the_running_config(sv: Sv) -> None:
    good = """
        [program:a]
        command = sleep 1000
        startsecs = 0
        [program:b]
        command = sleep 1000
        startsecs = 0
        depends_on = a
        """
    sv.write(good)
    sv.cli("start", check=True)
    pid = sv.wait_state("b", "RUNNING")["pid"]
    sv.write(good.replace("startsecs = 0\n        [program:b]",
                          "startsecs = 0\n        depends_on = b\n        [program:b]"))
    refused = sv.cli("reload")
    assert refused.returncode == 1  # the running supervisor refused it, as any bad file
    assert "dependency cycle: a -> b -> a" in refused.stderr
    assert sv.status()["b"]["pid"] == pid  # still running, still the old config


def fatal_db(sv: Sv, web_extra: str = "") -> str:
    """db fails until the file ``ok`` exists (then it runs); web depends on it."""
    return f"""
        [program:db]
        command = sh -c 'test -f {sv.dir}/ok || exit 1; exec sleep 1000'
        startsecs = 0.3
        startretries = 0
        backoff_initial = 0.05
        backoff_max = 0.05

        [program:web]
        {child(sv, "web")}
        depends_on = db
        startsecs = 0
        {web_extra}
        """


def test_fatal_dependency_holds_dependents_until_it_runs(sv: Sv, events: Events) -> None:
    sv.write(fatal_db(sv), header(sv))
    sv.cli("start", check=True)
    sv.wait_state("db", "FATAL")
    web = sv.status()["web"]
    assert (web["state"], web["pid"], web["want"]) == ("STOPPED", None, "UP")
    assert web["waiting"] == "waiting for db (FATAL)"
    assert "web: waiting for db (FATAL)" in sv.cli("status").stdout
    assert not events.has("web", "start")

    # start web: its dependency is started first (systemd's Requires + After); it fails
    # again, and the answer says why web did not start, without waiting out a timeout
    began = time.monotonic()
    refused = sv.cli("start", "web")
    assert refused.returncode != 0
    assert "web STOPPED (FAILED: waiting for db (FATAL))" in refused.stderr
    assert time.monotonic() - began < 10
    assert sv.status()["db"]["restarts"] >= 1  # db was tried again
    assert not events.has("web", "start")

    # the dependency comes up later: the held dependent (autostart) starts by itself
    (sv.dir / "ok").write_text("")
    sv.cli("start", "db", check=True)
    sv.wait_state("web", "RUNNING")
    events.wait("web", "start")  # it ran, held no more
    assert sv.status()["web"]["waiting"] is None


def test_stopped_dependency_holds_and_start_pulls_it_up(sv: Sv, events: Events) -> None:
    sv.write(f"""
        [program:db]
        {child(sv, "db", 0.5)}
        notify = true
        autostart = false

        [program:web]
        {child(sv, "web")}
        depends_on = db
        startsecs = 0

        [program:batch]
        {child(sv, "batch")}
        depends_on = db
        startsecs = 0
        autostart = false
        """, header(sv))
    sv.cli("start", check=True)
    status = sv.status()
    assert status["db"]["state"] == "STOPPED"
    # web (autostart) waits for a dependency nobody started; batch is not wanted up
    assert (status["web"]["state"], status["web"]["waiting"]) == (
        "STOPPED", "waiting for db (STOPPED)")
    assert status["batch"]["waiting"] is None
    sv.cli("start", "db", check=True)
    sv.wait_state("web", "RUNNING")
    assert events.when("web", "start") >= events.when("db", "ready")
    assert sv.status()["batch"]["state"] == "STOPPED"

    # stopped by the user: a running dependent keeps running; a later start of a
    # dependent starts the dependency first (systemd's Requires + After)
    sv.cli("stop", "db", check=True)
    assert sv.status()["web"]["state"] == "RUNNING"
    started = sv.cli("start", "batch", check=True)
    assert "batch: RUNNING" in started.stdout
    assert sv.status()["db"]["state"] == "RUNNING"
    assert events.when("batch", "start") >= events.when("db", "ready")


def test_group_depends_on_and_depending_on_a_group(sv: Sv, events: Events) -> None:
    sv.write(f"""
        [program:db]
        {child(sv, "db", "gate")}
        notify = true
        priority = 900

        [program:api]
        {child(sv, "api", 0.2)}
        notify = true
        priority = 1

        [program:worker]
        {child(sv, "worker")}
        notify = true
        priority = 1

        [group:app]
        programs = api, worker
        depends_on = db
        priority = 1

        [program:edge]
        {child(sv, "edge")}
        depends_on = app
        startsecs = 0
        priority = 1
        """, header(sv))
    planned = json.loads(sv.cli("check", "--json", check=True).stdout)["instances"]
    assert [(row["name"], row["depends_on"]) for row in planned] == [
        ("db", []), ("api", ["db"]), ("worker", ["db"]), ("edge", ["api", "worker"])]
    sv.cli("start", check=True)
    events.wait("db", "start")
    waiting = sv.status()
    assert waiting["api"]["waiting"] == waiting["worker"]["waiting"] == (
        "waiting for db (STARTING)")
    assert waiting["edge"]["waiting"] == "waiting for api (STOPPED), worker (STOPPED)"
    release(sv, "db")
    sv.wait_state("edge", "RUNNING", timeout=15)
    ready = events.when("db", "ready")
    assert events.when("api", "start") >= ready
    assert events.when("worker", "start") >= ready
    assert events.when("edge", "start") >= max(events.when("api", "ready"),
                                               events.when("worker", "ready"))
    sv.cli("stop", "all", check=True)
    assert events.when("db", "term") >= max(events.when("api", "exit"),
                                            events.when("worker", "exit"))
    assert min(events.when("api", "term"), events.when("worker", "term")) >= (
        events.when("edge", "exit"))


def test_reload_adds_a_dependency(sv: Sv, events: Events) -> None:
    sv.write(f"""
        [program:web]
        {child(sv, "web")}
        startsecs = 0
        """, header(sv))
    sv.cli("start", check=True)
    web_pid = sv.wait_state("web", "RUNNING")["pid"]
    sv.write(f"""
        [program:web]
        {child(sv, "web")}
        startsecs = 0
        depends_on = db

        [program:db]
        {child(sv, "db", 0.5)}
        notify = true

        [program:api]
        {child(sv, "api")}
        startsecs = 0
        depends_on = db
        """, header(sv))
    reloaded = sv.cli("reload", check=True)
    assert "added" in reloaded.stdout or reloaded.returncode == 0
    sv.wait_state("api", "RUNNING", timeout=15)
    assert events.when("api", "start") >= events.when("db", "ready")
    # a new depends_on applies to the next start: the running web was not restarted
    assert sv.status()["web"]["pid"] == web_pid
    sv.cli("stop", "all", check=True)
    assert events.when("db", "term") >= max(events.when("web", "exit"),
                                            events.when("api", "exit"))


def test_reload_removal_stops_the_dependent_first(sv: Sv, events: Events) -> None:
    both = f"""
        [program:db]
        {child(sv, "db")}
        startsecs = 0
        priority = 900

        [program:web]
        {child(sv, "web")}
        startsecs = 0
        depends_on = db
        priority = 1
        """
    sv.write(both + """
        [program:keep]
        command = sleep 1000
        startsecs = 0
        """, header(sv))
    sv.cli("start", check=True)
    sv.wait_state("web", "RUNNING")
    sv.write("""
        [program:keep]
        command = sleep 1000
        startsecs = 0
        """, header(sv))
    sv.cli("reload", check=True)
    wait_for(lambda: events.has("db", "exit"), 15, message="db gone")
    assert events.when("db", "term") >= events.when("web", "exit")
    assert set(sv.status()) == {"keep"}


def reload_then_shut_down(sv: Sv, events: Events, before: str, after: str,
                          stopping: str) -> int:
    """Run ``before``, reload to ``after`` (which removes ``stopping``), and shut the
    supervisor down while ``stopping`` is still stopping; returns once the supervisor is
    gone, with ``stopping``'s pid."""
    sv.write(before, header(sv))
    sv.cli("start", check=True)
    pid: int = sv.wait_state(stopping, "RUNNING")["pid"]
    supervisor = sv.supervisor_pid()
    assert supervisor is not None
    sv.write(after, header(sv))
    sv.cli("reload", check=True)
    events.wait(stopping, "term")
    sv.cli("stop", check=True)
    wait_for(lambda: not pid_alive(supervisor), 20, message="supervisor gone")
    return pid


def test_shutdown_during_a_reload_removal_keeps_its_order(sv: Sv, events: Events) -> None:
    """A reload removed web and the db it depends on: web is stopping, db waits for it. A
    shutdown then cancelled db's wait, and the current configuration, which no longer
    knows either, gave it no other: db got SIGTERM while web was still running."""
    keep = """
        [program:keep]
        command = sleep 1000
        startsecs = 0
        """
    web = reload_then_shut_down(sv, events, f"""
        [program:db]
        {child(sv, "db")}
        startsecs = 0

        [program:web]
        {child(sv, "web", stubborn=True)}
        startsecs = 0
        depends_on = db
        stopwaitsecs = 3
        """ + keep, keep, "web")  # web stays until its SIGKILL, 3 s after its SIGTERM
    assert not pid_alive(web)
    # db was signalled only once web was gone: after web's stopwaitsecs, not at once
    assert events.when("db", "term") - events.when("web", "term") >= 2.5
    assert events.has("db", "exit")


def test_a_dependency_outlives_a_removed_dependent_still_stopping(
        sv: Sv, events: Events) -> None:
    """A reload removed web, which depends on db; db stays. While web was still stopping,
    a shutdown (or a stop of db) signalled db at once: the current configuration no longer
    knows that web used it."""
    web_section = f"""
        [program:web]
        {child(sv, "web", stubborn=True)}
        startsecs = 0
        depends_on = db
        stopwaitsecs = 3
        """
    db_section = f"""
        [program:db]
        {child(sv, "db")}
        startsecs = 0
        """
    reload_then_shut_down(sv, events, db_section + web_section, db_section, "web")
    assert events.when("db", "term") - events.when("web", "term") >= 2.5
    assert events.has("db", "exit")


def test_stop_waits_as_long_as_the_running_supervisor_needs(sv: Sv, events: Events) -> None:
    """stop took its timeout from the file on disk: edited since the last reload (the
    slow program gone from it, the rest quick), it gave the supervisor 6 s and then
    SIGKILL, while its running configuration needed 10 (found in a black-box trial)."""
    sv.write(f"""
        [program:slow]
        {child(sv, "slow", exit_after=8)}
        startsecs = 0
        stopwaitsecs = 10
        """, header(sv))
    sv.cli("start", check=True)
    sv.wait_state("slow", "RUNNING")
    supervisor = sv.supervisor_pid()
    assert supervisor is not None
    sv.write("""
        [program:quick]
        command = sleep 1000
        startsecs = 0
        stopwaitsecs = 1
        """, header(sv))  # not reloaded: the supervisor still runs the first file
    stopped = sv.cli("stop")
    assert stopped.returncode == 0 and "killed" not in stopped.stdout, stopped.stdout
    assert not pid_alive(supervisor)
    assert events.has("slow", "exit")  # its own end, 8 s after its SIGTERM


def test_a_removed_program_still_stopping_gets_its_stopwaitsecs_at_shutdown(
        sv: Sv, events: Events) -> None:
    """The shutdown's grace came from the current configuration alone: a program a
    reload had just removed, given 10 s to stop, was SIGKILLed after 2 s because the
    one program left stops in 1 (found in a black-box trial)."""
    keep = """
        [program:keep]
        command = sleep 1000
        startsecs = 0
        stopwaitsecs = 1
        """
    reload_then_shut_down(sv, events, keep + f"""
        [program:slow]
        {child(sv, "slow", exit_after=4)}
        startsecs = 0
        stopwaitsecs = 10
        """, keep, "slow")
    assert events.has("slow", "exit"), "slow was killed before its stopwaitsecs"
    assert "SIGKILL" not in (sv.dir / "sv.log").read_text()


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Ctl]:
    sockdir = Path(tempfile.mkdtemp(prefix="dk-dep-", dir="/tmp"))  # sun_path is short
    sv = Sv(tmp_path)
    yield Ctl(sv, sockdir)
    sv.cleanup()
    shutil.rmtree(sockdir, ignore_errors=True)
    assert sv.supervisor_pids() == []
    assert tagged_pids(sv.tag) == []


def test_supervisorctl_status_shows_what_a_program_waits_for(ctl: Ctl) -> None:
    ctl.write(fatal_db(ctl.sv).replace(child(ctl.sv, "web"), "command = sleep 1000"))
    ctl.start()
    ctl.sv.wait_state("db", "FATAL")
    rows = ctl.status_lines()
    assert rows["web"] == ("STOPPED", "waiting for db (FATAL)")
    assert ctl.proxy().supervisor.getProcessInfo("web")["description"] == (
        "waiting for db (FATAL)")
    refused = ctl.ctl("start", "web")  # db is tried again first, and fails again
    assert refused.stdout.strip() == "web: ERROR (spawn error)"
    assert ctl.state("web") == "STOPPED"
    (ctl.sv.dir / "ok").write_text("")
    assert ctl.ctl("start", "db").stdout.strip() == "db: started"
    wait_for(lambda: ctl.state("web") == "RUNNING", 10, message="web RUNNING")


def test_graph_functions_on_long_chains() -> None:
    """Load-time checks are iterative: a 5,000-program chain neither recurses too deep nor
    takes long; without depends_on the order is exactly supervisord's sort."""
    from daemonkit.supervisor import dependencies

    names = [f"p{n}" for n in range(5000)]
    chain_graph = {names[n]: (names[n - 1],) for n in range(1, len(names))}
    began = time.monotonic()
    assert dependencies.find_cycle(chain_graph) is None
    assert dependencies.chain_depth(chain_graph) == 5000
    priority = {name: (n * 7919) % 1000 for n, name in enumerate(names)}
    order = dependencies.start_order(names, chain_graph, lambda p: (priority[p], p))
    assert order == names  # dependencies first, whatever the priority
    assert dependencies.start_order(names, {}, lambda p: (priority[p], p)) == sorted(
        names, key=lambda p: (priority[p], p))
    looped = {**chain_graph, "p0": ("p4999",)}
    cycle = dependencies.find_cycle(looped)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 5001
    assert time.monotonic() - began < 5
