"""The supervisor's INI parser: supervisord compatibility and one-line errors."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest

from daemonkit import ConfigError
from daemonkit.supervisor import config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_supervisord_style_program(tmp_path: Path) -> None:
    ini = write(tmp_path / "sv.ini", """
[supervisord]
pidfile = run/sv.pid      ; relative to this file
nodaemon = false

[unix_http_server]
file = /tmp/supervisor.sock

[program:worker]
command = python3 consumer.py --queue email
numprocs = 3
directory = /srv/app
environment = QUEUE="email",LEVEL="info,debug"
autorestart = unexpected
exitcodes = 0,2
startsecs = 1
stopsignal = INT
stdout_logfile = /var/log/worker-%(process_num)s.log
redirect_stderr = true
stopasgroup = true
""")
    loaded = config.load(str(ini))
    assert loaded.pidfile == str(tmp_path / "run" / "sv.pid")
    worker = loaded.programs["worker"]
    assert worker.exitcodes == frozenset({0, 2})
    assert worker.stopsignal == signal.SIGINT
    assert loaded.instance_names() == ["worker:0", "worker:1", "worker:2"]
    spec = worker.instance(2)
    assert spec.argv == ("python3", "consumer.py", "--queue", "email")
    assert spec.environment == (("QUEUE", "email"), ("LEVEL", "info,debug"))
    assert spec.stdout.path == "/var/log/worker-2.log"
    assert spec.stderr is None


def test_single_instance_named_after_program(tmp_path: Path) -> None:
    ini = write(tmp_path / "sv.ini", "[program:web]\ncommand = sleep 1 ; comment\n")
    loaded = config.load(str(ini))
    assert loaded.instance_names() == ["web"]
    assert loaded.programs["web"].instance(0).argv == ("sleep", "1")


def test_include_and_here(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "a.ini", "[program:a]\ncommand = %(here)s/run-a\n")
    write(tmp_path / "conf.d" / "b.ini", "[program:b]\ncommand = b\npriority = 1\n")
    ini = write(tmp_path / "sv.ini", "[include]\nfiles = conf.d/*.ini\n")
    loaded = config.load(str(ini))
    assert loaded.program_order() == ["b", "a"]
    assert loaded.programs["a"].instance(0).argv == (f"{tmp_path}/conf.d/run-a",)
    assert str(tmp_path / "conf.d" / "a.ini") in loaded.files


W = "[program:w]\ncommand = x\n"


@pytest.mark.parametrize(("body", "expected"), [
    (W + "numprocs = many\n", "[program:w] numprocs: 'many' is not an integer"),
    (W + "autostart = maybe\n", "[program:w] autostart: 'maybe' is not true or false"),
    (W + "stopsignal = NOPE\n", "[program:w] stopsignal: 'NOPE' is not a signal name"),
    ("[program:w]\nnumprocs = 1\n", "[program:w] command: missing"),
    (W + "user = no-such-user-here\n", "[program:w] user: no such user"),
    (W + "numprocs = 2\nprocess_name = w\n",
     "[program:w] process_name: must contain %(process_num)s"),
    ("[program:w]\ncommand = x %(nope)s\n", "[program:w] command: bad %(...)s expansion"),
    (W + "environment = A=1,=2\n", "[program:w] environment:"),
    (W + "autorestart = sometimes\n", "[program:w] autorestart:"),
    (W + "[group:g]\nprograms = w,nope\n", "[group:g] programs: no [program:nope] section"),
    (W + "[group:g]\nprograms = w\n[group:h]\nprograms = w\n",
     "[group:h] programs: w is already in [group:g]"),
    ("[supervisord]\npidfile = %(nope)s/x\n", "[supervisord] pidfile: bad %(...)s expansion"),
    (W + "startsecs = -1\n", "[program:w] startsecs: must be a number >= 0"),
    (W + "numprocs = %(ENV_DAEMONKIT_NOT_SET)s\n", "[program:w] numprocs: bad %(...)s expansion"),
    (W + "stopasgroup = true\nkillasgroup = false\n", "[program:w] killasgroup: cannot be false"),
    ("[fcgi-program:f]\ncommand = x\n", "[fcgi-program:f] socket: missing"),
    ("[fcgi-program:f]\ncommand = x\nsocket = tcp://127.0.0.1:1\nsocket_mode = 0700\n",
     "[fcgi-program:f] socket_mode: only for a unix:// socket"),
    ("[unix_http_server]\nfile = /tmp/x.sock\nusername = u\n",
     "[unix_http_server]: incomplete authentication"),
    ("[inet_http_server]\nport = nine\n", "[inet_http_server] port: 'nine' has no valid port"),
])
def test_errors_name_file_section_key(tmp_path: Path, body: str, expected: str) -> None:
    ini = write(tmp_path / "sv.ini", body)
    with pytest.raises(ConfigError) as info:
        config.load(str(ini))
    message = str(info.value)
    assert message.startswith(f"{ini}: ")
    assert expected in message
    assert "\n" not in message


def test_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "conf.d" / "bad.ini", "[program:z]\ncommand = z\nstartretries = x\n")
    ini = write(tmp_path / "sv.ini", "[include]\nfiles = conf.d/*.ini\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: \[program:z\] startretries:"):
        config.load(str(ini))


def test_same_section_in_two_files_is_merged(tmp_path: Path) -> None:
    """supervisord reads every file into one parser: a section named twice is one section,
    the file read later winning key by key."""
    write(tmp_path / "conf.d" / "a.ini", "[program:a]\ncommand = from-include\npriority = 5\n")
    ini = write(tmp_path / "sv.ini", "[program:a]\ncommand = from-main\nstartsecs = 3\n"
                "[include]\nfiles = conf.d/*.ini\n")
    program = config.load(str(ini)).programs["a"]
    assert (program.instance(0).argv, program.priority, program.startsecs) == (
        ("from-include",), 5, 3.0)


def test_change_detection_ignores_numprocs_only(tmp_path: Path) -> None:
    one = config.load(str(write(tmp_path / "1.ini", "[program:w]\ncommand = x\nnumprocs = 2\n")))
    two = config.load(str(write(tmp_path / "2.ini", "[program:w]\ncommand = x\nnumprocs = 5\n")))
    three = config.load(str(write(tmp_path / "3.ini", "[program:w]\ncommand = y\nnumprocs = 2\n")))
    assert one.programs["w"].same_except_numprocs(two.programs["w"])
    assert not one.programs["w"].same_except_numprocs(three.programs["w"])


def test_lenient_settings_match_the_full_load(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "a.ini", "[program:a]\ncommand = a\nstopwaitsecs = 42\n")
    ini = write(tmp_path / "sv.ini", "[supervisor]\npidfile = run/sv.pid\nlogfile = sv.log\n"
                "loglevel = warn\n[include]\nfiles = conf.d/*.ini\n")
    full = config.load(str(ini))
    settings = config.read_settings(str(ini))
    assert (settings.pidfile, settings.logfile, settings.log_level) == (
        full.pidfile, full.logfile, "WARNING")
    assert settings.stop_timeout == full.stop_timeout() == 47
    # listeners stop after the programs, once drained: stop's timeout allows for it too
    write(tmp_path / "conf.d" / "l.ini", "[eventlistener:l]\ncommand = l\nevents = TICK_5\n"
          "stopwaitsecs = 3\n")
    with_listener = config.load(str(ini))
    assert config.read_settings(str(ini)).stop_timeout == with_listener.stop_timeout() == (
        42 + config.LISTENER_DRAIN_S + 3 + 5)
    # shutdown goes by group priority: two programs of one priority in groups of two
    # priorities stop one after the other, and stop waits for both
    write(tmp_path / "conf.d" / "g.ini", "[group:g]\nprograms = b\npriority = 7\n"
          "[program:b]\ncommand = b\nstopwaitsecs = 20\n[program:c]\ncommand = c\n"
          "stopwaitsecs = 20\n")
    grouped = config.load(str(ini))
    assert config.read_settings(str(ini)).stop_timeout == grouped.stop_timeout() == (
        42 + 20 + config.LISTENER_DRAIN_S + 3 + 5)
    # depending on a group is depending on its members, and depends_on wins over priority:
    # d (1) stops before b (7), in a wave of its own between a and c's and b's
    write(tmp_path / "conf.d" / "d.ini", "[program:d]\ncommand = d\ndepends_on = g\n"
          "priority = 1\n")
    chained = config.load(str(ini))
    assert chained.stop_waves() == {"b": 0, "d": 1, "a": 2, "c": 2}
    assert config.read_settings(str(ini)).stop_timeout == chained.stop_timeout() == (
        42 + 10 + 20 + config.LISTENER_DRAIN_S + 3 + 5)
    # a program that no longer parses does not keep stop/status from finding the supervisor
    write(tmp_path / "conf.d" / "a.ini", "[program:a]\ncommand = a\nstopwaitsecs = soon\n")
    assert config.read_settings(str(ini)).pidfile == full.pidfile


def test_shutdown_waves_where_depends_on_crosses_priorities(tmp_path: Path) -> None:
    """Shutdown stops wave after wave, the reverse of the start order. With depends_on
    pulling against priority the old level-by-level waits went round in a circle (app waits
    for db, db for cache, cache for app) and the time allowed for a shutdown was too short
    for the chains that remained; each wave now waits only for a later-started one, and
    stop's timeout (read leniently or from the full load) is the sum of the waves."""
    ini = write(tmp_path / "sv.ini", "[program:db]\ncommand = db\npriority = 150\n"
                "stopwaitsecs = 3\n[program:cache]\ncommand = cache\npriority = 200\n"
                "stopwaitsecs = 5\n[program:app]\ncommand = app\npriority = 100\n"
                "depends_on = cache\nstopwaitsecs = 7\n")
    loaded = config.load(str(ini))
    assert loaded.program_order() == ["db", "cache", "app"]
    assert loaded.stop_waves() == {"db": 0, "cache": 1, "app": 2}  # app, cache, db
    assert config.read_settings(str(ini)).stop_timeout == loaded.stop_timeout() == 3 + 5 + 7 + 5
    # dependencies and priorities alternating: five waves out of two priorities
    lines = []
    for name, priority, needs, stopwait in (("a", 2, "", 1), ("b", 1, "a", 2), ("c", 2, "", 3),
                                            ("d", 1, "c", 4), ("e", 2, "", 5)):
        lines.append(f"[program:{name}]\ncommand = {name}\npriority = {priority}\n"
                     f"stopwaitsecs = {stopwait}\n" + (f"depends_on = {needs}\n" if needs else ""))
    ini = write(tmp_path / "alt.ini", "".join(lines))
    loaded = config.load(str(ini))
    assert loaded.stop_waves() == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
    assert config.read_settings(str(ini)).stop_timeout == loaded.stop_timeout() == 15 + 5


