"""HTTP-level tests of the web page's server against an API object that runs real processes.

``ProcessAPI`` implements the SupervisorAPI protocol with real ``sh`` children writing real
log files, so every test can check the effect of a request on a process (its pid changed, it
is gone, a new one exists) and not only the HTTP answer. The end-to-end tests against a real
``daemonkit supervise`` are in test_web_supervisor.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import pid_alive, wait_for

from daemonkit import ConfigError
from daemonkit.web.config import WebConfig, parse_web_section
from daemonkit.web.server import WebServer

TOKEN = "correct-horse-battery"


class ProcessAPI:
    """A tiny supervisor: programs of ``sh`` loops that print a line every 50 ms."""

    def __init__(self, workdir: Path, programs: dict[str, int]) -> None:
        self.workdir = workdir
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.instances: dict[str, dict[str, Any]] = {}
        self.all_pids: set[int] = set()
        self.programs = set(programs)  # a program scaled to zero is still known
        for program, count in programs.items():
            for num in range(count):
                self._add(program, num)

    def _add(self, program: str, num: int) -> None:
        name = f"{program}:{num}"
        self.instances[name] = {"name": name, "program": program, "process_num": num,
                                "proc": None, "restarts": 0, "exit_status": None,
                                "since": None,
                                "stdout_logfile": str(self.workdir / f"{program}.log")}
        self._spawn(self.instances[name])

    def _spawn(self, instance: dict[str, Any]) -> None:
        log = open(instance["stdout_logfile"], "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["sh", "-c", f'echo "{instance["name"]} up $$"; '
                         f'while :; do echo "{instance["name"]} tick"; sleep 0.05; done'],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.all_pids.add(proc.pid)
        instance.update(proc=proc, since=time.monotonic())

    def _kill(self, instance: dict[str, Any]) -> None:
        proc = instance["proc"]
        if proc is None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        instance["exit_status"] = proc.wait(10)
        instance["proc"] = None

    def status(self) -> dict[str, Any]:
        with self.lock:
            programs = []
            for item in self.instances.values():
                proc = item["proc"]
                programs.append({
                    "name": item["name"], "program": item["program"],
                    "process_num": item["process_num"],
                    "state": "RUNNING" if proc else "STOPPED",
                    "pid": proc.pid if proc else None,
                    "uptime_s": time.monotonic() - item["since"] if proc else None,
                    "restarts": item["restarts"], "exit_status": item["exit_status"],
                    "stdout_logfile": item["stdout_logfile"]})
            return {"pid": os.getpid(), "uptime_s": time.monotonic() - self.started,
                    "config": str(self.workdir / "fake.ini"), "programs": programs}

    def _targets(self, name: str) -> list[dict[str, Any]]:
        return [i for i in self.instances.values() if name in ("*", i["name"], i["program"])]

    def action(self, name: str, verb: str) -> dict[str, Any]:
        with self.lock:
            for instance in self._targets(name):
                if verb in ("stop", "restart"):
                    self._kill(instance)
                if verb in ("start", "restart") and instance["proc"] is None:
                    self._spawn(instance)
                    instance["restarts"] += verb == "restart"
            return {"ok": True}

    def scale(self, program: str, delta: int) -> dict[str, Any]:
        with self.lock:
            current = [i for i in self.instances.values() if i["program"] == program]
            if len(current) + delta < 0:
                return {"ok": False, "error": f"{program} has only {len(current)} instances"}
            for num in range(len(current), len(current) + delta):
                self._add(program, num)
            for instance in current[len(current) + delta:]:
                self._kill(instance)
                del self.instances[instance["name"]]
            return {"ok": True, "numprocs": len(current) + delta}

    def known(self, name: str) -> bool:
        with self.lock:
            return name == "*" or name in self.programs or bool(self._targets(name))

    def select(self, name: str) -> list[str] | None:
        if not self.known(name):
            return None
        with self.lock:
            return [i["name"] for i in self._targets(name)]

    def pid(self, name: str) -> int | None:
        with self.lock:
            proc = self.instances[name]["proc"] if name in self.instances else None
            return proc.pid if proc else None

    def close(self) -> None:
        with self.lock:
            for instance in self.instances.values():
                self._kill(instance)
        for pid in self.all_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


class Client:
    """http.client with full control over the headers (a browser would add its own)."""

    def __init__(self, server: WebServer) -> None:
        self.host, self.port = server.address
        self.csrf = server.csrf_token

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            connection.request(method, path, body=data, headers=all_headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, \
                response.read()
        finally:
            connection.close()

    def get(self, path: str, **headers: str) -> tuple[int, Any]:
        status, _, body = self.request("GET", path, headers=headers)
        return status, json.loads(body) if body else None

    def post(self, path: str, body: Any = None, csrf: bool = True,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        all_headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        all_headers.update(headers or {})
        status, _, data = self.request("POST", path, body, all_headers)
        return status, json.loads(data) if data else None


def web_config(**items: str) -> WebConfig:
    return parse_web_section({"listen": "127.0.0.1:0", **items}, "/etc/test.ini")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ProcessAPI]:
    fake = ProcessAPI(tmp_path, {"worker": 1, "cron": 1})
    yield fake
    fake.close()


def serve(api: ProcessAPI, config: WebConfig) -> Iterator[WebServer]:
    server = WebServer(api, config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(api: ProcessAPI) -> Iterator[WebServer]:
    yield from serve(api, web_config())


@pytest.fixture
def client(server: WebServer) -> Client:
    return Client(server)


# -- the page and its assets ---------------------------------------------------------------


def test_page_carries_csrf_token_and_strict_headers(client: Client) -> None:
    status, headers, body = client.request("GET", "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert f'<meta name="csrf-token" content="{client.csrf}">' in body.decode()
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert "http://" not in body.decode() and "https://" not in body.decode()  # all local


def test_static_assets_are_served_locally(client: Client) -> None:
    status, headers, body = client.request("GET", "/static/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert b"/api/status" in body and b"X-CSRF-Token" in body
    status, headers, _ = client.request("GET", "/static/app.css")
    assert status == 200 and headers["content-type"].startswith("text/css")
    assert client.request("GET", "/static/../server.py")[0] == 404
    assert client.request("GET", "/static/server.py")[0] == 404


# -- reading -------------------------------------------------------------------------------


def test_status_lists_instances_with_cpu_and_memory(client: Client, api: ProcessAPI) -> None:
    status, document = client.get("/api/status")
    assert status == 200
    assert document["pid"] == os.getpid() and document["config"].endswith("fake.ini")
    by_name = {p["name"]: p for p in document["programs"]}
    assert set(by_name) == {"worker:0", "cron:0"}
    worker = by_name["worker:0"]
    assert worker["pid"] == api.pid("worker:0") and worker["state"] == "RUNNING"
    assert worker["memory_rss"] > 0 and worker["cpu_percent"] is not None
    assert document["supervisor_memory_rss"] > 0


def test_program_and_instance_lookup(client: Client, api: ProcessAPI) -> None:
    status, document = client.get("/api/programs/worker")
    assert status == 200 and [i["name"] for i in document["instances"]] == ["worker:0"]
    status, document = client.get("/api/programs/worker%3A0")
    assert status == 200 and document["instances"][0]["pid"] == api.pid("worker:0")


@pytest.mark.parametrize("path", ["/api/programs/nope", "/api/programs/worker%3A9",
                                  "/api/programs/..%2F..%2Fetc", "/api/programs/%00",
                                  "/api/programs/nope/log", "/api/nothing", "/nothing"])
def test_unknown_names_get_404_and_the_server_keeps_serving(client: Client, path: str) -> None:
    status, document = client.get(path)
    assert status == 404 and document["ok"] is False
    assert client.get("/api/status")[0] == 200


def test_unknown_name_actions_get_404(client: Client, api: ProcessAPI) -> None:
    before = api.pid("worker:0")
    assert client.post("/api/programs/nope/restart")[0] == 404
    assert client.post("/api/programs/nope/scale", {"delta": 1})[0] == 404
    assert client.post("/api/programs/worker/explode")[0] == 404
    assert api.pid("worker:0") == before


# -- acting --------------------------------------------------------------------------------


def test_restart_replaces_the_process(client: Client, api: ProcessAPI) -> None:
    before = api.pid("worker:0")
    assert before is not None
    status, answer = client.post("/api/programs/worker%3A0/restart")
    assert status == 200 and answer["ok"] is True
    after = api.pid("worker:0")
    assert after is not None and after != before
    assert pid_alive(after) and not pid_alive(before)


def test_stop_then_start(client: Client, api: ProcessAPI) -> None:
    before = api.pid("cron:0")
    assert before is not None
    assert client.post("/api/programs/cron/stop")[0] == 200
    assert not pid_alive(before)
    instance = client.get("/api/programs/cron")[1]["instances"][0]
    assert instance["state"] == "STOPPED" and instance["pid"] is None
    assert instance["cpu_percent"] is None
    assert client.post("/api/programs/cron/start")[0] == 200
    assert pid_alive(api.pid("cron:0") or 0)


def test_stop_all_and_restart_all(client: Client, api: ProcessAPI) -> None:
    pids = [api.pid("worker:0"), api.pid("cron:0")]
    assert client.post("/api/programs/%2A/stop")[0] == 200
    assert all(not pid_alive(pid or 0) for pid in pids)
    assert client.post("/api/programs/*/restart")[0] == 200
    assert all(pid_alive(api.pid(name) or 0) for name in ("worker:0", "cron:0"))


def test_scale_up_and_down(client: Client, api: ProcessAPI) -> None:
    status, answer = client.post("/api/programs/worker/scale", {"delta": 1})
    assert status == 200 and answer["numprocs"] == 2
    added = api.pid("worker:1")
    assert added is not None and pid_alive(added)
    names = [i["name"] for i in client.get("/api/programs/worker")[1]["instances"]]
    assert names == ["worker:0", "worker:1"]
    status, answer = client.post("/api/programs/worker/scale", {"delta": -1})
    assert status == 200 and answer["numprocs"] == 1
    assert not pid_alive(added)
    assert client.post("/api/programs/worker/scale", {"delta": -1})[0] == 200
    status, answer = client.post("/api/programs/worker/scale", {"delta": -1})
    assert status == 409 and "only 0" in answer["error"]
    _, document = client.get("/api/status")  # no instance left, still listed for the page
    assert "worker" in document["program_names"]
    assert "worker" not in {p["program"] for p in document["programs"]}


@pytest.mark.parametrize("body", [{}, {"delta": 0}, {"delta": "1"}, {"delta": True},
                                  {"delta": 1.5}, [1], {"delta": 10_000}])
def test_scale_rejects_bad_bodies(client: Client, api: ProcessAPI, body: Any) -> None:
    status, answer = client.post("/api/programs/worker/scale", body)
    assert status == 400 and "delta" in answer["error"]
    assert len(api.status()["programs"]) == 2


def test_scale_rejects_an_instance_name(client: Client) -> None:
    assert client.post("/api/programs/worker%3A0/scale", {"delta": 1})[0] == 400


def test_bodies_that_are_not_json_or_too_big(client: Client) -> None:
    status, _, body = client.request("POST", "/api/programs/worker/scale", b"{delta: 1",
                                     {"X-CSRF-Token": client.csrf})
    assert status == 400 and b"JSON" in body
    status, _, _ = client.request("POST", "/api/programs/worker/scale",
                                  {"delta": 1, "pad": "x" * 5000},
                                  {"X-CSRF-Token": client.csrf})
    assert status == 413


# -- CSRF: every refusal changes nothing ----------------------------------------------------


@pytest.mark.parametrize("headers", [
    {},
    {"X-CSRF-Token": "forged"},
    {"X-CSRF-Token": "CSRF", "Origin": "http://evil.example"},
    {"X-CSRF-Token": "CSRF", "Origin": "null"},
    {"X-CSRF-Token": "CSRF", "Sec-Fetch-Site": "cross-site"},
    {"X-CSRF-Token": "CSRF", "Referer": "http://evil.example/page"},
], ids=["no-token", "wrong-token", "foreign-origin", "null-origin", "cross-site-fetch",
        "foreign-referer"])
def test_csrf_refusals_are_403_and_change_nothing(client: Client, api: ProcessAPI,
                                                  headers: dict[str, str]) -> None:
    headers = {k: client.csrf if v == "CSRF" else v for k, v in headers.items()}
    before = api.pid("worker:0")
    for path, body in [("/api/programs/worker/restart", None),
                       ("/api/programs/worker/stop", None),
                       ("/api/programs/worker/scale", {"delta": 1})]:
        status, answer = client.post(path, body, csrf=False, headers=headers)
        assert status == 403, (path, answer)
    assert api.pid("worker:0") == before and pid_alive(before or 0)
    assert len(api.status()["programs"]) == 2


def test_same_origin_browser_post_is_accepted(client: Client, api: ProcessAPI) -> None:
    origin = f"http://{client.host}:{client.port}"
    before = api.pid("worker:0")
    status, _ = client.post("/api/programs/worker/restart", headers={
        "Origin": origin, "Sec-Fetch-Site": "same-origin", "Referer": origin + "/"})
    assert status == 200 and api.pid("worker:0") != before


def test_get_never_acts(client: Client, api: ProcessAPI) -> None:
    before = api.pid("worker:0")
    for verb in ("start", "stop", "restart", "scale"):
        status, _ = client.get(f"/api/programs/worker/{verb}")
        assert status == 405
    assert api.pid("worker:0") == before


def test_dns_rebinding_host_is_refused_without_credentials(client: Client) -> None:
    status, _ = client.get("/api/status", Host="evil.example:7865")
    assert status == 403
    for host in ("localhost:1", "127.0.0.1", "[::1]:7865"):
        assert client.get("/api/status", Host=host)[0] == 200


def test_allowed_hosts_extends_the_host_check(api: ProcessAPI) -> None:
    for server in serve(api, web_config(allowed_hosts="box.lan, other.lan")):
        assert Client(server).get("/api/status", Host="box.lan:7865")[0] == 200
        assert Client(server).get("/api/status", Host="evil.lan:7865")[0] == 403


# -- credentials ----------------------------------------------------------------------------


@pytest.fixture
def token_client(api: ProcessAPI) -> Iterator[Client]:
    for server in serve(api, web_config(token=TOKEN)):
        yield Client(server)


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()


def test_token_required_everywhere(token_client: Client) -> None:
    for path in ("/", "/api/status", "/api/programs/worker", "/static/app.js", "/api/csrf"):
        status, headers, _ = token_client.request("GET", path)
        assert status == 401, path
        assert headers["www-authenticate"].startswith("Basic")
    for wrong in ("Bearer nope-nope-nope", basic("nope-nope"), "Basic !!!", "Digest x"):
        assert token_client.get("/api/status", Authorization=wrong)[0] == 401
    assert token_client.get("/api/status", Authorization=f"Bearer {TOKEN}")[0] == 200
    assert token_client.get("/api/status", Authorization=basic(TOKEN))[0] == 200
    # any Host is fine once credentials are required (rebinding cannot guess the token)
    assert token_client.get("/api/status", Authorization=f"Bearer {TOKEN}",
                            Host="box.example")[0] == 200


def test_token_login_sets_a_session_cookie(token_client: Client) -> None:
    status, headers, _ = token_client.request("GET", "/?token=wrong-token-here")
    assert status == 401
    status, headers, _ = token_client.request("GET", f"/?token={TOKEN}")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert token_client.get("/api/status", Cookie=cookie.split(";")[0])[0] == 200
    assert token_client.get("/api/status", Cookie="daemonkit_web=forged")[0] == 401


def test_authenticated_post_still_needs_csrf(token_client: Client, api: ProcessAPI) -> None:
    before = api.pid("worker:0")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert token_client.post("/api/programs/worker/stop", csrf=False, headers=auth)[0] == 403
    assert api.pid("worker:0") == before
    assert token_client.post("/api/programs/worker/stop", headers={})[0] == 401
    assert api.pid("worker:0") == before
    assert token_client.post("/api/programs/worker/stop", headers=auth)[0] == 200
    assert api.pid("worker:0") is None


def test_password_file_enables_basic_auth(api: ProcessAPI, tmp_path: Path) -> None:
    secret = tmp_path / "web.pass"
    secret.write_text("s3cret-password\n")
    secret.chmod(0o600)
    config = parse_web_section({"listen": "127.0.0.1:0", "password_file": "web.pass"},
                               str(tmp_path / "sv.ini"))
    for server in serve(api, config):
        client = Client(server)
        assert client.get("/api/status")[0] == 401
        assert client.get("/api/status", Authorization=basic("s3cret-password"))[0] == 200
        assert client.get("/api/status", Authorization=basic("s3cret-passwor"))[0] == 401


# -- the log view --------------------------------------------------------------------------


def test_log_tail_then_follow(client: Client, api: ProcessAPI, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    wait_for(lambda: log.exists() and log.read_text().count("\n") >= 30, 10,
             message="30 log lines")
    status, first = client.get("/api/programs/worker/log?lines=5")
    assert status == 200 and first["reset"] is True and first["path"] == str(log)
    lines = first["text"].splitlines()
    assert len(lines) == 5 and all(line.startswith("worker:0 ") for line in lines)

    def grown() -> dict[str, Any] | None:
        _, chunk = client.get(f"/api/programs/worker/log?offset={first['offset']}"
                              f"&inode={first['inode']}")
        return chunk if chunk["text"].count("\n") >= 3 else None

    chunk = wait_for(grown, 10, message="new log lines")
    assert chunk["reset"] is False and chunk["offset"] > first["offset"]
    with open(log, "rb") as handle:  # exactly the bytes appended since the first read
        handle.seek(first["offset"])
        assert handle.read(chunk["offset"] - first["offset"]).decode() == chunk["text"]


def test_log_follow_restarts_after_truncation(client: Client, tmp_path: Path) -> None:
    log = tmp_path / "cron.log"
    wait_for(lambda: log.exists() and log.stat().st_size > 200, 10, message="log grows")
    _, first = client.get("/api/programs/cron/log")
    log.write_text("")  # copytruncate-style rotation
    _, chunk = client.get(f"/api/programs/cron/log?offset={first['offset']}"
                          f"&inode={first['inode']}")
    assert chunk["reset"] is True and chunk["offset"] < first["offset"]
    assert client.get("/api/programs/cron/log?offset=x")[0] == 400


# -- config --------------------------------------------------------------------------------


def test_non_loopback_without_credentials_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_web_section({"listen": "0.0.0.0:7865"}, "/etc/sv.ini")
    message = str(refused.value)
    assert message.startswith("/etc/sv.ini: [web] listen:") and "token" in message
    assert "\n" not in message
    with pytest.raises(ConfigError):
        parse_web_section({"listen": ":7865"}, "/etc/sv.ini")
    with pytest.raises(ConfigError):
        parse_web_section({"listen": "[::]:7865"}, "/etc/sv.ini")
    config = parse_web_section({"listen": "0.0.0.0:7865", "token": TOKEN}, "/etc/sv.ini")
    assert config.requires_auth and not config.loopback and TOKEN not in repr(config)


def test_loopback_defaults() -> None:
    config = parse_web_section({}, "/etc/sv.ini")
    assert (config.host, config.port, config.requires_auth) == ("127.0.0.1", 7865, False)
    assert parse_web_section({"listen": "[::1]:0"}, "x").host == "::1"
    assert parse_web_section({"listen": "localhost:80"}, "x").loopback


@pytest.mark.parametrize(("items", "key"), [
    ({"listen": "7865"}, "listen"), ({"listen": "127.0.0.1:99999"}, "listen"),
    ({"listen": "::1:7865"}, "listen"), ({"listen": "example.com:80"}, "listen"),
    ({"token": "short"}, "token"), ({"colour": "red"}, "colour"),
    ({"log_lines": "0"}, "log_lines"), ({"password_file": "/nonexistent/pw"}, "password_file"),
])
def test_bad_settings_name_the_key(items: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^/etc/sv\.ini: \[web\] {key}: "):
        parse_web_section(items, "/etc/sv.ini")


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("long-enough-password\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        parse_web_section({"listen": "0.0.0.0:1", "password_file": str(secret)}, "x.ini")
    secret.chmod(0o600)
    config = parse_web_section({"listen": "0.0.0.0:1", "password_file": str(secret)}, "x.ini")
    assert config.password == "long-enough-password"


# -- robustness ----------------------------------------------------------------------------


def test_stalled_clients_do_not_block_other_requests(server: WebServer,
                                                     client: Client) -> None:
    stalled = []
    try:
        for _ in range(20):  # half a request line each, then silence
            sock = socket.create_connection(server.address, timeout=5)
            sock.sendall(b"GET /api/sta")
            stalled.append(sock)
        began = time.monotonic()
        for _ in range(10):
            assert client.get("/api/status")[0] == 200
        elapsed = time.monotonic() - began
        assert elapsed < 5.0, f"10 status requests took {elapsed:.2f}s beside stalled clients"
    finally:
        for sock in stalled:
            sock.close()


def test_stop_returns_while_a_client_is_stalled(api: ProcessAPI) -> None:
    server = WebServer(api, web_config())
    server.start()
    sock = socket.create_connection(server.address, timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\n")  # headers never finished
    try:
        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < 3.0
    finally:
        sock.close()


def test_listens_on_ipv6_loopback(api: ProcessAPI) -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    for server in serve(api, parse_web_section({"listen": "[::1]:0"}, "x.ini")):
        host, port = server.address
        assert host == "::1" and port > 0
        connection = http.client.HTTPConnection("::1", port, timeout=10)
        try:
            connection.request("GET", "/api/status")  # Host: [::1]:port, on the allow list
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["programs"]
        finally:
            connection.close()


# -- hostile clients (issue 14) -------------------------------------------------------------


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """True once the server has closed ``sock`` (a read returns EOF or a reset)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if sock.recv(4096) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def test_a_trickling_client_is_dropped_at_the_request_deadline(
        api: ProcessAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    import daemonkit.web.server as web_server

    monkeypatch.setattr(web_server, "REQUEST_TIMEOUT_S", 1.0)
    for server in serve(api, web_config()):
        sock = socket.create_connection(server.address, timeout=5)
        try:
            began = time.monotonic()
            for byte in b"GET /api/status HTTP/1.1\r\nX-Slow: " + b"a" * 40:
                try:
                    sock.sendall(bytes([byte]))  # a byte every 0.1 s: never idle for long
                except OSError:
                    break
                if time.monotonic() - began > 3.0:
                    break
                time.sleep(0.1)  # the trickle itself is what the test is about
            assert _closed_by_server(sock, 3.0), "a trickling client outlived the deadline"
            assert time.monotonic() - began < 4.0
        finally:
            sock.close()


def test_a_crowd_of_tricklers_cannot_hold_the_page(server: WebServer, client: Client) -> None:
    from daemonkit.web.server import MAX_CONNECTIONS

    crowd: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS + 20):  # more than the cap, each mid request line
            sock = socket.create_connection(server.address, timeout=5)
            sock.sendall(b"GET /api/sta")
            crowd.append(sock)
        for _ in range(5):  # every honest request is served at once, before any deadline
            began = time.monotonic()
            assert client.get("/api/status")[0] == 200
            assert time.monotonic() - began < 5.0
        evicted = sum(_closed_by_server(sock, 0.01) for sock in crowd)
        assert evicted >= 20, f"only {evicted} of the crowd made room"
    finally:
        for sock in crowd:
            sock.close()


