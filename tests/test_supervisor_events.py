"""Event listeners with real processes: supervisord's protocol byte for byte, superlance's
crashmail, memmon and httpok unchanged, and listeners that hang or die delaying nothing.

Each supervisor runs through ``daemonkit supervise`` (see test_supervisor.Sv); superlance's
tools reach it by supervisord's XML-RPC on a unix socket (test_supervisorctl.Ctl writes
that header), their "sendmail" is a script that appends the mail to a file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Sv, free_port, pid_alive, wait_for
from test_supervisorctl import Ctl

from daemonkit.supervisor.listeners import Answer, Listener, ListenerState
from daemonkit.supervisor.process import QUICK_EXIT_S

BIN = Path(sys.executable).parent
PYTHON = sys.executable

#: a listener that records exactly what it was sent (bytes, as JSON-escaped latin-1) and
#: whether anything reached its stdin before it said READY; FAIL_FIRST=1: the first event
#: gets FAIL; WAIT_FOR=path: it says its first READY only once that file exists
RECORDER = r'''
import json, os, select, sys, time
out = open(sys.argv[1], "a")
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
wait_for = os.environ.get("WAIT_FOR")
while wait_for and not os.path.exists(wait_for):
    time.sleep(0.02)
early = bool(select.select([stdin], [], [], 0.3)[0])
out.write(json.dumps({"early": early}) + "\n"); out.flush()
fail = os.environ.get("FAIL_FIRST") == "1"
while True:
    stdout.write(b"READY\n"); stdout.flush()
    header = stdin.readline()
    if not header:
        break
    fields = dict(part.split(b":", 1) for part in header.split())
    body = stdin.read(int(fields[b"len"]))
    answer = b"FAIL" if fail else b"OK"
    fail = False
    out.write(json.dumps({"raw": (header + body).decode("latin-1"), "t": time.time(),
                          "answer": answer.decode()}) + "\n"); out.flush()
    sys.stderr.write("handled %s\n" % fields[b"serial"].decode()); sys.stderr.flush()
    stdout.write(b"RESULT %d\n%s" % (len(answer), answer)); stdout.flush()
'''


def records(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def received(path: Path) -> list[dict[str, Any]]:
    return [r for r in records(path) if "raw" in r]


def full_log(sv: Sv) -> str:
    return (sv.dir / "sv.log").read_text()


def parse(raw: str) -> tuple[dict[str, str], str]:
    header, _, payload = raw.partition("\n")
    return dict(part.split(":", 1) for part in header.split()), payload


@pytest.fixture
def sv(sv: Sv) -> Sv:
    """conftest's supervisor, with the recording listener beside its file."""
    (sv.dir / "recorder.py").write_text(RECORDER)
    return sv


@pytest.fixture
def ctl(sv: Sv) -> Iterator[Ctl]:
    sockdir = Path(tempfile.mkdtemp(prefix="dk-ev-", dir="/tmp"))  # sun_path is short
    yield Ctl(sv, sockdir)
    shutil.rmtree(sockdir, ignore_errors=True)


