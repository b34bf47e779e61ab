"""supervisord's ``supervisor.*`` and ``system.*`` XML-RPC methods, over daemonkit's engine.

The contract is supervisord 4's ``supervisor/rpcinterface.py`` and ``supervisor/xmlrpc.py``:
method names, argument order, return shapes (process info structs, result structs,
``[[added, changed, removed]]``), fault codes and fault texts (``BAD_NAME: foo``). A method
runs in the HTTP server's thread; files (logs, the config) are read there, and everything
that touches processes is one :meth:`Engine.call`, so a slow client never holds the loop.

Docstrings follow supervisord's ``@param type name`` / ``@return type name`` convention,
which ``system.methodSignature`` reads.
"""

from __future__ import annotations

import datetime
import inspect
import os
import time
from collections.abc import Callable
from typing import Any

from ... import __version__
from ...errors import ConfigError
from ..config import ProgramConfig, SupervisorConfig
from ..datatypes import logfile as logfile_choice
from ..datatypes import signal_number
from ..engine import Engine
from ..events import RemoteCommunication
from ..faults import (
    BadArguments,
    BadSignal,
    CannotReread,
    Failed,
    Fault,
    IncorrectParameters,
    NoFile,
    NoSuchName,
    NotRunning,
    Result,
    ShuttingDown,
    SupervisorError,
    error_for,
)
from ..process import Instance
from ..safeopen import open_reader
from ..states import STARTED_STATES, STATE_CODES, State

API_VERSION = "3.0"
#: what getSupervisorVersion says: supervisord's version this interface follows, and ours
SUPERVISOR_VERSION = f"4.3.0+daemonkit.{__version__}"
MAXINT = 2**31 - 1
MININT = -(2**31)
LONG_CALL_S = 3600.0


def capped(value: float) -> int:
    return max(MININT, min(MAXINT, int(value)))