def test_auto_logs_childlogdir_and_supervisor_environment(tmp_path: Path) -> None:
    """supervisord's defaults: AUTO (also when the key is missing) is a file per instance and
    stream in childlogdir, NONE is /dev/null; [supervisord] environment reaches every child,
    the program's own environment wins."""
    ini = write(tmp_path / "sv.ini", "[supervisord]\nlogfile = var/sv.log\n"
                "environment = A=\"1\",B=\"2\"\nidentifier = main\n"
                "[program:w]\ncommand = x\nnumprocs = 2\nenvironment = B=\"3\"\n"
                "[program:only_out]\ncommand = x\nstdout_logfile = out.log\n"
                "[program:quiet]\ncommand = x\nstdout_logfile = NONE\nstderr_logfile = none\n")
    loaded = config.load(str(ini))
    w1 = loaded.programs["w"].instance(1)
    assert w1.stdout.path == f"{tmp_path}/var/w:1-stdout---main.log"
    assert w1.stderr is not None and w1.stderr.path == f"{tmp_path}/var/w:1-stderr---main.log"
    assert dict(w1.environment) == {"A": "1", "B": "3"}
    only_out = loaded.programs["only_out"].instance(0)
    assert only_out.stdout.path == f"{tmp_path}/out.log"
    assert only_out.stderr is not None
    assert only_out.stderr.path == f"{tmp_path}/var/only_out-stderr---main.log"
    quiet = loaded.programs["quiet"].instance(0)
    assert quiet.stdout.path is None and quiet.stderr is not None and quiet.stderr.path is None
    with_dir = write(tmp_path / "b.ini", "[supervisor]\nchildlogdir = %(here)s/logs\n"
                     "[program:p]\ncommand = x\n")
    assert config.load(str(with_dir)).programs["p"].instance(0).stdout.path == (
        f"{tmp_path}/logs/p-stdout---supervisor.log")
    bare = write(tmp_path / "c.ini", "[program:p]\ncommand = x\n")
    # /tmp is shared: the supervisor's own 0700 directory there (nobody can plant the name)
    assert config.load(str(bare)).programs["p"].instance(0).stdout.path == (
        f"/tmp/daemonkit-supervisor-{os.geteuid()}/p-stdout---supervisor.log")