def test_protocol_bytes_ready_gating_fail_rebuffers_and_stderr_is_logged(sv: Sv) -> None:
    got = sv.dir / "got.jsonl"
    sv.write(f"""
        [program:victim]
        command = sleep 600
        startsecs = 0

        [eventlistener:rec]
        command = {PYTHON} {sv.dir}/recorder.py {got}
        events = PROCESS_GROUP_ADDED, process_state_exited
        environment = FAIL_FIRST="1"
        startsecs = 0
        stdout_logfile = {sv.dir}/rec.out
        stderr_logfile = {sv.dir}/rec.err
        """)
    sv.cli("start", check=True)
    victim = sv.wait_state("victim", "RUNNING")["pid"]
    wait_for(lambda: len(received(got)) >= 3, 10, message="the group events")
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(received(got)) >= 4, 10, message="the EXITED event")
    assert records(got)[0] == {"early": False}  # nothing was written before READY
    sent = [r["raw"] for r in received(got)]
    assert sent == [
        # the first answer was FAIL: the same event again, same serials
        "ver:3.0 server:supervisor serial:0 pool:rec poolserial:0 "
        "eventname:PROCESS_GROUP_ADDED len:14\ngroupname:rec\n",
        "ver:3.0 server:supervisor serial:0 pool:rec poolserial:0 "
        "eventname:PROCESS_GROUP_ADDED len:14\ngroupname:rec\n",
        "ver:3.0 server:supervisor serial:1 pool:rec poolserial:1 "
        "eventname:PROCESS_GROUP_ADDED len:17\ngroupname:victim\n",
        "ver:3.0 server:supervisor serial:2 pool:rec poolserial:2 "
        "eventname:PROCESS_STATE_EXITED len:"
        f"{len(f'processname:victim groupname:victim from_state:RUNNING expected:0 pid:{victim}')}"
        f"\nprocessname:victim groupname:victim from_state:RUNNING expected:0 pid:{victim}",
    ]
    assert [r["answer"] for r in received(got)] == ["FAIL", "OK", "OK", "OK"]
    # stdout is the protocol (and is logged, as supervisord does); stderr is a log
    wait_for(lambda: "handled 2" in (sv.dir / "rec.err").read_text(), 5)
    assert (sv.dir / "rec.out").read_bytes().startswith(b"READY\nRESULT 4\nFAIL")
    assert "rec: event 0 was rejected" in full_log(sv)


def test_process_state_payloads_are_supervisords(sv: Sv) -> None:
    got = sv.dir / "got.jsonl"
    sv.write(f"""
        [program:flaky]
        command = sh -c 'exit 3'
        startsecs = 1
        startretries = 1
        backoff_initial = 0.1

        [program:calm]
        command = sleep 600
        startsecs = 0

        [eventlistener:rec]
        command = {PYTHON} {sv.dir}/recorder.py {got}
        events = PROCESS_STATE
        startsecs = 0
        """)
    sv.cli("start", check=True)
    sv.wait_state("flaky", "FATAL")
    calm = sv.wait_state("calm", "RUNNING")["pid"]
    sv.cli("stop", "calm", check=True)

    def about(name: str) -> list[str]:
        return [p for h, p in (parse(r["raw"]) for r in received(got))
                if p.startswith(f"processname:{name} ")]

    wait_for(lambda: len(about("calm")) >= 4 and len(about("flaky")) >= 5, 10)
    prefix = "processname:flaky groupname:flaky from_state:"
    assert about("flaky") == [f"{prefix}STOPPED tries:0", f"{prefix}STARTING tries:1",
                              f"{prefix}BACKOFF tries:1", f"{prefix}STARTING tries:2",
                              f"{prefix}BACKOFF"]
    prefix = "processname:calm groupname:calm from_state:"
    assert about("calm") == [f"{prefix}STOPPED tries:0", f"{prefix}STARTING pid:{calm}",
                             f"{prefix}RUNNING pid:{calm}", f"{prefix}STOPPING pid:{calm}"]
    names = [parse(r["raw"])[0]["eventname"] for r in received(got)
             if "processname:calm " in r["raw"]]
    assert names == ["PROCESS_STATE_STARTING", "PROCESS_STATE_RUNNING",
                     "PROCESS_STATE_STOPPING", "PROCESS_STATE_STOPPED"]


