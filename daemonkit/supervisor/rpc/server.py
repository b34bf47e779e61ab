"""supervisord's HTTP servers: ``[unix_http_server]`` and ``[inet_http_server]``.

What they serve, as supervisord does: ``POST /RPC2`` (XML-RPC, see :mod:`.interface`),
``GET /logtail/NAME[/stdout|stderr]`` and ``GET /mainlogtail`` (a log's end, then what is
appended, chunked, until the client leaves: ``supervisorctl tail -f`` / ``maintail -f``).
Every path needs HTTP Basic credentials when the section sets ``username``/``password``
(a plain password or ``{SHA}`` + hex SHA-1).

A thread per connection (the standard library's servers), so a slow or hostile client holds
only its own thread, never the supervisor's loop: a socket timeout, a deadline for reading a
request body, a cap on its size, and a cap on connections (beyond it a connection is closed
at once instead of queuing a thread).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import socket
import socketserver
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from ...errors import DaemonkitError
from ..config import HttpServerConfig, SupervisorConfig
from ..engine import Engine
from ..faults import Fault, SupervisorError
from ..safeopen import open_reader
from . import xmlcodec
from .interface import Dispatcher, xml_safe

log = logging.getLogger("daemonkit.supervisor.rpc")

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_LINE_BYTES = 8192
MAX_HEADERS = 100
REQUEST_DEADLINE_S = 30.0  # to read one request's line, headers and body
CLIENT_TIMEOUT_S = 60.0  # an idle kept-alive connection
MAX_CONNECTIONS = 128
MAX_REQUESTS_PER_CONNECTION = 100_000
TAIL_POLL_S = 0.1
TAIL_HEAD_BYTES = 1024
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
            431: "Request Header Fields Too Large"}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


class _Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 as supervisorctl and xmlrpc clients speak it: keep-alive, Content-Length
    bodies, chunked streaming for tails. Small on purpose (see xmlcodec for why no
    http.server): request line, at most 100 headers, a body, each under a deadline."""

    server: _ServerMixin  # type: ignore[assignment]
    timeout = CLIENT_TIMEOUT_S

    def handle(self) -> None:
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            try:
                request = self._read_request()
                if request is None:
                    return
                keep = self._serve(request)
            except _BadRequest as exc:
                self._send(exc.status, f"{exc}\n".encode(), "text/plain", close=True)
                return
            except (OSError, ValueError):
                return  # the client stalled, vanished or sent garbage: drop it
            if not keep:
                return

    # -- reading ------------------------------------------------------------------------

    def _line(self, deadline: float) -> bytes:
        if time.monotonic() > deadline:
            raise TimeoutError("request not complete in time")
        line = self.rfile.readline(MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            raise _BadRequest(431, "line too long")
        return line

    def _read_request(self) -> _Request | None:
        line = self.rfile.readline(MAX_LINE_BYTES + 1)  # an idle connection: the timeout
        if not line:
            return None
        deadline = time.monotonic() + REQUEST_DEADLINE_S
        while line in (b"\r\n", b"\n"):  # tolerated before a request line
            line = self._line(deadline)
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequest(400, "bad request line")
        request = _Request(parts[0].upper(), parts[1], parts[2])
        for _ in range(MAX_HEADERS + 1):
            header = self._line(deadline)
            if header in (b"\r\n", b"\n", b""):
                break
            name, sep, value = header.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest(400, "bad header line")
            request.headers[name.strip().lower()] = value.strip()
        else:
            raise _BadRequest(431, "too many headers")
        request.headers["\0deadline"] = str(deadline)
        return request

    def _body(self, request: _Request) -> bytes:
        length_text = request.headers.get("content-length", "")
        if not (length_text.isascii() and length_text.isdigit() and len(length_text) <= 12):
            raise _BadRequest(411, "Content-Length required")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413, f"body larger than {MAX_BODY_BYTES} bytes")
        deadline = float(request.headers["\0deadline"])
        chunks: list[bytes] = []
        received = 0
        while received < length:  # a trickling client gets a deadline, not a thread forever
            if time.monotonic() > deadline:
                raise TimeoutError("request body not complete in time")
            chunk = self.rfile.read1(length - received)
            if not chunk:
                raise ConnectionError("client left mid-body")
            chunks.append(chunk)
            received += len(chunk)
        return b"".join(chunks)

    # -- serving ------------------------------------------------------------------------

    def _serve(self, request: _Request) -> bool:
        keep = request.keep_alive
        if not self._authorized(request):
            if request.method == "POST":
                # read what the client is still sending: closing on it would reset the
                # connection and it would see a broken pipe instead of the 401
                with contextlib.suppress(_BadRequest, OSError):
                    self._body(request)
            self._send(401, b"unauthorized\n", "text/plain", close=True,
                       headers={"WWW-Authenticate": 'Basic realm="default"'})
            return False
        path = unquote(urlsplit(request.target).path)
        if request.method == "POST":
            if path.rstrip("/") not in ("/RPC2", ""):
                raise _BadRequest(404, "not found")
            body = self._body(request)
            dispatcher = self.server.dispatcher
            answer = _dispatch(dispatcher, body)
            if answer is None:
                raise _BadRequest(400, "unmarshallable XML-RPC request")
            self._send(200, answer, "text/xml", close=not keep)
            for action in dispatcher.after_answer():
                action()
            return keep
        if request.method == "GET":
            if path.startswith("/logtail/"):
                self._logtail(path[len("/logtail/"):])
            elif path.rstrip("/") == "/mainlogtail":
                self._follow(self.server.main_log)
            else:
                raise _BadRequest(404, "not found")
            return False  # a tail ends its connection
        raise _BadRequest(405, "use POST /RPC2 or GET /logtail/NAME")

    def _authorized(self, request: _Request) -> bool:
        config = self.server.current_config()
        if config.username is None:
            return True
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return _credentials_ok(config, user, password)

    def _send(self, status: int, body: bytes, content_type: str, *, close: bool = False,
              headers: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                 "Server: daemonkit-supervisor", f"Content-Type: {content_type}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if close:
            lines.append("Connection: close")
        with contextlib.suppress(OSError):
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            self.wfile.flush()

    # -- tails ----------------------------------------------------------------------------

    def _logtail(self, rest: str) -> None:
        namespec, _, channel = rest.partition("/")
        channel = channel.strip("/") or "stdout"
        if channel not in ("stdout", "stderr"):
            raise _BadRequest(404, "not found")
        engine = self.server.engine

        def path() -> str | None:
            _group, instance = engine.lookup(namespec)
            if instance is None:
                return None
            spec = instance.spec.stdout if channel == "stdout" else instance.spec.stderr
            return spec.path if spec is not None else None

        try:
            logfile = engine.call(path, 10.0)
        except SupervisorError:
            logfile = None
        self._follow(logfile)

    def _follow(self, path: str | None) -> None:
        """The last kilobyte, then whatever is appended; rotation and truncation followed."""
        try:
            handle = open_reader(path) if path else None  # reopened on rotation
        except OSError:
            handle = None
        if handle is None or path is None:
            raise _BadRequest(404, "not found")
        stopping = self.server.stopping
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nServer: daemonkit-supervisor\r\n"
                             b"Content-Type: text/plain;charset=utf-8\r\n"
                             b"Transfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\n"
                             b"Connection: close\r\n\r\n")
            inode = os.fstat(handle.fileno()).st_ino
            position = max(0, os.fstat(handle.fileno()).st_size - TAIL_HEAD_BYTES)
            while not stopping.is_set():
                with contextlib.suppress(OSError):
                    if os.stat(path).st_ino != inode:  # rotated: follow the new file
                        handle.close()
                        handle = open_reader(path)
                        inode, position = os.fstat(handle.fileno()).st_ino, 0
                size = os.fstat(handle.fileno()).st_size
                if size < position:
                    self._chunk(b"==> File truncated <==\n")
                    position = 0
                if size > position:
                    handle.seek(position)
                    data = handle.read(min(size - position, 256 * 1024))
                    position += len(data)
                    self._chunk(data)
                    continue
                stopping.wait(TAIL_POLL_S)  # a poll of a file's size, as tail -f does
            self._chunk(b"")
        except OSError:
            pass  # the client left
        finally:
            handle.close()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _dispatch(dispatcher: Dispatcher, body: bytes) -> bytes | None:
    try:
        method, params = xmlcodec.loads(body)
    except xmlcodec.MalformedRequest:
        return None
    try:
        return xmlcodec.dumps_response(_safe(dispatcher.call(method, params)))
    except SupervisorError as exc:
        return xmlcodec.dumps_fault(int(exc.code), exc.text)
    except Exception as exc:  # a bug must not take the server down: the client learns of it
        log.exception("XML-RPC %s failed", method)
        return xmlcodec.dumps_fault(int(Fault.FAILED), f"FAILED: {type(exc).__name__}: {exc}")


