"""The web status page and its JSON API, served from threads the supervisor never waits on.

Why the standard library's ``ThreadingHTTPServer`` and no framework: the page is one HTML
file, one script and one stylesheet plus seven JSON routes; a framework would add a
dependency (and an event loop or a WSGI server) to a process whose whole job is staying up.
A thread per connection keeps the one property that matters here: a slow or hung client
holds only its own thread. On top of it:

* a deadline for each whole request (``REQUEST_TIMEOUT_S`` from the moment the server waits
  for it to its last body byte), not only a timeout per read: a client trickling a byte
  every few seconds is dropped as surely as a silent one;
* a cap on concurrent connections; at the cap, the connection that has been waiting longest
  for its request makes room for the new one (a crowd of trickling clients cannot hold the
  page; one that sends its request promptly is always served);
* a bounded request body, and a bounded time for writing each answer.
* without credentials, the page answers only the users the control socket answers (root and
  the supervisor's own user), told apart by :mod:`daemonkit.web.peer`.

The supervisor is reached only through :class:`SupervisorAPI` (each call is handed to the
supervisor's loop and answered there); CPU/memory figures and log reads happen here.

Routes (auth and CSRF rules in :mod:`daemonkit.web.auth`)::

    GET  /                                 the page (carries the CSRF token)
    GET  /static/app.js|app.css            its assets, served from the package
    GET  /api/csrf                         {"csrf_token"} for scripts
    GET  /api/status                       supervisor + every instance, with cpu/memory
    GET  /api/programs/NAME                one program (or instance NAME:N); 404 if unknown
    GET  /api/programs/NAME/log?offset=&inode=&lines=   its stdout log, tail then follow
    POST /api/programs/NAME/start|stop|restart          NAME may be * (all)
    POST /api/programs/NAME/scale          body {"delta": 1} or {"delta": -1}
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import DaemonkitError
from ..supervisor.api import SupervisorAPI
from .auth import COOKIE, Guard
from .config import WebConfig
from .logtail import read_log
from .metrics import Sampler
from .peer import loopback_peer_uid

log = logging.getLogger("daemonkit.web")

CLIENT_TIMEOUT_S = 20.0  # writing one answer
REQUEST_TIMEOUT_S = 10.0  # receiving one whole request, keep-alive wait included
MAX_CONNECTIONS = 256
MAX_NUMBER_DIGITS = 18  # query numbers (offsets, inodes) fit in 63 bits
MAX_BODY_BYTES = 4096
MAX_SCALE_DELTA = 100
VERBS = ("start", "stop", "restart")
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8",
                "app.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'none'",
    "Cache-Control": "no-store",
}


class HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_SECRET_IN_QUERY = re.compile(r"(token=)[^&\s]*", re.IGNORECASE)


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def query_number(text: str) -> int | None:
    """An ASCII decimal of at most ``MAX_NUMBER_DIGITS`` digits, else None.

    ``str.isdigit`` alone accepts ``"²"`` (which ``int`` refuses) and 5,000 digits (which
    ``int`` refuses beyond 4,300): both were answered with a 500 and a traceback."""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_NUMBER_DIGITS:
        return None
    return int(text)


class _Connection:
    """One client's socket and whether it is still sending us its request (evictable)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = time.monotonic() + REQUEST_TIMEOUT_S
        self.waiting_since: float | None = time.monotonic()

    def expect_request(self) -> None:
        now = time.monotonic()
        self.deadline = now + REQUEST_TIMEOUT_S
        self.waiting_since = now

    def request_received(self) -> None:
        self.waiting_since = None