def test_listeners_stop_last_and_hear_every_program_stop(sv: Sv) -> None:
    """supervisord stops listeners (priority -1) after the programs; signalled in the same
    instant, a listener used to miss every STOPPED of the shutdown (buffer overflows)."""
    got = sv.dir / "got.jsonl"
    sv.write(f"""
        [program:calm]
        command = sleep 600
        numprocs = 3
        process_name = %(program_name)s_%(process_num)d
        startsecs = 0

        [eventlistener:rec]
        command = {PYTHON} {sv.dir}/recorder.py {got}
        events = PROCESS_STATE
        startsecs = 0
        """)
    sv.cli("start", check=True)
    for num in range(3):
        sv.wait_state(f"calm_{num}", "RUNNING")
    sv.cli("stop", check=True)
    stopped = {parse(r["raw"])[1].split()[0] for r in received(got)
               if parse(r["raw"])[0]["eventname"] == "PROCESS_STATE_STOPPED"}
    assert stopped == {f"processname:calm_{num}" for num in range(3)}
    assert "overflowed" not in full_log(sv)

def test_buffer_overflow_drops_the_oldest_and_log_events(sv: Sv) -> None:
    got, go = sv.dir / "got.jsonl", sv.dir / "go"
    sv.write(f"""
        [program:talker]
        command = sh -c 'for i in 1 2 3 4 5 6 7 8; do echo line$i; sleep 0.15; done; exec sleep 600'
        startsecs = 0
        stdout_events_enabled = true
        stdout_logfile = {sv.dir}/talker.log

        [program:quiet]
        command = sh -c 'echo not-an-event; exec sleep 600'
        startsecs = 0

        [eventlistener:rec]
        command = {PYTHON} {sv.dir}/recorder.py {got}
        events = PROCESS_LOG
        buffer_size = 3
        environment = WAIT_FOR="{go}"
        startsecs = 0
        """)
    sv.cli("start", check=True)
    talker = sv.wait_state("talker", "RUNNING")["pid"]
    wait_for(lambda: "line8" in (sv.dir / "talker.log").read_text(), 10, message="output")
    wait_for(lambda: full_log(sv).count("pool rec event buffer overflowed") == 5, 5,
             message="five events dropped")
    go.touch()
    wait_for(lambda: len(received(got)) >= 3, 10, message="the buffered events")
    time.sleep(0.3)  # a fourth event would arrive now; none may
    payloads = [parse(r["raw"]) for r in received(got)]
    assert [p[1] for p in payloads] == [
        f"processname:talker groupname:talker pid:{talker} channel:stdout\nline{n}\n"
        for n in (6, 7, 8)]
    assert {h["eventname"] for h, _ in payloads} == {"PROCESS_LOG_STDOUT"}
    assert [int(h["serial"]) for h, _ in payloads] == [5, 6, 7]  # 0-4 were dropped
    assert "discarding event 0" in full_log(sv)


def test_tick_5_comes_from_the_clock(sv: Sv) -> None:
    got = sv.dir / "got.jsonl"
    sv.write(f"""
        [eventlistener:ticker]
        command = {PYTHON} {sv.dir}/recorder.py {got}
        events = TICK
        startsecs = 0
        """)
    sv.cli("start", check=True)
    # two TICK_5, not two ticks: at a minute's boundary TICK_60 comes with TICK_5
    wait_for(lambda: sum("eventname:TICK_5 " in r["raw"] for r in received(got)) >= 2, 14,
             interval=0.05, message="two TICK_5")
    ticks = [(*parse(r["raw"]), r["t"]) for r in received(got)]
    fives = [(int(payload.removeprefix("when:")), arrived)
             for header, payload, arrived in ticks if header["eventname"] == "TICK_5"]
    assert len(fives) >= 2
    for when, arrived in fives:
        assert when % 5 == 0
        assert 0 <= arrived - when < 1.0  # at the boundary, not up to a loop turn later
    assert fives[1][0] - fives[0][0] == 5
    assert all(h["eventname"] in ("TICK_5", "TICK_60", "TICK_3600") for h, _, _ in ticks)


def fake_sendmail(sv: Sv) -> tuple[Path, Path]:
    """superlance mails through sendmail: a script that appends each mail to a file."""
    mailbox = sv.dir / "mail.txt"
    sendmail = sv.dir / "sendmail.sh"
    sendmail.write_text(f"#!/bin/sh\ncat >> {mailbox}\n")
    sendmail.chmod(0o755)
    return mailbox, sendmail


