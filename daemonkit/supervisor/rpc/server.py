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
import hashlib
import hmac
import logging
import os
import socket
import socketserver
import stat
import threading
import time
import xmlrpc.client
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from ...errors import DaemonkitError
from ..config import HttpServerConfig, SupervisorConfig
from ..engine import Engine
from ..faults import Fault, SupervisorError
from .interface import Dispatcher, xml_safe

log = logging.getLogger("daemonkit.supervisor.rpc")

MAX_BODY_BYTES = 4 * 1024 * 1024
BODY_DEADLINE_S = 30.0
CLIENT_TIMEOUT_S = 60.0
MAX_CONNECTIONS = 128
TAIL_POLL_S = 0.1
TAIL_HEAD_BYTES = 1024


class _Handler(BaseHTTPRequestHandler):
    server: _ServerMixin  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"  # supervisorctl keeps its connection
    timeout = CLIENT_TIMEOUT_S
    server_version = "daemonkit-supervisor"
    sys_version = ""

    def address_string(self) -> str:
        address = self.client_address
        return str(address[0]) if isinstance(address, tuple) and address else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("rpc: %s %s", self.address_string(), format % args)

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if urlsplit(self.path).path.rstrip("/") not in ("/RPC2", ""):
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        body = self._body()
        if body is None:
            return
        dispatcher = self.server.dispatcher
        answer = _dispatch(dispatcher, body)
        if answer is None:
            self._plain(HTTPStatus.BAD_REQUEST, b"unmarshallable XML-RPC request\n")
            return
        self._send(HTTPStatus.OK, answer, "text/xml")
        for action in dispatcher.after_answer():
            action()

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path = unquote(urlsplit(self.path).path)
        if path.startswith("/logtail/"):
            self._logtail(path[len("/logtail/"):])
        elif path.rstrip("/") == "/mainlogtail":
            self._follow(self.server.main_log)
        else:
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n")

    # -- authentication -------------------------------------------------------------------

    def _authorized(self) -> bool:
        config = self.server.config
        if config.username is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded.strip(), validate=True).decode(
                    "utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
            if _credentials_ok(config, user, password):
                return True
        self.close_connection = True
        self._send(HTTPStatus.UNAUTHORIZED, b"unauthorized\n", "text/plain",
                   {"WWW-Authenticate": 'Basic realm="default"'})
        return False

    # -- bodies and answers ---------------------------------------------------------------

    def _body(self) -> bytes | None:
        length_text = self.headers.get("Content-Length", "")
        if not length_text.isdigit():
            self.close_connection = True
            self._plain(HTTPStatus.LENGTH_REQUIRED, b"Content-Length required\n")
            return None
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"body larger than {MAX_BODY_BYTES} bytes\n".encode())
            return None
        deadline = time.monotonic() + BODY_DEADLINE_S
        chunks: list[bytes] = []
        received = 0
        while received < length:  # a trickling client gets a deadline, not a thread forever
            if time.monotonic() > deadline:
                self.close_connection = True
                return None
            chunk = self.rfile.read1(length - received)
            if not chunk:
                self.close_connection = True
                return None
            chunks.append(chunk)
            received += len(chunk)
        return b"".join(chunks)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _plain(self, status: HTTPStatus, body: bytes) -> None:
        self._send(status, body, "text/plain; charset=utf-8")

    # -- tails ----------------------------------------------------------------------------

    def _logtail(self, rest: str) -> None:
        namespec, _, channel = rest.partition("/")
        channel = channel.strip("/") or "stdout"
        if channel not in ("stdout", "stderr"):
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n")
            return
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
        if path is None or not os.path.exists(path):
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        try:
            handle = open(path, "rb")  # noqa: SIM115 - reopened on rotation
        except OSError:
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        stopping = self.server.stopping
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/plain;charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            inode = os.fstat(handle.fileno()).st_ino
            size = os.fstat(handle.fileno()).st_size
            position = max(0, size - TAIL_HEAD_BYTES)
            while not stopping.is_set():
                try:
                    current = os.stat(path)
                    if current.st_ino != inode:  # rotated: follow the new file
                        handle.close()
                        handle = open(path, "rb")  # noqa: SIM115
                        inode, position = os.fstat(handle.fileno()).st_ino, 0
                except OSError:
                    pass
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
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _dispatch(dispatcher: Dispatcher, body: bytes) -> bytes | None:
    try:
        params, method = xmlrpc.client.loads(body, use_builtin_types=False)
    except Exception:  # noqa: BLE001 - expat, ValueError, whatever a hostile body raises
        return None
    if not method:
        return None
    try:
        value = dispatcher.call(method, params)
        return xmlrpc.client.dumps((_safe(value),), methodresponse=True,
                                   allow_none=False).encode("utf-8", "xmlcharrefreplace")
    except SupervisorError as exc:
        fault = xmlrpc.client.Fault(int(exc.code), exc.text)
    except Exception as exc:  # a bug must not take the server down: the client learns of it
        log.exception("XML-RPC %s failed", method)
        fault = xmlrpc.client.Fault(int(Fault.FAILED), f"FAILED: {type(exc).__name__}: {exc}")
    return xmlrpc.client.dumps(fault).encode("utf-8", "xmlcharrefreplace")


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
    if expected.startswith("{SHA}"):
        offered = hashlib.sha1(password.encode()).hexdigest()  # supervisord's {SHA} form
        password_ok = hmac.compare_digest(offered, expected[5:].lower())
    else:
        password_ok = hmac.compare_digest(password.encode(), expected.encode())
    return hmac.compare_digest(user.encode(), (config.username or "").encode()) and password_ok


class _ServerMixin:
    daemon_threads = True
    config: HttpServerConfig
    dispatcher: Dispatcher
    engine: Engine
    main_log: str | None
    stopping: threading.Event
    slots: threading.BoundedSemaphore

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
    server.config = config
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