def _safe(value: Any) -> Any:
    """What XML-RPC can carry: no None (supervisord never sends nil), no control chars."""
    if value is None:
        return ""
    if isinstance(value, str):
        return xml_safe(value)
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    return value


def _credentials_ok(config: HttpServerConfig, user: str, password: str) -> bool:
    expected = config.password or ""
    if expected.startswith("{SHA}"):  # supervisord's {SHA} form
        import hashlib  # here: it maps OpenSSL (4 MB), only files with {SHA} pay for it

        offered = hashlib.sha1(password.encode()).hexdigest().encode()
        password_ok = _same(offered, expected[5:].lower().encode())
    else:
        password_ok = _same(password.encode(), expected.encode())
    return _same(user.encode(), (config.username or "").encode()) and password_ok


def _same(a: bytes, b: bytes) -> bool:
    """Compare in time that does not depend on where the first difference is (hmac's
    compare_digest would import OpenSSL's libcrypto along with hmac)."""
    difference = len(a) ^ len(b)
    for x, y in zip(a, b.ljust(len(a), b"\0")[:len(a)], strict=True):
        difference |= x ^ y
    return difference == 0


class _ServerMixin:
    daemon_threads = True
    config: HttpServerConfig
    #: the section as last loaded with credentials (see current_config)
    credentials: HttpServerConfig
    dispatcher: Dispatcher
    engine: Engine
    main_log: str | None
    stopping: threading.Event
    slots: threading.BoundedSemaphore

    def current_config(self) -> HttpServerConfig:
        """The section as last loaded: a reload that changes ``username``/``password`` takes
        effect at once (a revoked password must stop working), while the address it is bound
        to changes only with a restart. Credentials are never dropped by a reload: a section
        the reload removed, or left without ``username``, keeps the old ones until that
        restart (the reload's note says one is needed)."""
        running = self.engine.config
        for candidate in running.servers if running is not None else ():
            if candidate.section == self.config.section and candidate.username is not None:
                self.credentials = candidate
                return candidate
        return self.credentials

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            log.warning("rpc: %d connections open; refusing one", MAX_CONNECTIONS)
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("rpc: connection handler failed")