def test_crashmail_reports_a_process_killed_with_kill_9(ctl: Ctl) -> None:
    sv = ctl.sv
    mailbox, sendmail = fake_sendmail(sv)
    ctl.write(f"""
        [program:victim]
        command = sleep 600
        startsecs = 0

        [eventlistener:crashmail]
        command = {BIN}/crashmail -a -m ops@example.com -o testhost -s {sendmail}
        events = PROCESS_STATE_EXITED
        """)
    ctl.start()
    victim = sv.wait_state("victim", "RUNNING")["pid"]
    sv.wait_state("crashmail", "RUNNING")
    os.kill(victim, signal.SIGKILL)
    mail = wait_for(lambda: mailbox.exists() and "exited" in mailbox.read_text()
                    and mailbox.read_text(), 10, message="the crash mail")
    assert "To: ops@example.com" in mail
    assert "Subject: testhost: victim crashed at" in mail
    assert (f"Process victim in group victim exited unexpectedly (pid {victim}) from state "
            "RUNNING") in mail
    assert sv.wait_state("victim", "RUNNING")["pid"] != victim  # and it was respawned


HOG = "import time; hog = b'x' * (60 << 20); time.sleep(600)"


def test_memmon_restarts_a_process_over_its_memory_limit(ctl: Ctl) -> None:
    sv = ctl.sv
    mailbox, sendmail = fake_sendmail(sv)
    ctl.write(f"""
        [program:hog]
        command = {PYTHON} -c "{HOG}"
        startsecs = 0

        [program:small]
        command = sleep 600
        startsecs = 0

        [eventlistener:memmon]
        command = {BIN}/memmon -p hog=30MB -p small=30MB -m ops@example.com -s {sendmail}
        events = TICK_5
        """)
    ctl.start()
    first = sv.wait_state("hog", "RUNNING")["pid"]
    small = sv.wait_state("small", "RUNNING")["pid"]
    wait_for(lambda: mailbox.exists() and "hog" in mailbox.read_text(), 15, interval=0.1,
             message="memmon's restart mail")
    status = wait_for(lambda: (s := sv.status())["hog"]["pid"] not in (None, first) and s,
                      10, message="hog restarted")
    assert status["hog"]["restarts"] >= 1 and not pid_alive(first)
    assert status["small"]["pid"] == small  # under its limit: left alone
    mail = mailbox.read_text()
    assert "process hog:hog restarted" in mail and "consuming too much memory" in mail
    assert "small:small" not in mail