def test_supervisord_file_loads_with_warnings(tmp_path: Path) -> None:
    ini = write(tmp_path / "sv.ini", "[supervisord]\nloglevel = debug\nnodaemon = true\n"
                "[program:w]\ncommand = x\nstdout_events_enabled = true\n"
                "[eventlistener:mem]\ncommand = memmon\nevents = TICK_60\n"
                "[include]\nfiles = conf.d/*.conf\n")
    loaded = config.load(str(ini))
    assert list(loaded.programs) == ["w", "mem"]
    assert loaded.programs["w"].stdout_events_enabled
    assert (loaded.programs["mem"].kind, loaded.programs["mem"].events) == (
        "eventlistener", ("TICK_60",))
    text = "\n".join(loaded.warnings)
    assert f"{ini}: [supervisord] nodaemon: accepted and ignored" in text
    assert loaded.log_level == "DEBUG"  # loglevel means what it means in supervisord
    assert "events_enabled" not in text and "eventlistener" not in text
    assert "[include] files: conf.d/*.conf matches no file" in text


@pytest.mark.parametrize(("keys", "error"), [
    ("", r"\[eventlistener:l\] events: missing"),
    ("events = PROCESS_STATE, NO_SUCH", r"\[eventlistener:l\] events: unknown event type "
     "NO_SUCH$"),
    ("events = TICK_5\nredirect_stderr = true", r"redirect_stderr: true is not allowed"),
    ("events = TICK_5\nresult_handler = mine:handler", r"result_handler: only "
     "supervisor.dispatchers:default_handler"),
    ("events = TICK_5\nbuffer_size = 0", r"buffer_size: must be >= 1"),
    ("events = TICK_5\nbuffer_size = 100000000000", r"buffer_size: at most 100000"),
])
def test_bad_event_listener_sections_are_one_line_errors(tmp_path: Path, keys: str,
                                                         error: str) -> None:
    ini = write(tmp_path / "sv.ini", f"[eventlistener:l]\ncommand = x\n{keys}\n")
    with pytest.raises(config.ConfigError, match=error):
        config.load(str(ini))