@pytest.mark.parametrize("query", ["offset=%C2%B2", "offset=" + "9" * 5000, "inode=%C2%B2",
                                   "lines=%D9%A3", "offset=-1", "offset=1e3"])
def test_bad_log_numbers_are_a_400_not_a_traceback(client: Client, query: str) -> None:
    status, body = client.get(f"/api/programs/worker/log?{query}")
    assert status == 400, body
    assert "non-negative integer" in body["error"]


def test_bad_content_length_is_a_400(server: WebServer) -> None:
    sock = socket.create_connection(server.address, timeout=5)
    try:
        sock.sendall(b"POST /api/programs/worker/stop HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Length: \xc2\xb2\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")
    finally:
        sock.close()


def test_the_login_token_never_reaches_the_log(api: ProcessAPI,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="daemonkit.web")
    for server in serve(api, web_config(token=TOKEN)):
        status, _, _ = Client(server).request("GET", f"/?token={TOKEN}")
        assert status == 303
        wait_for(lambda: "redacted" in caplog.text, 5.0, message="the request in the log")
    assert TOKEN not in caplog.text


_AS_NOBODY = """
import http.client, json, sys
host, port, path, method = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
headers = {"X-CSRF-Token": sys.argv[5]} if len(sys.argv) > 5 else {}
if len(sys.argv) > 6:
    headers["Authorization"] = "Bearer " + sys.argv[6]
connection = http.client.HTTPConnection(host, port, timeout=20)
connection.request(method, path, headers=headers)
response = connection.getresponse()
print(response.status, response.read().decode())
"""


def _as_nobody(server: WebServer, method: str, path: str, *extra: str) -> tuple[int, str]:
    host, port = server.address
    result = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c",
                             _AS_NOBODY, host, str(port), path, method, *extra],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    status, _, body = result.stdout.partition(" ")
    return int(status), body


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as user nobody")
def test_without_credentials_other_local_users_are_refused(server: WebServer, client: Client,
                                                           api: ProcessAPI) -> None:
    pid = api.instances["worker:0"]["proc"].pid
    status, body = _as_nobody(server, "GET", "/api/status")
    assert status == 403 and "without token or password_file" in body
    status, body = _as_nobody(server, "POST", "/api/programs/worker/stop", client.csrf)
    assert status == 403
    assert pid_alive(pid), "a refused user stopped a program"
    assert client.get("/api/status")[0] == 200  # root (the supervisor's user) still is served


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as user nobody")
def test_with_a_token_any_user_holding_it_is_served(api: ProcessAPI) -> None:
    for server in serve(api, web_config(token=TOKEN)):
        assert _as_nobody(server, "GET", "/api/status")[0] == 401
        assert _as_nobody(server, "GET", "/api/status", "-", TOKEN)[0] == 200