WEB = r'''
import http.server, os, sys
hang = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if os.path.exists(hang):
            import time; time.sleep(600)  # stops answering
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


def test_httpok_restarts_a_process_whose_url_stops_answering(ctl: Ctl) -> None:
    sv = ctl.sv
    port, hang = free_port(), sv.dir / "hang"
    (sv.dir / "web.py").write_text(WEB)
    ctl.write(f"""
        [program:web]
        command = {PYTHON} {sv.dir}/web.py {port} {hang}
        startsecs = 0
        stopwaitsecs = 2

        [eventlistener:httpok]
        command = {BIN}/httpok -p web -t 2 http://127.0.0.1:{port}/
        events = TICK_5
        """)
    ctl.start()
    first = sv.wait_state("web", "RUNNING")["pid"]
    sv.wait_state("httpok", "RUNNING")
    time.sleep(5.5)  # at least one tick with a healthy answer: no restart for that
    assert sv.status()["web"]["pid"] == first
    hang.touch()
    status = wait_for(lambda: (s := sv.status())["web"]["pid"] not in (None, first)
                      and s["web"]["state"] == "RUNNING" and s, 20, interval=0.1,
                      message="web restarted by httpok")
    hang.unlink()
    assert not pid_alive(first) and status["web"]["restarts"] >= 1


LISTENERS_THAT_HANG_OR_DIE = """
    [eventlistener:hangs]
    ; says READY, takes an event, never reads again nor answers: BUSY for ever
    command = sh -c 'echo READY; exec sleep 600'
    events = EVENT
    startsecs = 0

    [eventlistener:mute]
    ; never says READY
    command = sleep 600
    events = EVENT
    startsecs = 0

    [eventlistener:dies]
    ; says READY, dies holding its first event (rebuffered, respawned, again)
    command = sh -c 'echo READY; read header; exit 1'
    events = EVENT
    startsecs = 0
    autorestart = true
    """


def test_listeners_that_hang_or_die_never_delay_a_respawn(sv: Sv) -> None:
    """Respawn latency of a program killed with -9, alone and then beside three broken
    listeners subscribed to everything (the victim's output included)."""
    starts = sv.dir / "starts"
    victim = f"""
        [program:victim]
        command = sh -c 'echo $$ $(date +%%s.%%N) >> {starts}; exec sleep 600'
        startsecs = 0
        stdout_events_enabled = true
        """

    def last_start() -> tuple[int, float]:
        pid, when = starts.read_text().splitlines()[-1].split()
        return int(pid), float(when)

    def respawn_ms(times: int) -> list[float]:
        latencies = []
        for _ in range(times):
            pid, when = last_start()
            # up for over a second: a kill is a crash, not a crash loop (which backs off)
            time.sleep(max(0.0, when + QUICK_EXIT_S + 0.05 - time.time()))
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            _pid, started = wait_for(lambda pid=pid: (s := last_start())[0] != pid and s, 5,
                                     interval=0.002, message="victim respawned")
            latencies.append((started - killed_at) * 1000)
        return latencies

    sv.write(victim)
    sv.cli("start", check=True)
    sv.wait_state("victim", "RUNNING")
    alone = respawn_ms(6)
    sv.write(textwrap.dedent(victim) + textwrap.dedent(LISTENERS_THAT_HANG_OR_DIE))
    sv.cli("reload", check=True)
    wait_for(lambda: sv.status()["dies"]["restarts"] >= 3, 15, message="dies respawning")
    beside = respawn_ms(10)
    print(f"respawn after kill -9, median/max: alone {statistics.median(alone):.1f}/"
          f"{max(alone):.1f} ms, beside listeners that hang or die "
          f"{statistics.median(beside):.1f}/{max(beside):.1f} ms")
    assert statistics.median(beside) < max(2 * statistics.median(alone), 30.0), (alone, beside)
    assert max(beside) < 500, beside
    status = sv.status()
    assert status["hangs"]["state"] == "RUNNING" and status["mute"]["state"] == "RUNNING"
    assert "pool hangs event buffer overflowed" in full_log(sv)  # it hangs; its pool drops
    assert "pool mute event buffer overflowed" in full_log(sv)


def test_supervisorctl_shows_starts_and_stops_listeners(ctl: Ctl) -> None:
    sv = ctl.sv
    got = sv.dir / "got.jsonl"
    ctl.write(textwrap.dedent(f"""
        [program:idle]
        command = sleep 600
        autostart = false

        [eventlistener:rec]
        command = {PYTHON} {sv.dir}/recorder.py {got}
        events = PROCESS_STATE_RUNNING, REMOTE_COMMUNICATION, PROCESS_GROUP_REMOVED
        numprocs = 2
        process_name = rec_%(process_num)s
        """))
    ctl.start()
    wait_for(lambda: all(ctl.status_lines().get(f"rec:rec_{n}", ("",))[0] == "RUNNING"
                         for n in (0, 1)), 10, message="both listeners up")
    rows = ctl.status_lines()
    assert rows["idle"][0] == "STOPPED" and rows["rec:rec_0"][1].startswith("pid ")
    assert ctl.ctl("stop", "rec:*").returncode == 0
    assert {ctl.status_lines()[f"rec:rec_{n}"][0] for n in (0, 1)} == {"STOPPED"}
    assert ctl.ctl("start", "rec:rec_1").returncode == 0
    assert ctl.ctl("start", "idle").returncode == 0
    # the RUNNING events of idle and of rec_1 reach the one listener of the pool alive
    wait_for(lambda: {"processname:idle", "processname:rec_1"} <= {
        parse(r["raw"])[1].split()[0] for r in received(got)}, 10, message="events")
    # sendRemoteCommEvent and removeProcessGroup reach listeners too
    ctl.proxy().supervisor.sendRemoteCommEvent("deploy", "v2 is out")
    assert ctl.ctl("stop", "idle").returncode == 0
    assert "removed process group" in ctl.ctl("remove", "idle").stdout
    wait_for(lambda: {"REMOTE_COMMUNICATION", "PROCESS_GROUP_REMOVED"} <= {
        parse(r["raw"])[0]["eventname"] for r in received(got)}, 10, message="those events")
    payloads = {parse(r["raw"])[0]["eventname"]: parse(r["raw"])[1] for r in received(got)}
    assert payloads["REMOTE_COMMUNICATION"] == "type:deploy\nv2 is out"
    assert payloads["PROCESS_GROUP_REMOVED"] == "groupname:idle\n"


def test_the_protocol_parser_takes_fragments_and_refuses_garbage() -> None:
    """What a listener writes may arrive in any pieces; what breaks the protocol makes it
    UNKNOWN (supervisord's strictness) with nothing kept, however much it writes."""
    listener = Listener()
    assert listener.feed(b"REA") == [] and listener.state is ListenerState.ACKNOWLEDGED
    assert listener.feed(b"DY\n") == [Answer.READY]
    listener.state = ListenerState.BUSY  # as the pool does when it sends an event
    assert listener.feed(b"RESULT 2\nO") == []
    assert listener.feed(b"KREADY\n") == [Answer.OK, Answer.READY]
    listener.state = ListenerState.BUSY
    assert listener.feed(b"RESULT 4\nFAILREADY\n") == [Answer.REJECTED, Answer.READY]
    assert listener.feed(b"READY\n") == [Answer.BROKEN]  # READY twice: out of turn
    assert listener.state is ListenerState.UNKNOWN
    assert listener.feed(b"x" * 1_000_000) == [] and not listener.pending
    for garbage in (b"HELLO\n", b"RESULT x\n", b"RESULT 99999999\n", b"R" * 100):
        busy = Listener(state=ListenerState.BUSY)
        assert busy.feed(garbage) == [Answer.BROKEN], garbage
    assert Listener().feed(b"hello\n") == [Answer.BROKEN]


CHATTY = """import sys, time
while True:
    sys.stdout.write("spam\\n"); sys.stdout.flush(); time.sleep(0.001)
"""


def test_a_chatty_program_and_a_stuck_listener_do_not_flood_the_log(sv: Sv) -> None:
    (sv.dir / "chatty.py").write_text(CHATTY)
    sv.write(f"""
        [program:chatty]
        command = {PYTHON} {sv.dir}/chatty.py
        startsecs = 0
        stdout_events_enabled = true
        stdout_logfile = NONE

        [eventlistener:mute]
        command = sleep 600
        events = PROCESS_LOG_STDOUT
        buffer_size = 1
        startsecs = 0
        """)
    sv.cli("start", check=True)
    sv.wait_state("chatty", "RUNNING")
    wait_for(lambda: "more events discarded" in full_log(sv), 10, message="a summary line")
    started = time.monotonic()
    time.sleep(2.0)
    overflow = [line for line in full_log(sv).splitlines() if "pool mute event buffer" in line]
    seconds = time.monotonic() - started + 3  # what ran before, generously
    assert len(overflow) <= (10 + 1) * seconds, len(overflow)
    summed = sum(int(line.split(": ")[-1].split()[0]) for line in overflow
                 if "more events discarded" in line)
    assert summed > 100  # hundreds of events a second were dropped, and counted