def test_event_listener_events_are_upper_cased_and_deduplicated(tmp_path: Path) -> None:
    ini = write(tmp_path / "sv.ini", "[eventlistener:l]\ncommand = x\n"
                "events = process_state, PROCESS_STATE, tick_5\n")
    listener = config.load(str(ini)).programs["l"]
    assert listener.events == ("PROCESS_STATE", "TICK_5")
    assert (listener.priority, listener.group_priority, listener.buffer_size) == (999, -1, 10)


def test_here_and_env_in_supervisor_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv("SV_TEST_LOGS", str(tmp_path / "logs"))
    ini = write(tmp_path / "sv.ini", "[supervisord]\npidfile = %(here)s/sup.pid\n"
                "logfile = %(ENV_SV_TEST_LOGS)s/sv.log\n[program:w]\ncommand = x\n")
    loaded = config.load(str(ini))
    assert loaded.pidfile == f"{tmp_path}/sup.pid"
    assert loaded.logfile == f"{tmp_path}/logs/sv.log"
    assert config.read_settings(str(ini)).logfile == loaded.logfile


def test_header_missing_bracket_warns_and_strict_refuses(tmp_path: Path) -> None:
    """configparser (so supervisord) reads '[program:b' as a key of the section above and
    drops the program silently: daemonkit loads as supervisord does, loudly."""
    ini = write(tmp_path / "sv.ini", "[program:a]\ncommand = x\n[program:b\ncommand = y\n")
    loaded = config.load(str(ini))
    assert list(loaded.programs) == ["a"]
    assert (f"{ini}: line 3: '[program:b' is not a section header (missing ']'?)"
            in "\n".join(loaded.warnings))
    with pytest.raises(ConfigError, match=r"line 3: .*refused: --strict"):
        config.load(str(ini), strict=True)