class _UnixServer(_ServerMixin, socketserver.ThreadingUnixStreamServer):
    pass


class _InetServer(_ServerMixin, socketserver.ThreadingTCPServer):
    allow_reuse_address = True


class _InetServer6(_InetServer):
    address_family = socket.AF_INET6


class RPCServers:
    """Every configured XML-RPC server: bound before the privilege drop, served once the
    engine exists, closed (socket files removed) at shutdown."""

    def __init__(self, config: SupervisorConfig, log_: logging.Logger) -> None:
        self.config = config
        self.log = log_
        self.servers: list[_ServerMixin] = []
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()

    def bind(self) -> None:
        try:
            for server_config in self.config.servers:
                self.servers.append(_bind(server_config))
        except BaseException:
            self.stop()
            raise

    def serve(self, engine: Engine, main_log: str | None) -> None:
        for server in self.servers:
            server.dispatcher = Dispatcher(engine, main_log)
            server.engine = engine
            server.main_log = main_log
            server.stopping = self.stopping
            thread = threading.Thread(target=server.serve_forever,  # type: ignore[attr-defined]
                                      args=(0.5,), name=f"daemonkit-rpc-{server.config.kind}",
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
            where = server.config.path or f"{server.config.host}:{server.config.port}"
            self.log.info("XML-RPC (supervisord's interface) on %s %s", server.config.kind,
                          where)
            if server.config.username is None:
                self.log.info("[%s] has no username/password: anyone who can reach %s may "
                              "control the supervisor", server.config.section, where)

    def stop(self) -> None:
        self.stopping.set()
        for server in self.servers:
            with contextlib.suppress(Exception):
                if self.threads:
                    server.shutdown()  # type: ignore[attr-defined]
                server.server_close()  # type: ignore[attr-defined]
            if server.config.kind == "unix":
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(os.lstat(server.config.path).st_mode):
                        os.unlink(server.config.path)
        for thread in self.threads:
            thread.join(5.0)
        self.servers, self.threads = [], []


def _bind(config: HttpServerConfig) -> _ServerMixin:
    server: _ServerMixin
    try:
        if config.kind == "unix":
            _clear_stale_socket(config.path)
            old_umask = os.umask(0o177)
            try:
                server = _UnixServer(config.path, _Handler)
            finally:
                os.umask(old_umask)
            os.chmod(config.path, config.chmod)
            if config.chown != (-1, -1):
                os.chown(config.path, config.chown[0], config.chown[1])
        else:
            host = config.host
            kind = _InetServer6 if ":" in host else _InetServer
            server = kind((host, config.port), _Handler)
    except OSError as exc:
        where = config.path if config.kind == "unix" else f"{config.host or '*'}:{config.port}"
        raise DaemonkitError(f"[{config.section}]: cannot listen on {where}: "
                             f"{exc.strerror or exc}") from exc
    server.config = server.credentials = config
    server.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    return server


def _clear_stale_socket(path: str) -> None:
    """A socket file nobody answers on is a dead supervisor's: remove it. One somebody
    answers on is another supervisor's: refuse, as supervisord does."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(0, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(0, "another program is already listening there")