class SupervisorNamespace:
    """The ``supervisor.`` methods."""

    def __init__(self, engine: Engine, main_log: str | None) -> None:
        self._engine = engine
        self._main_log = main_log
        #: run once the answer is on its way (shutdown must answer before it stops)
        self._after_answer: list[Callable[[], None]] = []

    # -- helpers -----------------------------------------------------------------------------

    def _update(self) -> None:
        if self._engine.stopping or self._engine.exit_requested or self._engine.closed:
            raise ShuttingDown()

    def _call(self, function: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        self._update()
        return self._engine.call(function, timeout_s)

    def _process(self, name: str) -> Instance:
        _group, instance = self._engine.lookup(name)
        if instance is None:
            raise NoSuchName(name)
        return instance

    # -- the supervisor itself -----------------------------------------------------------------

    def getAPIVersion(self) -> str:
        """Return the version of the RPC API used by supervisord

        @return string version id
        """
        self._update()
        return API_VERSION

    getVersion = getAPIVersion

    def getSupervisorVersion(self) -> str:
        """Return the version of the supervisor in use

        @return string version id
        """
        self._update()
        return SUPERVISOR_VERSION

    def getIdentification(self) -> str:
        """Return the identifier of this supervisor ([supervisord] identifier)

        @return string identifier identifying string
        """
        config = self._call(lambda: self._engine.config)
        return str(config.identifier if config else "supervisor")

    def getState(self) -> dict[str, Any]:
        """Return the supervisor's state as a struct

        @return struct A struct with keys int statecode, string statename
        """
        self._update()
        return {"statecode": 1, "statename": "RUNNING"}

    def getPID(self) -> int:
        """Return the PID of the supervisor

        @return int PID
        """
        self._update()
        return os.getpid()

    def readLog(self, offset: int, length: int) -> str:
        """Read length bytes from the main log starting at offset

        @param int offset         offset to start reading from.
        @param int length         number of bytes to read from the log.
        @return string result     Bytes of log
        """
        self._update()
        path = self._main_log
        if path is None or not os.path.exists(path):
            raise NoFile(str(path))
        return read_file(path, int(offset), int(length))

    readMainLog = readLog

    def clearLog(self) -> bool:
        """Clear the main log.

        @return boolean result always returns True unless error
        """
        self._update()
        path = self._main_log
        if path is None or not os.path.exists(path):
            raise NoFile()
        try:
            os.truncate(path, 0)  # the supervisor appends: the next line starts it again
        except OSError:
            raise Failed() from None
        return True

    def shutdown(self) -> bool:
        """Shut down the supervisor process

        @return boolean result always returns True unless error
        """
        self._update()
        self._after_answer.append(self._engine.request_exit)
        return True

    def restart(self) -> bool:
        """Restart the supervisor: every process stops, the file is read again, and the
        processes start anew (the supervisor process itself stays)

        @return boolean result  always return True unless error
        """
        self._update()
        try:
            new = self._engine.read_file()
        except ConfigError as exc:
            raise Failed(f"cannot restart with {exc}") from None
        self._call(lambda: self._engine.restart_all(new))
        return True

    def reloadConfig(self) -> list[list[list[str]]]:
        """Read the configuration file again and return what changed (nothing is applied).

        @return array result  [[added, changed, removed]]
        """
        self._update()
        try:
            new = self._engine.read_file()
        except ConfigError as exc:
            raise CannotReread(str(exc)) from None
        added, changed, removed = self._call(lambda: self._engine.group_diff(new))
        return [[added, changed, removed]]

    def addProcessGroup(self, name: str) -> bool:
        """Add a process group of the file as last read (reloadConfig) to the running ones

        @param string name         name of process group to add
        @return boolean result     true if successful
        """
        self._call(lambda: self._engine.add_group(name))
        return True

    def removeProcessGroup(self, name: str) -> bool:
        """Remove a stopped process group from the running ones

        @param string name         name of process group to remove
        @return boolean result     Indicates whether the removal was successful
        """
        self._call(lambda: self._engine.remove_group(name))
        return True

    # -- starting, stopping, signalling ----------------------------------------------------------

    def startProcess(self, name: str, wait: bool = True) -> Any:
        """Start a process

        @param string name Process name (or ``group:name``, or ``group:*``)
        @param boolean wait Wait for process to be fully started
        @return boolean result     Always true unless error
        """
        engine = self._engine

        def start() -> Any:
            group, instance = engine.lookup(name)
            if instance is None:
                return ("group", group)
            return engine.start([instance], supervisord=True, wait=bool(wait))

        answer = self._call(start, LONG_CALL_S)
        if isinstance(answer, tuple):
            return self.startProcessGroup(answer[1], wait)
        return _single(answer, name)

    def startProcessGroup(self, name: str, wait: bool = True) -> list[dict[str, Any]]:
        """Start all processes in the group named 'name'

        @param string name     The group name
        @param boolean wait    Wait for each process to be fully started
        @return array result   An array of process status info structs
        """
        engine = self._engine

        def start() -> Any:
            members = [i for i in engine.group_members(name) if i.state not in STARTED_STATES]
            return engine.start(_by_priority(members), supervisord=True, wait=bool(wait))

        return _structs(self._call(start, LONG_CALL_S))

    def startAllProcesses(self, wait: bool = True) -> list[dict[str, Any]]:
        """Start all processes listed in the configuration file

        @param boolean wait    Wait for each process to be fully started
        @return array result   An array of process status info structs
        """
        engine = self._engine

        def start() -> Any:
            members = [i for i in _all_by_priority(engine) if i.state not in STARTED_STATES]
            return engine.start(members, supervisord=True, wait=bool(wait))

        return _structs(self._call(start, LONG_CALL_S))

    def stopProcess(self, name: str, wait: bool = True) -> Any:
        """Stop a process named by name

        @param string name  The name of the process to stop (or 'group:name')
        @param boolean wait        Wait for the process to be fully stopped
        @return boolean result     Always return True unless error
        """
        engine = self._engine

        def stop() -> Any:
            group, instance = engine.lookup(name)
            if instance is None:
                return ("group", group)
            return engine.stop([instance], supervisord=True, wait=bool(wait))

        answer = self._call(stop, LONG_CALL_S)
        if isinstance(answer, tuple):
            return self.stopProcessGroup(answer[1], wait)
        return _single(answer, name)

    def stopProcessGroup(self, name: str, wait: bool = True) -> list[dict[str, Any]]:
        """Stop all processes in the process group named 'name'

        @param string name     The group name
        @param boolean wait    Wait for each process to be fully stopped
        @return array result   An array of process status info structs
        """
        engine = self._engine

        def stop() -> Any:
            members = [i for i in engine.group_members(name) if i.state in STARTED_STATES]
            return engine.stop(_by_priority(members), supervisord=True, wait=bool(wait))

        return _structs(self._call(stop, LONG_CALL_S))

    def stopAllProcesses(self, wait: bool = True) -> list[dict[str, Any]]:
        """Stop all processes in the process list

        @param  boolean wait   Wait for each process to be fully stopped
        @return array result   An array of process status info structs
        """
        engine = self._engine

        def stop() -> Any:
            members = [i for i in _all_by_priority(engine) if i.state in STARTED_STATES]
            return engine.stop(members, supervisord=True, wait=bool(wait))

        return _structs(self._call(stop, LONG_CALL_S))

    def signalProcess(self, name: str, signal: Any) -> Any:
        """Send an arbitrary UNIX signal to the process named by name

        @param string name    Name of the process to signal (or 'group:name')
        @param string signal  Signal to send, as name ('HUP') or number ('1')
        @return boolean
        """
        engine = self._engine
        text = str(signal)

        def send() -> Any:
            group, instance = engine.lookup(name)
            if instance is None:
                return ("group", group)
            signum = _signal(text)
            return engine.signal([instance], signum, supervisord=True)

        answer = self._call(send)
        if isinstance(answer, tuple):
            return self.signalProcessGroup(answer[1], signal)
        return _single(answer, name)

    def signalProcessGroup(self, name: str, signal: Any) -> list[dict[str, Any]]:
        """Send a signal to all processes in the group named 'name'

        @param string name    The group name
        @param string signal  Signal to send, as name ('HUP') or number ('1')
        @return array
        """
        engine = self._engine
        return _structs(self._call(lambda: _signal_all(
            engine, engine.group_members(name), str(signal))))

    def signalAllProcesses(self, signal: Any) -> list[dict[str, Any]]:
        """Send a signal to all processes in the process list

        @param string signal  Signal to send, as name ('HUP') or number ('1')
        @return array         An array of process status info structs
        """
        engine = self._engine
        return _structs(self._call(lambda: _signal_all(
            engine, _all_by_priority(engine), str(signal))))

    # -- information -----------------------------------------------------------------------------

    def getAllConfigInfo(self) -> list[dict[str, Any]]:
        """Get info about all available process configurations. Each struct
        represents a single process (i.e. groups get flattened).

        @return array result  An array of process config info structs
        """
        engine = self._engine

        def rows() -> list[dict[str, Any]]:
            running = engine.config
            source = engine.available or running
            assert source is not None and running is not None
            return _config_info(source, running)

        return list(self._call(rows))

    def getProcessInfo(self, name: str) -> dict[str, Any]:
        """Get info about a process named name

        @param string name The name of the process (or 'group:name')
        @return struct result     A structure containing data about the process
        """
        engine = self._engine
        return dict(self._call(lambda: _info(engine, self._process(name))))

    def getAllProcessInfo(self) -> list[dict[str, Any]]:
        """Get info about all processes

        @return array result  An array of process status results
        """
        engine = self._engine

        def infos() -> list[dict[str, Any]]:
            instances = sorted(engine.instances.values(),
                               key=lambda i: (i.spec.group, i.spec.process_name))
            return [_info(engine, i) for i in instances]

        return list(self._call(infos))

    # -- logs ----------------------------------------------------------------------------------

    def _log_path(self, name: str, channel: str) -> str | None:
        def path() -> str | None:
            spec = self._process(name).spec
            log = spec.stdout if channel == "stdout" else spec.stderr
            return log.path if log is not None else None

        found: str | None = self._call(path)
        return found

    def _read_process_log(self, name: str, offset: int, length: int, channel: str) -> str:
        path = self._log_path(name, channel)
        if path is None or not os.path.exists(path):
            raise NoFile(str(path))
        return read_file(path, int(offset), int(length))

    def readProcessStdoutLog(self, name: str, offset: int, length: int) -> str:
        """Read length bytes from name's stdout log starting at offset

        @param string name        the name of the process (or 'group:name')
        @param int offset         offset to start reading from.
        @param int length         number of bytes to read from the log.
        @return string result     Bytes of log
        """
        return self._read_process_log(name, offset, length, "stdout")

    readProcessLog = readProcessStdoutLog

    def readProcessStderrLog(self, name: str, offset: int, length: int) -> str:
        """Read length bytes from name's stderr log starting at offset

        @param string name        the name of the process (or 'group:name')
        @param int offset         offset to start reading from.
        @param int length         number of bytes to read from the log.
        @return string result     Bytes of log
        """
        return self._read_process_log(name, offset, length, "stderr")

    def _tail_process_log(self, name: str, offset: int, length: int, channel: str
                          ) -> list[Any]:
        path = self._log_path(name, channel)
        if path is None or not os.path.exists(path):
            return ["", 0, False]
        return tail_file(path, int(offset), int(length))

    def tailProcessStdoutLog(self, name: str, offset: int, length: int) -> list[Any]:
        """Read the end of name's stdout log: up to length bytes from offset; if the log has
        grown past offset + length, overflow is true and offset moves to the end

        @param string name         the name of the process (or 'group:name')
        @param int offset          offset to start reading from
        @param int length          maximum number of bytes to return
        @return array result       [string bytes, int offset, bool overflow]
        """
        return self._tail_process_log(name, offset, length, "stdout")

    tailProcessLog = tailProcessStdoutLog

    def tailProcessStderrLog(self, name: str, offset: int, length: int) -> list[Any]:
        """The same as tailProcessStdoutLog, for stderr

        @param string name         the name of the process (or 'group:name')
        @param int offset          offset to start reading from
        @param int length          maximum number of bytes to return
        @return array result       [string bytes, int offset, bool overflow]
        """
        return self._tail_process_log(name, offset, length, "stderr")

    def clearProcessLogs(self, name: str) -> bool:
        """Clear the stdout and stderr logs for the named process and reopen them.

        @param string name   The name of the process (or 'group:name')
        @return boolean result      Always True unless error
        """
        engine = self._engine
        results: list[Result] = self._call(lambda: engine.clear_logs([self._process(name)]))
        if not results[0].ok:
            raise Failed(name)
        return True

    clearProcessLog = clearProcessLogs

    def clearAllProcessLogs(self) -> list[dict[str, Any]]:
        """Clear all process log files

        @return array result   An array of process status info structs
        """
        engine = self._engine
        return _structs(self._call(lambda: engine.clear_logs(_all_by_priority(engine))))

    def sendProcessStdin(self, name: str, chars: Any) -> bool:
        """Send a string of chars to the stdin of the process name (non-ASCII text is sent
        as UTF-8)

        @param string name        The process name to send to (or 'group:name')
        @param string chars       The character data to send to the process
        @return boolean result    Always return True unless error
        """
        if isinstance(chars, str):
            data = chars.encode("utf-8")
        elif isinstance(chars, bytes):
            data = chars
        elif hasattr(chars, "data") and isinstance(chars.data, bytes):  # xmlrpc Binary
            data = chars.data
        else:
            raise IncorrectParameters(repr(chars))

        def send() -> None:
            instance = self._process(name)
            if instance.pid is None or instance.state is State.STOPPING:
                raise NotRunning(name)
            try:
                instance.write_stdin(data)
            except OSError:
                raise NoFile(name) from None

        self._call(send)
        return True

    def sendRemoteCommEvent(self, type: str, data: str) -> bool:  # the API's own name
        """Send an event that will be received by event listener subprocesses subscribing
        to the RemoteCommunicationEvent.

        @param  string  type  String for the "type" key in the event header
        @param  string  data  Data for the event body
        @return boolean       Always return True unless error
        """
        engine = self._engine
        self._call(lambda: engine.events.publish(RemoteCommunication(str(type), str(data))))
        return True


class SystemNamespace:
    """The ``system.`` methods: introspection and multicall."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def listMethods(self) -> list[str]:
        """Return an array listing the available method names

        @return array result  An array of method names available (strings).
        """
        return sorted(self._dispatcher.methods())

    def methodHelp(self, name: str) -> str:
        """Return a string showing the method's documentation

        @param string name   The name of the method.
        @return string result The documentation for the method name.
        """
        methods = self._dispatcher.methods()
        if name not in methods:
            raise SupervisorError(code=Fault.SIGNATURE_UNSUPPORTED)
        return methods[name]

    def methodSignature(self, name: str) -> list[str]:
        """Return an array describing the method signature in the form [rtype, ptype,
        ptype...] where rtype is the return data type of the method, and ptypes are the
        parameter data types that the method accepts in method argument order.

        @param string name  The name of the method.
        @return array result  The result.
        """
        methods = self._dispatcher.methods()
        if name not in methods:
            raise SupervisorError(code=Fault.SIGNATURE_UNSUPPORTED)
        rtype = None
        ptypes = []
        for line in methods[name].splitlines():
            parts = line.strip().split()
            if len(parts) >= 2 and parts[0] == "@return":
                rtype = parts[1]
            elif len(parts) >= 2 and parts[0] == "@param":
                ptypes.append(parts[1])
        if rtype is None:
            raise SupervisorError(code=Fault.SIGNATURE_UNSUPPORTED)
        return [rtype, *ptypes]

    def multicall(self, calls: list[Any]) -> list[Any]:
        """Process an array of calls, and return an array of results. Calls should be
        structs of the form {'methodName': string, 'params': array}. Each result is the
        value, or a struct of the form {'faultCode': int, 'faultString': string}.

        @param array calls  An array of call requests
        @return array result  An array of results
        """
        results: list[Any] = []
        for call in calls:
            try:
                if not isinstance(call, dict) or call.get("methodName") is None:
                    raise IncorrectParameters("No methodName")
                name = call["methodName"]
                if name == "system.multicall":
                    raise IncorrectParameters("Recursive system.multicall forbidden")
                params = call.get("params", [])
                results.append(self._dispatcher.call(str(name), tuple(params)))
            except SupervisorError as exc:
                results.append({"faultCode": int(exc.code), "faultString": exc.text})
            except Exception as exc:  # noqa: BLE001 - supervisord: any error is a FAILED result
                results.append({"faultCode": int(Fault.FAILED),
                                "faultString": f"FAILED: {type(exc)}:{exc}"})
        return results


class Dispatcher:
    """Finds ``namespace.method`` and calls it, as supervisord's ``traverse``: exactly two
    dotted parts, no leading underscore (CVE-2017-11610), arguments that fit the method."""

    def __init__(self, engine: Engine, main_log: str | None) -> None:
        self.supervisor = SupervisorNamespace(engine, main_log)
        self.namespaces: dict[str, object] = {"supervisor": self.supervisor,
                                              "system": SystemNamespace(self)}

    def methods(self) -> dict[str, str]:
        found = {}
        for ns_name, namespace in self.namespaces.items():
            for method_name in dir(type(namespace)):
                if method_name.startswith("_"):
                    continue
                function = getattr(namespace, method_name)
                if callable(function):
                    found[f"{ns_name}.{method_name}"] = str(function.__doc__)
        return found

    def call(self, method: str, params: tuple[Any, ...]) -> Any:
        parts = method.split(".")
        if len(parts) != 2 or parts[1].startswith("_"):
            raise SupervisorError(code=Fault.UNKNOWN_METHOD)
        namespace = self.namespaces.get(parts[0])
        function = getattr(namespace, parts[1], None) if namespace is not None else None
        if function is None or not inspect.ismethod(function):
            raise SupervisorError(code=Fault.UNKNOWN_METHOD)
        try:
            inspect.signature(function).bind(*params)
        except TypeError:
            raise IncorrectParameters() from None
        return function(*params)

    def after_answer(self) -> list[Callable[[], None]]:
        pending, self.supervisor._after_answer = self.supervisor._after_answer, []
        return pending


# -- shapes ----------------------------------------------------------------------------------------


def _single(results: list[Result], name: str) -> bool:
    """One process's result as supervisord's startProcess/stopProcess answers it."""
    result = results[0]
    if result.ok:
        return True
    detail = result.description.split(": ", 1)[1] if ": " in result.description else name
    if result.code in (Fault.NO_FILE, Fault.NOT_EXECUTABLE, Fault.FAILED):
        raise error_for(result.code, detail)
    raise error_for(result.code, name)


def _structs(results: list[Result]) -> list[dict[str, Any]]:
    structs = []
    for result in results:
        namespec = result.group if result.group == result.name else (
            f"{result.group}:{result.name}")
        description = result.description
        if not result.ok and ": " not in description:
            description = f"{description}: {namespec}"
        structs.append({"name": result.name, "group": result.group,
                        "status": int(result.code), "description": description})
    return structs


def _signal(text: str) -> int:
    try:
        return signal_number(text)
    except ValueError:
        raise BadSignal(text) from None


def _signal_all(engine: Engine, instances: list[Instance], text: str) -> list[Result]:
    signallable = [i for i in _by_priority(instances)
                   if i.state in (State.RUNNING, State.STARTING, State.STOPPING)]
    try:
        signum = signal_number(text)
    except ValueError:
        return [Result(i.spec.process_name, i.spec.group, Fault.BAD_SIGNAL,
                       f"BAD_SIGNAL: {text}") for i in signallable]
    return engine.signal(signallable, signum, supervisord=True)


def _by_priority(instances: list[Instance]) -> list[Instance]:
    return sorted(instances, key=lambda i: i.program.priority)


def _all_by_priority(engine: Engine) -> list[Instance]:
    """supervisord's _getAllProcesses: groups by priority, processes by priority."""
    return sorted(engine.instances.values(),
                  key=lambda i: (i.program.group_priority, i.spec.group, i.program.priority))


def _info(engine: Engine, instance: Instance) -> dict[str, Any]:
    return process_info(engine.shown(instance), engine.waiting_for(instance))


def process_info(instance: Instance, waiting: str | None = None) -> dict[str, Any]:
    """supervisord's getProcessInfo struct; ``waiting`` (held back by depends_on) is the
    description supervisorctl shows, e.g. ``waiting for db (FATAL)``."""
    start, stop, now = capped(instance.laststart), capped(instance.laststop), capped(time.time())
    code = instance.exit_status
    info = {
        "name": instance.spec.process_name,
        "group": instance.spec.group,
        "start": start,
        "stop": stop,
        "now": now,
        "state": STATE_CODES[instance.state],
        "statename": instance.state.value,
        "spawnerr": instance.spawnerr,
        "exitstatus": 0 if code is None else (code if code >= 0 else -1),
        "logfile": instance.spec.stdout.path or "",
        "stdout_logfile": instance.spec.stdout.path or "",
        "stderr_logfile": (instance.spec.stderr.path or "") if instance.spec.stderr else "",
        "pid": instance.pid or 0,
    }
    info["description"] = waiting or _description(info)
    return info


def _description(info: dict[str, Any]) -> str:
    """supervisord's ``_interpretProcessInfo``: what supervisorctl status shows."""
    state = info["statename"]
    if state == "RUNNING":
        started = datetime.datetime(*time.gmtime(info["start"])[:6])
        now = datetime.datetime(*time.gmtime(info["now"])[:6])
        uptime = max(now - started, datetime.timedelta(0))
        return f"pid {info['pid']}, uptime {uptime}"
    if state in ("FATAL", "BACKOFF"):
        return str(info["spawnerr"] or f'unknown error (try "tail {info["name"]}")')
    if state in ("STOPPED", "EXITED"):
        if info["start"]:
            stopped = datetime.datetime(*time.localtime(info["stop"])[:7])
            return stopped.strftime("%b %d %I:%M %p")
        return "Not started"
    return ""


def _config_info(source: SupervisorConfig, running: SupervisorConfig) -> list[dict[str, Any]]:
    rows = []
    for group in source.all_groups.values():
        for name in group.programs:
            program = source.programs[name]
            for num in program.process_nums():
                rows.append(_config_row(program, num, group.priority,
                                        group.name in running.all_groups))
    rows.sort(key=lambda row: row["name"])
    return rows


def _config_row(program: ProgramConfig, num: int, group_priority: int, in_use: bool
                ) -> dict[str, Any]:
    spec = program.instance(num)

    def log_value(raw: str, path: str | None) -> str:
        choice = logfile_choice(raw)
        return "auto" if choice == "AUTO" else ("none" if path is None else path)

    def number(value: float) -> float | int:
        return int(value) if float(value).is_integer() else value

    stderr_path = spec.stderr.path if spec.stderr else None
    row: dict[str, Any] = {
        "autostart": program.autostart, "directory": spec.directory or "none",
        "uid": _uid(program.user), "command": spec.command,
        "exitcodes": sorted(program.exitcodes), "group": spec.group,
        "group_prio": group_priority, "inuse": in_use, "killasgroup": program.killasgroup,
        "name": spec.process_name, "process_prio": program.priority,
        "redirect_stderr": program.redirect_stderr, "startretries": program.startretries,
        "startsecs": number(program.startsecs), "stdout_capture_maxbytes": 0,
        "stdout_events_enabled": program.stdout_events_enabled,
        "stdout_logfile": log_value(program.stdout_logfile, spec.stdout.path),
        "stdout_logfile_backups": program.stdout_logfile_backups,
        "stdout_logfile_maxbytes": capped(program.stdout_logfile_maxbytes),
        "stdout_syslog": spec.stdout.syslog, "stopsignal": program.stopsignal,
        "stopwaitsecs": number(program.stopwaitsecs), "stderr_capture_maxbytes": 0,
        "stderr_events_enabled": program.stderr_events_enabled,
        "stderr_logfile": "none" if program.redirect_stderr else log_value(
            program.stderr_logfile, stderr_path),
        "stderr_logfile_backups": program.stderr_logfile_backups,
        "stderr_logfile_maxbytes": capped(program.stderr_logfile_maxbytes),
        "stderr_syslog": bool(spec.stderr and spec.stderr.syslog),
        "serverurl": program.serverurl or "none",
    }
    return row


def _uid(user: str | None) -> int | str:
    if user is None:
        return "none"
    import pwd

    return int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid


# -- supervisord's readFile and tailFile -------------------------------------------------------


def read_file(path: str, offset: int, length: int) -> str:
    """``length`` bytes from ``offset``; a negative offset (with length 0) reads that many
    bytes from the end; 0 length reads to the end. BAD_ARGUMENTS / FAILED as supervisord."""
    try:
        with open_reader(path) as handle:
            if offset < 0:
                if length:
                    raise BadArguments()
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size + offset))
                data = handle.read(-offset)
            else:
                if length < 0:
                    raise BadArguments()
                handle.seek(offset)
                data = handle.read() if length == 0 else handle.read(length)
    except OSError:
        raise Failed() from None
    return xml_safe(data.decode("utf-8", "replace"))


def tail_file(path: str, offset: int, length: int) -> list[Any]:
    """supervisord's tailFile: [text, new offset, overflow]."""
    try:
        with open_reader(path) as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            overflow = False
            if size > offset + length:
                overflow = True
                offset = size - 1
            if offset + length > size:
                if offset > size - 1:
                    length = 0
                offset = size - length
            offset = max(offset, 0)
            length = max(length, 0)
            data = b""
            if length:
                handle.seek(offset)
                data = handle.read(length)
            return [xml_safe(data.decode("utf-8", "replace")), capped(size), overflow]
    except OSError:
        return ["", offset, False]


_XML_INVALID = {code: "\ufffd" for code in (*range(0, 9), 11, 12, *range(14, 32))}


def xml_safe(text: str) -> str:
    """XML 1.0 cannot carry most control characters (an ANSI escape breaks the client's
    parser, as it does with supervisord): they become U+FFFD."""
    return text.translate(_XML_INVALID)