def test_groups(tmp_path: Path) -> None:
    ini = write(tmp_path / "sv.ini", "[program:a]\ncommand = x\n[program:b]\ncommand = y\n"
                "[group:g]\nprograms = a, b\npriority = 5\n")
    loaded = config.load(str(ini))
    assert loaded.groups == {"g": ("a", "b")}
    assert loaded.programs["a"].instance(0).namespec == "g:a"
    assert loaded.all_groups["g"].priority == 5


@pytest.mark.parametrize("text", [
    'A="1",B="2"', "A=1", "PATH=/usr/bin:/bin,HOME=/root", "A=hello world,B=2",
    "A='x,y',B=\"z\"", "\n    LANG=\"en_US.UTF-8\",\n    LC_ALL=\"C\"", "A=1,B=2,",
    "K=a-b.c+d(e):f", "A=", "A=b=c", "=1", 'A="unterminated',
])
def test_environment_is_split_as_supervisord_splits_it(text: str) -> None:
    from supervisor.datatypes import dict_of_key_value_pairs

    from daemonkit.supervisor.datatypes import key_value_pairs

    try:
        theirs: dict[str, str] | None = dict_of_key_value_pairs(text)
    except ValueError:
        theirs = None
    try:
        ours: dict[str, str] | None = dict(key_value_pairs(text))
    except ValueError:
        ours = None
    assert ours == theirs


def test_env_expansion_in_every_value_and_default_section(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("DK_N", "3")
    monkeypatch.setenv("DK_AUTO", "false")
    monkeypatch.setenv("DK_WAIT", "25")
    monkeypatch.setenv("DK_USER", "nobody")
    ini = write(tmp_path / "sv.ini", "[DEFAULT]\nstartsecs = 0\nstopsignal = INT\n"
                "[program:w]\ncommand = x\nnumprocs = %(ENV_DK_N)s\n"
                "process_name = w%(process_num)s\nautostart = %(ENV_DK_AUTO)s\n"
                "stopwaitsecs = %(ENV_DK_WAIT)s\nuser = %(ENV_DK_USER)s\n"
                "[program:v]\ncommand = y\nstopsignal = HUP\n")
    loaded = config.load(str(ini))
    w = loaded.programs["w"]
    assert (w.numprocs, w.autostart, w.stopwaitsecs, w.user, w.startsecs, w.stopsignal) == (
        3, False, 25.0, "nobody", 0.0, signal.SIGINT)
    assert loaded.programs["v"].stopsignal == signal.SIGHUP  # its own value beats [DEFAULT]
    assert loaded.instance_names() == ["v", "w0", "w1", "w2"]
    assert loaded.warnings == ()  # [DEFAULT] keys are not "unknown" in [supervisord]


def test_unknown_sections_and_keys_warn_and_strict_refuses(tmp_path: Path) -> None:
    ini = write(tmp_path / "sv.ini", "[program:w]\ncommand = x\ncolour = blue\n"
                "[bogus:x]\nkey = 1\n[supervisord]\nfoo = 1\n")
    text = "\n".join(config.load(str(ini)).warnings)
    for expected in ("[program:w] colour: unknown key, ignored", "[bogus:x]: unknown section",
                     "[supervisord] foo: unknown key"):
        assert f"{ini}: {expected}" in text
    with pytest.raises(ConfigError, match=r"colour: unknown key.*\(refused: --strict\)$"):
        config.load(str(ini), strict=True)


@pytest.mark.parametrize("logfile", ["/dev/null", "/dev/stdout", None])
def test_auto_logs_go_to_the_temp_dir_without_a_real_log_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logfile: str | None) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    head = f"[supervisord]\nlogfile = {logfile}\n" if logfile else ""
    ini = write(tmp_path / "sv.ini", head + "[program:p]\ncommand = x\n")
    loaded = config.load(str(ini))
    assert loaded.logfile is None
    assert loaded.programs["p"].instance(0).stdout.path == (
        f"{tmp_path}/tmp/p-stdout---supervisor.log")