class _DeadlineReader(io.RawIOBase):
    """The socket's read side, refusing to wait past the connection's request deadline."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.connection.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request took too long")
        self.connection.sock.settimeout(remaining)
        return self.connection.sock.recv_into(buffer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung request must never hold up stop()
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: WebServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self._connections_lock = threading.Lock()
        self.connections: dict[int, _Connection] = {}  # by id() of the socket
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        connection = _Connection(request)
        with self._connections_lock:
            if len(self.connections) >= MAX_CONNECTIONS and not self._evict_slowest():
                log.warning("web: %d connections busy answering; refusing %s",
                            MAX_CONNECTIONS, client_address)
                self.shutdown_request(request)
                return
            self.connections[id(request)] = connection
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def _evict_slowest(self) -> bool:
        """Cut the connection waiting longest for its request; False if none is waiting."""
        waiting = [c for c in self.connections.values() if c.waiting_since is not None]
        if not waiting:
            return False
        slowest = min(waiting, key=lambda c: c.waiting_since or 0.0)
        del self.connections[id(slowest.sock)]
        try:
            slowest.sock.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once
        except OSError:
            pass
        return True

    def _forget(self, request: Any) -> None:
        with self._connections_lock:
            self.connections.pop(id(request), None)

    def connection_of(self, request: Any) -> _Connection:
        with self._connections_lock:
            return self.connections.get(id(request)) or _Connection(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: the page polls every 2 s
    timeout = CLIENT_TIMEOUT_S
    server_version = "daemonkit-web"
    sys_version = ""

    peer_uid: int | None = None

    def setup(self) -> None:
        super().setup()
        self.tracked = self.server.connection_of(self.connection)
        self.rfile = io.BufferedReader(_DeadlineReader(self.tracked))
        if not self.server.app.config.requires_auth:
            self.peer_uid = loopback_peer_uid(self.client_address[:2],
                                              self.connection.getsockname()[:2],
                                              self.server.address_family)

    def handle_one_request(self) -> None:
        self.tracked.expect_request()
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        # the request line may carry /?token=...: never write a secret to the log
        message = _SECRET_IN_QUERY.sub(r"\1<redacted>", format % args)
        log.debug("web: %s %s", self.address_string(), message)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        try:
            status, body, content_type, extra = self._answer(method)
        except OSError:  # the client stalled or vanished mid-body: drop it, answer nothing
            self.close_connection = True
            return
        self.connection.settimeout(CLIENT_TIMEOUT_S)  # sendall: a bound on the whole answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **extra}.items():
            self.send_header(name, value)
        try:
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client went away or stopped reading: its loss only
            self.close_connection = True

    def _answer(self, method: str) -> Response:
        """OSError escapes only from reading the request body (the client's fault)."""
        try:
            request_body = self._body(method)
        except HTTPError as exc:
            return _error_response(exc)
        self.tracked.request_received()
        try:
            return self.server.app.respond(
                method, self.path, {k.lower(): v for k, v in self.headers.items()},
                request_body, self.peer_uid)
        except HTTPError as exc:
            return _error_response(exc)
        except Exception:  # one bad request must not take the server down
            log.exception("web: %s %s failed", method, self.path)
            return (HTTPStatus.INTERNAL_SERVER_ERROR,
                    b'{"ok": false, "error": "internal error (see the supervisor log)"}',
                    "application/json", {})

    def _body(self, method: str) -> bytes:
        """The POST body; HTTPError for a bad length, OSError if the client stalls."""
        if method != "POST":
            return b""
        length = query_number(self.headers.get("Content-Length", "0").strip())
        if length is None:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"body larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)


Response = tuple[HTTPStatus, bytes, str, dict[str, str]]


class WebServer:
    """The page for one supervisor; ``start`` returns once the socket is bound."""

    def __init__(self, api: SupervisorAPI, config: WebConfig) -> None:
        self.api = api
        self.config = config
        self.guard = Guard(config, secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self.sampler = Sampler()
        self._names_lock = threading.Lock()
        self._seen_programs: set[str] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: without credentials, the users the page answers: the control socket's rule
        self.allowed_uids = {0, os.getuid()}

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the web server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def csrf_token(self) -> str:
        return self.guard.csrf_token

    def start(self) -> None:
        host = self.config.host or "0.0.0.0"  # an empty host: every IPv4 address
        try:
            self._server = _Server((host, self.config.port), self)
        except OSError as exc:
            raise DaemonkitError(f"web: cannot listen on {host}:{self.config.port}: "
                                 f"{exc.strerror}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.5,),
                                        name="daemonkit-web", daemon=True)
        self._thread.start()
        log.info("web: status page on http://%s", _netloc(*self.address))

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
        self._server = None

    # -- request handling (a thread per connection) ----------------------------------------

    def respond(self, method: str, target: str, headers: dict[str, str],
                body: bytes, peer_uid: int | None = None) -> Response:
        """``peer_uid``: the local user behind a connection (None: unknown or another host)."""
        if not self.guard.host_allowed(headers.get("host")):
            raise HTTPError(HTTPStatus.FORBIDDEN, "unexpected Host header")
        if not self.config.requires_auth and peer_uid not in self.allowed_uids:
            who = "an unknown user" if peer_uid is None else f"uid {peer_uid}"
            raise HTTPError(HTTPStatus.FORBIDDEN,
                            f"{who} may not use this page: without token or password_file "
                            "it answers only root and the supervisor's own user")
        url = urlsplit(target)
        query = parse_qs(url.query)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        if method == "GET" and url.path == "/" and "token" in query:
            return self._login(query["token"][0])
        if not self.guard.authenticated(headers.get("authorization"), headers.get("cookie")):
            raise HTTPError(HTTPStatus.UNAUTHORIZED, "authentication required")
        if method == "POST":
            refusal = self.guard.csrf_refusal(headers)
            if refusal is not None:
                raise HTTPError(HTTPStatus.FORBIDDEN, refusal)
        return self._route(method, segments, query, body)

    def _route(self, method: str, segments: list[str], query: dict[str, list[str]],
               body: bytes) -> Response:
        def only(allowed: str) -> None:
            if method != allowed:
                raise HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allowed}")

        match segments:
            case [""]:
                only("GET")
                return self._page()
            case ["static", name] if name in STATIC_FILES:
                only("GET")
                return HTTPStatus.OK, _static(name), STATIC_FILES[name], {}
            case ["favicon.ico"]:
                return HTTPStatus.NO_CONTENT, b"", "image/x-icon", {}
            case ["api", "csrf"]:
                only("GET")
                return _json({"csrf_token": self.csrf_token})
            case ["api", "status"]:
                only("GET")
                return _json(self.status())
            case ["api", "programs", name]:
                only("GET")
                return _json(self.program(name))
            case ["api", "programs", name, "log"]:
                only("GET")
                return _json(self.log_chunk(name, query))
            case ["api", "programs", name, verb] if verb in VERBS:
                only("POST")
                return self.act(name, verb)
            case ["api", "programs", name, "scale"]:
                only("POST")
                return self.scale(name, body)
        raise HTTPError(HTTPStatus.NOT_FOUND, "no such page")

    def _login(self, token: str) -> Response:
        if not self.config.requires_auth or not self.guard.secret_ok(token):
            raise HTTPError(HTTPStatus.UNAUTHORIZED, "wrong token")
        cookie = f"{COOKIE}={self.guard.session}; Path=/; HttpOnly; SameSite=Strict"
        return HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie}

    def _page(self) -> Response:
        html = _static("index.html").decode().replace("{{csrf_token}}", self.csrf_token)
        return HTTPStatus.OK, html.encode(), "text/html; charset=utf-8", {}

    def status(self) -> dict[str, Any]:
        status = dict(self.api.status())
        programs = [dict(p) for p in status.get("programs", [])]
        removed = [dict(p) for p in status.get("removed", [])]  # still stopping
        pids = [p["pid"] for p in [*programs, *removed] if isinstance(p.get("pid"), int)]
        own_pid = status.get("pid")
        figures = self.sampler.sample([*pids, *([own_pid] if isinstance(own_pid, int) else [])])
        for program in [*programs, *removed]:
            pid = program.get("pid")
            empty = {"cpu_percent": None, "memory_rss": None}
            program.update(figures.get(pid, empty) if isinstance(pid, int) else empty)
        status["programs"] = programs
        status["removed"] = removed
        status["program_names"] = self._program_names(programs)
        if isinstance(own_pid, int):
            status.update({f"supervisor_{k}": v for k, v in figures[own_pid].items()})
        status["auth"] = self.config.requires_auth
        return status

    def _program_names(self, instances: list[dict[str, Any]]) -> list[str]:
        """Programs in order, including those scaled down to no instance (the page still
        needs their row, to add one back); the API lists instances only."""
        present = {str(i.get("program")) for i in instances}
        with self._names_lock:
            absent = {n for n in self._seen_programs - present if self.api.known(n)}
            self._seen_programs = present | absent
            return sorted(self._seen_programs)

    def _known(self, name: str) -> None:
        if not name or not self.api.known(name):
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no such program or instance: {name}")

    def _instances(self, name: str) -> list[dict[str, Any]]:
        """The supervisor decides what a name means (program, instance, group, ``*``)."""
        wanted = set(self.api.select(name) or [])
        return [p for p in self.status()["programs"] if p.get("name") in wanted]

    def program(self, name: str) -> dict[str, Any]:
        self._known(name)
        return {"name": name, "instances": self._instances(name)}

    def log_chunk(self, name: str, query: dict[str, list[str]]) -> dict[str, Any]:
        self._known(name)
        paths = [p.get("stdout_logfile") for p in self._instances(name)]
        path = next((p for p in paths if p), None)
        if path is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{name} has no stdout_logfile")

        def number(key: str) -> int | None:
            text = query.get(key, [""])[0]
            if not text:
                return None
            value = query_number(text)
            if value is None:
                raise HTTPError(HTTPStatus.BAD_REQUEST, f"{key}: a non-negative integer "
                                f"of at most {MAX_NUMBER_DIGITS} digits")
            return value

        lines = min(number("lines") or self.config.log_lines, 10_000)
        try:
            chunk = read_log(path, number("offset"), number("inode"), lines)
        except FileNotFoundError:
            return {"name": name, "path": path, "text": "", "offset": 0, "inode": None,
                    "reset": True, "more": False}
        except OSError as exc:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{path}: {exc.strerror}") from exc
        return {"name": name, "path": path, **chunk.as_json()}

    def act(self, name: str, verb: str) -> Response:
        self._known(name)
        answer = self.api.action(name, verb)
        log.info("web: %s %s -> %s", verb, name, "ok" if answer.get("ok") else
                 answer.get("error"))
        return _json(answer, HTTPStatus.OK if answer.get("ok") else HTTPStatus.CONFLICT)

    def scale(self, name: str, body: bytes) -> Response:
        try:
            request = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "body must be JSON") from exc
        delta = request.get("delta") if isinstance(request, dict) else None
        if (not isinstance(delta, int) or isinstance(delta, bool) or delta == 0
                or abs(delta) > MAX_SCALE_DELTA):
            raise HTTPError(HTTPStatus.BAD_REQUEST,
                            'body must be {"delta": N}, N a non-zero integer like 1 or -1')
        if name == "*" or ":" in name:
            self._known(name)
            raise HTTPError(HTTPStatus.BAD_REQUEST, "scale takes a program name, not "
                                                    "an instance")
        self._known(name)
        answer = self.api.scale(name, delta)
        log.info("web: scale %s %+d -> %s", name, delta, "ok" if answer.get("ok") else
                 answer.get("error"))
        return _json(answer, HTTPStatus.OK if answer.get("ok") else HTTPStatus.CONFLICT)


def _error_response(exc: HTTPError) -> Response:
    extra = {}
    if exc.status == HTTPStatus.UNAUTHORIZED:
        extra["WWW-Authenticate"] = 'Basic realm="daemonkit", charset="UTF-8"'
    body = json.dumps({"ok": False, "error": exc.message}).encode()
    return exc.status, body, "application/json", extra


def _json(document: Any, status: HTTPStatus = HTTPStatus.OK) -> Response:
    return status, json.dumps(document).encode(), "application/json", {}


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