def test_inet_server_faces_the_network_only_with_credentials(tmp_path: Path) -> None:
    ini = write(tmp_path / "sv.ini", "[inet_http_server]\nport = *:9001\n"
                "[inet_http_server:second]\nport = 0.0.0.0:9002\nusername = u\npassword = p\n"
                "[program:p]\ncommand = x\n")
    loaded = config.load(str(ini))
    assert [(s.host, s.port) for s in loaded.servers] == [("127.0.0.1", 9001), ("0.0.0.0", 9002)]
    assert "served on 127.0.0.1:9001 only" in "\n".join(loaded.warnings)
    assert loaded.programs["p"].serverurl == "http://127.0.0.1:9001"


def test_a_command_that_does_not_split_loads_and_fails_at_spawn(tmp_path: Path) -> None:
    ini = write(tmp_path / "sv.ini", '[program:p]\ncommand = sh -c "echo #1"\n')
    loaded = config.load(str(ini))  # ' #1"' is a comment: supervisord loads this too
    spec = loaded.programs["p"].instance(0)
    assert spec.argv == () and spec.command_error is not None
    assert "No closing quotation" in "\n".join(loaded.warnings)


def test_lenient_stop_timeout_is_the_full_loads_on_random_files(tmp_path: Path) -> None:
    """stop reads a file that may not load leniently; for any file that does load, its stop
    timeout must be the full load's (a shorter one kills a supervisor still in its grace).
    Random files of programs, [group:]s, event listeners, priorities and depends_on on
    earlier programs or groups (no cycles), fixed seed."""
    rng = random.Random(15)
    compared = 0
    for case in range(300):
        sections, names = [], []
        for index in range(rng.randint(2, 7)):
            kind = "eventlistener" if rng.random() < 0.25 else "program"
            name = f"p{index}"
            lines = [f"[{kind}:{name}]", f"command = {name}",
                     f"stopwaitsecs = {rng.randint(1, 9)}"]
            if kind == "eventlistener":
                lines.append("events = PROCESS_STATE")
            if rng.random() < 0.7:
                lines.append(f"priority = {rng.choice((1, 5, 10, 999))}")
            earlier = names + [f"g{g}" for g in range(index // 3)]
            if earlier and rng.random() < 0.5:
                lines.append(f"depends_on = {rng.choice(earlier)}")
            sections.append("\n".join(lines))
            names.append(name)
        for group in range(len(names) // 3 + 1):
            members = [n for n in names[group * 3:group * 3 + 3] if rng.random() < 0.6
                       and f"[eventlistener:{n}]" not in "".join(sections)]
            if members:
                sections.append(f"[group:g{group}]\nprograms = {','.join(members)}\n"
                                f"priority = {rng.choice((1, 5, 10, 999))}")
        ini = write(tmp_path / f"{case}.ini", "\n\n".join(sections) + "\n")
        try:
            loaded = config.load(str(ini))
        except ConfigError:
            continue  # (a group named in depends_on that came out empty, say)
        compared += 1
        assert config.read_settings(str(ini)).stop_timeout == loaded.stop_timeout(), \
            ini.read_text()
    assert compared > 200
